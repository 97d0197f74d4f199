"""The submission engine: starts the runs of planned rows, each exactly once.

:class:`Sender` sends the rows it is given with up to ``workers`` starts at once, each through
the batch's shared :class:`~plextera_data.pacing.Pacer`, and tells the
:class:`~plextera_data.ledger.Ledger` what happened to each:

* before a POST leaves, the row is marked ``SUBMITTING`` (with its ``X-Request-Id``) and, with a
  journal, that mark is committed (at once: no loop turn is waited before the POST, see
  :meth:`Journal.flush <plextera_data.journal.Journal.flush>`);
* an answer with a run id is accepted (committed with the next commit, at the latest at the
  loop's next turn), read no further than its id, status and ``createdAt``;
* a start that cannot have created a run (a 429, a connection that was never opened) is sent
  again, as the client's :class:`~plextera_data.retry.RetryPolicy` allows: the same count
  (``max_retries``) and waits (``Retry-After``, else backoff). A 429 pauses every request of
  the batch (the pacer), and counts against the row's retries only until another start was
  accepted after the row's first attempt (a batch paced by a rate limit gets every row
  through; an API refusing everything fails them); the row is ``SUBMISSION_FAILED`` once the
  retries are spent;
* any other failure whose run may exist (5xx, a timeout or a dropped connection after the
  request was sent) marks the row ``SUBMISSION_UNCERTAIN``, never re-sent by itself; a refusal
  (4xx) marks it ``SUBMISSION_FAILED``;
* a row's files (``upload=``) are uploaded first, once per content (:mod:`plextera_data.uploads`);
* a refusal that says no row can succeed (401, 403, or 404 on the workflow's start path) stops
  the submission after that answer: the rows not sent stay ``NOT_SUBMITTED`` and
  :attr:`Sender.refused` holds the answer.

The first start of a call is sent alone, the others once it is answered (a refusal of the whole
batch then costs one request, not one per worker). On cancellation no new start is sent, starts
in flight get :data:`INTERRUPT_GRACE` seconds to finish (then they are marked uncertain), the
journal is committed and ``CancelledError`` propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

from plextera_data.bodies import RequestBody
from plextera_data.client import AsyncClient, new_request_id
from plextera_data.clock import ApiClock
from plextera_data.errors import (
    APIError,
    APIStatusError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from plextera_data.ledger import SUBMITTING, Ledger, RowState
from plextera_data.pacing import Pacer
from plextera_data.retry import is_retryable_for_post
from plextera_data.rows import RowRequest
from plextera_data.uploads import Uploader, UploadFailedError

__all__ = ["INTERRUPT_GRACE", "Sender", "Targets", "batch_wide"]

#: Seconds that starts already in flight get to finish after an interrupt.
INTERRUPT_GRACE = 10.0
#: The most 429s a row's start may meet without counting against its retries, while the
#: batch's other starts get through (the pacer slows the batch meanwhile).
MAX_RATE_LIMITED = 100

_UNCERTAIN_INTERRUPTED = (
    "Interrupted while this row's start was in flight; the run may or may not exist. Check in "
    "Plextera (request id {rid}), then batch.resubmit([key]) if it does not."
)


class Targets(Protocol):
    """Rows to send with their planned requests: a list of pairs, or anything sized that
    yields them (read once, in order)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[RowState, RowRequest]]: ...


class Sender:
    """Starts runs of one workflow for the rows given to :meth:`send` (see the module)."""

    def __init__(
        self,
        ledger: Ledger,
        aclient: AsyncClient,
        pacer: Pacer,
        clock: ApiClock,
        *,
        workflow_id: str,
    ) -> None:
        self.ledger = ledger
        self.aclient = aclient
        self.pacer = pacer
        self.clock = clock
        self.workflow_id = workflow_id
        self._uploader: Uploader | None = None
        #: True while :meth:`send` runs (the display says "submitting" then).
        self.active = False
        #: The answer that stopped the last :meth:`send` because no row could succeed.
        self.refused: APIStatusError | None = None
        #: Starts accepted so far (tells a 429 in a batch that gets through from a refusal).
        self.accepted = 0

    @property
    def uploader(self) -> Uploader:
        """Uploads the rows' files (``px.submit(..., upload=[...])``), once per content."""
        if self._uploader is None:
            self._uploader = Uploader(self.aclient, self.pacer, self.ledger.journal)
        return self._uploader

    async def send(self, targets: Targets, *, workers: int | None = None) -> None:
        """Start the runs of ``targets`` with up to ``workers`` (default: the pacer's cap) at
        once; returns when every row is accepted or flagged."""
        pending: Iterator[tuple[RowState, RowRequest]] = iter(targets)
        stopping = False
        count = max(1, min(workers or self.pacer.max_in_flight, len(targets)))

        async def worker() -> None:
            for row, request in pending:
                if stopping or self.refused is not None:
                    return
                await self._send_one(row, request)

        self.active = True
        self.refused = None
        tasks: list[asyncio.Task[None]] = []
        try:
            # The first start goes alone: if its answer says no start can succeed (a bad key,
            # an unknown workflow), that one request is all the batch sends.
            for row, request in pending:
                await self._send_one(row, request)
                break
            tasks = [asyncio.create_task(worker()) for _ in range(count)]
            if tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                failed = [t for t in done if not t.cancelled() and t.exception() is not None]
                if failed:
                    stopping = True
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise failed[0].exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            stopping = True
            _, still = await asyncio.wait(tasks, timeout=INTERRUPT_GRACE)
            for task in still:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self.active = False
            self.ledger.commit_quietly()

    async def _send_one(self, row: RowState, request: RowRequest) -> None:
        """Start one row's run, sending again while the policy allows and no run can exist.

        A 429 says the batch is too fast, not that the row is at fault: once other starts of
        the batch were accepted since this row's first attempt, it does not count against the
        row's ``max_retries`` (at most :data:`MAX_RATE_LIMITED` times in all; none with
        ``max_retries=0``). Until then it counts, so an API refusing everything still fails
        the rows."""
        request_id = new_request_id()
        file_ids = None
        if request.uploads:
            try:
                file_ids = await self.uploader.file_ids(request)
            except UploadFailedError as exc:
                self.ledger.refuse(row, exc.cause, message=str(exc))
                return
        body: RequestBody = request.start_kwargs(file_ids)["body"]
        retries = free = 0
        accepted_before = self.accepted
        while True:
            error = await self._attempt(row, request, request_id, body)
            if error is None:
                return
            if (
                isinstance(error, RateLimitError)
                and self.aclient.retry.max_retries
                and self.accepted > accepted_before
                and free < MAX_RATE_LIMITED
            ):
                free += 1
            else:
                retries += 1
            wait = self._failed(row, error, retries)
            if wait is None:
                return
            await asyncio.sleep(wait)  # even 0: the other starts in line go first

    async def _attempt(
        self, row: RowState, request: RowRequest, request_id: str, body: RequestBody
    ) -> APIError | InvalidInputError | None:
        """One POST. Returns ``None`` when the row is accepted, else the error it met."""
        await self.pacer.acquire()
        accepted = False
        try:
            self.ledger.mark_sending(row, request_id, request.fingerprint)
            await self.ledger.flush()  # the SUBMITTING mark is on disk before the POST leaves
            try:
                run = await self.aclient.start_run_head(
                    self.workflow_id, body=body, request_id=request_id, retry=False
                )
            except (APIError, InvalidInputError) as exc:
                return exc
            self.pacer.on_success()
            self.accepted += 1
            received_at = datetime.now(UTC)
            self.clock.note(run.created_at, received_at)
            self.ledger.accept(row, run, received_at)
            accepted = True
            return None
        except asyncio.CancelledError:
            if accepted:
                self.ledger.commit()
            elif row.status == SUBMITTING:
                self.ledger.mark_uncertain(
                    row, None, message=_UNCERTAIN_INTERRUPTED.format(rid=request_id)
                )
                self.ledger.commit()
            raise
        finally:
            self.pacer.release()

    def _failed(
        self, row: RowState, exc: APIError | InvalidInputError, retries: int
    ) -> float | None:
        """Settle ``row`` after ``exc`` (``retries``: the retries it would now have had), or
        return the seconds it waits before it is sent again (a 429's pause is the pacer's)."""
        policy = self.aclient.retry
        if is_retryable_for_post(exc):
            if retries > policy.max_retries:
                self.ledger.refuse(
                    row,
                    exc,
                    message=f"Still refused after {row.attempts} attempts "
                    f"(the client's RetryPolicy allows {policy.max_retries} retries): {exc}",
                )
                if isinstance(exc, RateLimitError):
                    self.pacer.on_rate_limited(policy.delay(exc, retries - 1))
                return None
            wait = policy.delay(exc, retries - 1)
            self.ledger.requeue(row, exc)
            if isinstance(exc, RateLimitError):
                self.pacer.on_rate_limited(wait)  # pauses every request of the batch
                return 0.0
            return wait
        if isinstance(exc, APIError) and exc.may_have_created:
            self.ledger.mark_uncertain(row, exc)
        else:
            self.ledger.refuse(row, exc)
            if batch_wide(exc) and self.refused is None:
                self.refused = exc  # type: ignore[assignment]
        return None


def batch_wide(exc: BaseException) -> bool:
    """True when a refused start says that no start of the batch can succeed: the key is bad
    (401) or may not start this workflow (403), or the workflow does not exist (404
    ``NOT_FOUND`` on its start path)."""
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return True
    return isinstance(exc, NotFoundError) and exc.code in (None, "NOT_FOUND")
