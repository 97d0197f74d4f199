"""A submitted DataFrame: :class:`Batch`, the public face over a ledger and its engines.

``Batch`` composes what the layers below it do: the :class:`~plextera_data.ledger.Ledger` (the
rows' state and journal), the :class:`~plextera_data.sending.Sender` (starts), the
:class:`~plextera_data.poll.Scheduler` (polls), the batch's shared
:class:`~plextera_data.pacing.Pacer` and a progress display per call. Nothing below imports it.

Made by :func:`plextera_data.submit` or :func:`plextera_data.resume`, not directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import pandas as pd

from plextera_data import errors
from plextera_data._loop import run_sync
from plextera_data.client import AsyncClient, Client
from plextera_data.clock import ApiClock
from plextera_data.events import EventStore
from plextera_data.events_feed import EventFeed, EventSource
from plextera_data.flatten import TableWriter, flatten, results, row_key_type_of
from plextera_data.journal import Journal
from plextera_data.ledger import (
    LOCAL_STATUSES,
    NOT_SUBMITTED,
    SUBMISSION_FAILED,
    SUBMISSION_UNCERTAIN,
    SUBMITTING,
    Ledger,
    RowState,
)
from plextera_data.models import FAILURE_STATUSES, Run
from plextera_data.pacing import Pacer
from plextera_data.poll import PollSettings, Scheduler
from plextera_data.progress import PacingState, Snapshot, follow, open_progress
from plextera_data.reconcile import Reconciliation, find
from plextera_data.rows import PlannedRequests, RowRequest, plan_requests
from plextera_data.sending import Sender, Targets
from plextera_data.tables import Tables

__all__ = [
    "LOCAL_STATUSES",
    "NOT_SUBMITTED",
    "SUBMISSION_FAILED",
    "SUBMISSION_UNCERTAIN",
    "SUBMITTING",
    "Batch",
    "PlanOptions",
    "RowState",
]

T = TypeVar("T")

#: ``px.submit(..., reconcile=True)``: listings at most, while rows sent again come back uncertain.
RECONCILE_ROUNDS = 3

logger = logging.getLogger("plextera_data")

BodyFunction = Callable[[pd.Series], Mapping[str, Any]]


@dataclass(frozen=True)
class PlanOptions:
    """How the batch's rows map to requests (kept for :meth:`Batch.resubmit`); ``body_name``
    names a ``body=`` function that a resumed batch no longer has."""

    body: BodyFunction | None = None
    columns: Sequence[Any] | None = None
    files: Sequence[Any] | None = None
    upload: Sequence[Any] | None = None
    sep: str = "."
    body_name: str | None = None

    def requests(self, frame: pd.DataFrame, workflow_id: str) -> PlannedRequests:
        """The planned request of every row of ``frame``, in its order (checked first)."""
        return plan_requests(
            frame,
            workflow_id,
            body=self.body,
            columns=self.columns,
            files=self.files,
            upload=self.upload,
            sep=self.sep,
        )


class Batch:
    """The rows of one DataFrame submitted as runs of one workflow.

    batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
    batch.wait()
    batch.status.query("status == 'FAILED'")
    """

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        *,
        pacer: Pacer | None = None,
        frame: pd.DataFrame | None = None,
        plan: PlanOptions | None = None,
        adopted: Mapping[Any, Any] | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.pacer = pacer if pacer is not None else Pacer()
        #: The input frame (``None`` for a resumed batch); requests are planned again from it
        #: when needed (resubmit, reconcile), so the batch keeps no request bodies.
        self.frame = frame
        #: New key -> old key of rows whose start the journal recorded under another key.
        self.adopted: dict[Any, Any] = dict(adopted or {})
        self.clock = ApiClock(rate=self.aclient.clock_rate)
        self._plan = plan if plan is not None else PlanOptions()
        self._sender = Sender(
            ledger, self.aclient, self.pacer, self.clock, workflow_id=ledger.workflow_id
        )
        self._scheduler: Scheduler | None = None
        self._watch_task: asyncio.Task[Any] | None = None
        self._live: Any = None  # the progress display of the call running now
        #: What the last :meth:`reconcile` found and did (``None``: never reconciled).
        self.reconciliation: Reconciliation | None = None
        #: The events feed of the last wait with ``events=`` (its ``finished``/``fetched``).
        self.events_feed: EventFeed | None = None
        self._call_started = time.monotonic()

    # ------------------------------------------------------------------ what it holds

    @property
    def workflow_id(self) -> str:
        """The workflow every row runs."""
        return self.ledger.workflow_id

    @property
    def journal(self) -> Journal | None:
        """The batch's journal, if it has one."""
        return self.ledger.journal

    @property
    def aclient(self) -> AsyncClient:
        """The :class:`~plextera_data.AsyncClient` behind :attr:`client`."""
        return self.client.aclient

    @property
    def rows(self) -> list[RowState]:
        """One :class:`~plextera_data.ledger.RowState` per input row, in input order."""
        return self.ledger.rows

    @property
    def index(self) -> pd.Index:
        """The input frame's index."""
        return self.ledger.index

    @property
    def changed_rows(self) -> list[Any]:
        """Keys of rows that differ from what the journal says was sent for them (not re-sent)."""
        return self.ledger.changed_rows

    def row(self, key: Any) -> RowState:
        """The :class:`~plextera_data.ledger.RowState` of the row with index value ``key``."""
        return self.ledger.row(key)

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, most common first."""
        return self.ledger.counts

    @property
    def status(self) -> pd.DataFrame:
        """One row per input row (same index, same order): ``run_id``, ``status``, ``error``,
        ``request_id``, ``attempts``, ``submitted_at``, ``finished_at`` (UTC) and ``polls``."""
        return self.ledger.status_frame()

    @property
    def runs(self) -> list[Run]:
        """The latest model of each row's run, in input order (rows without a run left out)."""
        return self.ledger.runs

    @property
    def row_keys(self) -> dict[str, Any]:
        """``run_id -> row key`` for every row with a run."""
        return self.ledger.row_keys

    def snapshot(self, phase: str | None = None) -> Snapshot:
        """Where the batch stands (what the progress display shows). ``phase`` defaults to
        ``"submitting"`` while rows are being sent, else ``"polling"``."""
        if phase is None:
            phase = "submitting" if self._sender.active and self.ledger.unsent else "polling"
        pacer = self.pacer
        scheduler = self._scheduler
        pacing = PacingState(
            in_flight=pacer.in_flight,
            limit=pacer.limit,
            max_in_flight=pacer.max_in_flight,
            paused_for=pacer.paused_for(),
            rate_limited=pacer.rate_limited,
            requests_per_second=pacer.answers_per_second(),
            backing_off=scheduler.backing_off if scheduler is not None else 0,
        )
        return self.ledger.snapshot(
            phase=phase, elapsed=time.monotonic() - self._call_started, pacing=pacing
        )

    # ------------------------------------------------------------------ one call, displayed

    async def _displayed(
        self, progress: Any, work: Awaitable[T], *, ended: Callable[[T], str]
    ) -> T:
        """Await ``work`` with one progress display fed by a heartbeat; the display closes on
        the phase ``ended(result)`` names (``"stopped"`` if ``work`` raised)."""
        reporter = open_progress(progress, total=len(self.rows))
        self._call_started = time.monotonic()
        self._live = reporter
        phase = "stopped"
        try:
            async with follow(reporter, self.snapshot):
                result = await work
            phase = ended(result)
            return result
        finally:
            reporter.close(self.snapshot(phase))
            if self._live is reporter:
                self._live = None

    async def _poll(
        self,
        settings: PollSettings,
        timeout: float | None,  # noqa: ASYNC109 - enforced as the scheduler's deadline
        submission: asyncio.Future[Any] | None = None,
        events: Any = None,
    ) -> bool:
        """Poll until every run is terminal (and ``submission`` is done); False on timeout.
        ``events``: an event store whose terminal events finish runs without a GET."""
        scheduler = Scheduler(self.ledger, self.aclient, self.pacer, self.clock, settings)
        self._scheduler = scheduler
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        feed_task: asyncio.Task[None] | None = None
        if events is not None:
            feed = EventFeed(_event_source(events), self.ledger, scheduler)
            self.events_feed = feed
            feed.read()  # what already arrived: those runs need no poll at all
            scheduler.slack = settings.event_grace
            feed_task = loop.create_task(feed.run())
        try:
            return await scheduler.run(deadline=deadline, submission=submission)
        finally:
            if feed_task is not None:
                feed_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed_task
            self.ledger.commit_quietly()
            if self._scheduler is scheduler:
                self._scheduler = None

    async def _send_and_poll(
        self,
        targets: Targets,
        settings: PollSettings,
        events: Any = None,
    ) -> bool:
        """Submit ``targets`` while polling the runs already accepted."""
        task = asyncio.ensure_future(self._sender.send(targets))
        try:
            finished = await self._poll(settings, None, submission=task, events=events)
        except BaseException:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        await task  # the poller returns once submission is over; be sure of it
        return finished

    async def submit_rows_async(
        self,
        targets: Targets,
        *,
        progress: Any = True,
        wait: bool = False,
        reconcile: bool = False,
        events: Any = None,
    ) -> Batch:
        """Send ``targets`` (rows of this batch and their planned requests) under one display;
        with ``wait=True`` also poll until every run is terminal (``events``: see
        :meth:`wait`); with ``reconcile=True``, reconcile the uncertain starts at the end of
        submission (and, with ``wait=True``, poll the rows it sent again). Used by
        ``px.submit``."""

        async def work() -> None:
            if wait:
                await self._send_and_poll(targets, PollSettings(), events)
            else:
                await self._sender.send(targets)
            resent = reconcile and not self._sender.refused and await self._reconcile_rounds()
            if wait and resent:
                await self._poll(PollSettings(), None, events=events)

        await self._displayed(
            progress,
            work(),
            ended=lambda _: "stopped" if self._sender.refused else "done" if wait else "submitted",
        )
        self._raise_if_refused()
        return self

    async def _reconcile_rounds(self) -> int:
        """Reconcile until no uncertain row is left that another listing could settle: a row
        sent again may come back uncertain (its start failed again). At most
        :data:`RECONCILE_ROUNDS` rounds; ``self.reconciliation`` sums them up. Returns how many
        rows were sent again."""
        resent: list[Any] = []
        pages = 0
        last = Reconciliation()
        for _ in range(RECONCILE_ROUNDS):
            if not self.ledger.count(SUBMISSION_UNCERTAIN):
                break
            last = await self.reconcile_async()
            resent += last.resent
            pages += last.pages
            if not last.resent:
                break
        self.reconciliation = Reconciliation(
            resent=resent, candidates=last.candidates, inconclusive=last.inconclusive, pages=pages
        )
        return len(resent)

    def _raise_if_refused(self) -> None:
        """Say why submission stopped when the API refused the whole batch."""
        exc = self._sender.refused
        if exc is None:
            return
        refused = self.ledger.count(SUBMISSION_FAILED)
        unsent = self.ledger.count(NOT_SUBMITTED)
        if isinstance(exc, errors.AuthenticationError):
            what = f"The API at {self.client.base_url} refused the API key"
            fix = "Check PLEXTERA_API_KEY (or Client(api_key=...))"
        elif isinstance(exc, errors.PermissionDeniedError):
            what = f"The API key may not start runs of workflow {self.workflow_id!r}"
            fix = "Ask a workspace admin for access, or use a key that has it"
        else:
            what = f"Workflow {self.workflow_id!r} was not found at {self.client.base_url}"
            fix = "Check the workflow id and PLEXTERA_BASE_URL"
        again = (
            f"run px.submit(...) again with journal={str(self.journal.path)!r}"
            if self.journal is not None
            else "run px.submit(...) again"
        )
        raise errors.SubmissionRefusedError(
            f"{what} ({exc.status_code} {exc.code or ''}: {exc.vendor_message or exc}). "
            f"Submission stopped: {refused} rows refused, {unsent} not sent. {fix}, then "
            f"{again} to send them (batch: this error's .batch).",
            cause=exc,
            batch=self,
        ) from None

    # ------------------------------------------------------------------ polling

    async def wait_async(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the public contract, enforced in _poll
        progress: Any = True,
        raise_on_failure: bool = False,
        events: Any = None,
        **limits: Any,
    ) -> Batch:
        """Async twin of :meth:`wait`."""
        settings = PollSettings.from_limits(dict(limits))
        finished = await self._displayed(
            progress,
            self._poll(settings, timeout, events=events),
            ended=lambda done: "done" if done else "stopped",
        )
        if not finished:
            running = len(self.ledger.pending_poll())
            raise errors.BatchTimeoutError(
                f"{running} of {len(self.rows)} runs still running after {timeout:g} s; "
                f"{self._resume_hint()}",
                still_running=running,
            )
        if raise_on_failure:
            failure = self._failure_error()
            if failure is not None:
                raise failure
        return self

    def wait(
        self,
        timeout: float | None = None,
        progress: Any = True,
        raise_on_failure: bool = False,
        events: Any = None,
        **limits: Any,
    ) -> Batch:
        """Block until every run is terminal (or ``timeout`` seconds pass).

        Raises :class:`~plextera_data.errors.BatchTimeoutError` on timeout (call ``wait`` again
        to go on), :class:`~plextera_data.errors.RunFailedError` with ``raise_on_failure=True``
        if runs ended FAILED or CLOSED. ``events``: an
        :class:`~plextera_data.events.EventStore` (or its path) that a receiver fills: a run
        whose terminal event is stored finishes without another GET, the others are still
        polled, later (see :mod:`plextera_data.events_feed`). ``limits``:
        :class:`~plextera_data.poll.PollSettings` fields for this call only
        (``max_in_flight=8``, ``max_interval=10``, ...). Works in a Jupyter cell. Ctrl-C stops
        cleanly: everything recorded so far stays, and the message says how to resume.

            batch.wait(timeout=600, max_in_flight=8)
            batch.wait(events=px.events.EventStore("events.db"))
        """
        coro = self.wait_async(
            timeout=timeout,
            progress=progress,
            raise_on_failure=raise_on_failure,
            events=events,
            **limits,
        )
        try:
            return run_sync(coro)
        except KeyboardInterrupt:
            self._settle_interrupted()
            message = (
                f"Polling interrupted: {len(self.ledger.pending_poll())} of {len(self.rows)} "
                f"runs still running; nothing recorded was lost. To go on, "
                f"{self._resume_hint()}."
            )
            # Said by the exception only: a caller with its own advice (the CLI) gives that.
            raise KeyboardInterrupt(message) from None

    def _settle_interrupted(self) -> None:
        """After Ctrl-C in :meth:`wait`: cancel what polls, let it finish, commit."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.cancel()
            with contextlib.suppress(BaseException):
                run_sync(scheduler.settle())
            self._scheduler = None
        self.ledger.commit_quietly()

    def watch(self, progress: Any = True, events: Any = None, **limits: Any) -> Batch:
        """Poll in the background and return at once (in a notebook, on the kernel's loop).

        ``batch.status`` and ``batch.tables()`` show partial results meanwhile;
        :meth:`stop` cancels. ``events`` as in :meth:`wait`. Outside a running event loop this
        is :meth:`wait`.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.wait(progress=progress, events=events, **limits)
        if self._watch_task is not None and not self._watch_task.done():
            return self  # already watching
        # Opened now, so that the batch this call returns shows as that display in this cell.
        reporter = open_progress(progress, total=len(self.rows))
        self._live = reporter
        self._watch_task = loop.create_task(
            self.wait_async(progress=reporter, events=events, **limits)
        )
        self._watch_task.add_done_callback(_watch_ended)
        return self

    def stop(self) -> None:
        """Stop background polling started by :meth:`watch` (runs go on on the server)."""
        if self._watch_task is not None and not self._watch_task.done():
            self._watch_task.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel()

    def _resume_hint(self) -> str:
        hint = "call batch.wait() (or batch.watch()) again to go on polling"
        if self.journal is not None:
            hint += f", or px.resume({str(self.journal.path)!r}) after a restart"
        return hint

    def _failure_error(self) -> errors.RunFailedError | None:
        failed = [r for r in self.rows if r.status in FAILURE_STATUSES]
        if not failed:
            return None
        lines = [f"{len(failed)} of {len(self.rows)} runs did not complete:"]
        for row in failed[:10]:
            lines.append(f"  - row {row.key!r}, run {row.run_id}: {row.status}: {row.error or '-'}")
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more (see batch.status)")
        runs = [run for run in map(self.ledger.run_of, failed) if run is not None]
        return errors.RunFailedError("\n".join(lines), runs=runs)

    # ------------------------------------------------------------------ results

    @overload
    def tables(self, *, expand_nested: bool = ..., to: None = ...) -> Tables: ...
    @overload
    def tables(self, *, expand_nested: bool = ..., to: str | Path) -> dict[str, Path]: ...
    def tables(
        self, *, expand_nested: bool = False, to: str | Path | None = None
    ) -> Tables | dict[str, Path]:
        """The runs, steps and outputs as tidy tables (see :func:`plextera_data.flatten`).

        ``to="out/"`` writes them instead as parquet datasets ``out/runs/``, ``out/steps/`` and
        ``out/outputs/`` (a :class:`~plextera_data.flatten.TableWriter`) and returns the
        directory of each: the finished runs are streamed from the journal a few hundred at a
        time, so memory stays bounded whatever the batch's size. Either way, while runs are
        still running the tables are a consistent partial view: the finished runs and the
        running ones as last seen.

            batch.tables(to="out/")
            pd.read_parquet("out/outputs")  # or polars, DuckDB, Dask, Tables.read_parquet
        """
        if to is None:
            return flatten(self, expand_nested=expand_nested, client=self.client)
        # row_key's type as flatten() would decide it from every key, fixed before the first
        # chunk is written.
        key_type = row_key_type_of(r.key for r in self.rows if r.run_id is not None)
        with TableWriter(
            to, row_key_type=key_type, expand_nested=expand_nested, client=self.client
        ) as writer:
            for part in self.ledger.raw_run_chunks():
                writer.add(
                    [raw for _, raw, _ in part],
                    row_keys={run_id: key for run_id, _, key in part},
                )
        return writer.paths

    def _flatten_source(self) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
        """What ``px.flatten(batch)`` reads: the runs' JSON as :meth:`Ledger.raw_runs` streams
        it (no run model made), and the row key of each run id."""
        return (raw for raw, _ in self.ledger.raw_runs()), self.ledger.row_keys

    def results(self, frame: pd.DataFrame | None = None, **kwargs: Any) -> pd.DataFrame:
        """The input frame with each row's run status and step outputs as columns."""
        if frame is None:
            frame = self.frame
        if frame is None:
            raise ValueError(
                "This batch was resumed from a journal and has no input frame: "
                "pass it, batch.results(df)"
            )
        return results(frame, self.tables(), **kwargs)

    # ------------------------------------------------------------------ re-sending

    def resubmit(
        self, rows: Iterable[Any] | None = None, *, frame: pd.DataFrame | None = None
    ) -> Batch:
        """Send chosen rows again (default: the ``SUBMISSION_UNCERTAIN`` and
        ``SUBMISSION_FAILED`` ones). Check first that an uncertain row has no run: re-sending it
        may start a second one. ``rows`` are index values. A resumed batch needs ``frame``.
        """
        return run_sync(self.resubmit_async(rows, frame=frame))

    async def resubmit_async(
        self, rows: Iterable[Any] | None = None, *, frame: pd.DataFrame | None = None
    ) -> Batch:
        """Async twin of :meth:`resubmit`."""
        requests = self._requests_by_key(frame)
        if rows is None:
            chosen = [r for r in self.rows if r.status in (SUBMISSION_UNCERTAIN, SUBMISSION_FAILED)]
        else:
            chosen = [self.row(key) for key in rows]
        targets: list[tuple[RowState, RowRequest]] = []
        for row in chosen:
            if row.key not in requests:
                raise errors.InvalidInputError(
                    "A row to re-send is not in the frame", [(row.key, None, "no such row")]
                )
            if row.status == SUBMITTING:
                raise ValueError(f"Row {row.key!r} is being submitted right now")
            if row.run_id is not None or row.status not in LOCAL_STATUSES:
                logger.warning(
                    "Re-sending row %r, which already has run %s (%s) in this batch",
                    row.key,
                    row.run_id,
                    row.status,
                )
            self.ledger.reset_for_resend(row)
            targets.append((row, requests[row.key]))
        if targets:
            await self._sender.send(targets)
            self._raise_if_refused()
        return self

    def reconcile(
        self, *, frame: pd.DataFrame | None = None, window: float = 120.0, max_pages: int = 1000
    ) -> Reconciliation:
        """Settle the ``SUBMISSION_UNCERTAIN`` rows as the vendor advises: list the recent runs
        of the window in which their starts were in flight; a row whose window shows no run the
        batch does not know is proven unsent and is sent once more; runs the batch does not know
        are reported as candidates (``batch.adopt(key, run_id)``), never guessed.

        ``frame``: the input frame, for a resumed batch. ``window``: seconds after a start left
        in which its run could have been created. See :mod:`plextera_data.reconcile`.

            found = batch.reconcile()
            found.candidates        # {row key: [Candidate(run_id, created_at, status)]}
        """
        return run_sync(self.reconcile_async(frame=frame, window=window, max_pages=max_pages))

    async def reconcile_async(
        self, *, frame: pd.DataFrame | None = None, window: float = 120.0, max_pages: int = 1000
    ) -> Reconciliation:
        """Async twin of :meth:`reconcile`."""
        rows = [r for r in self.rows if r.status == SUBMISSION_UNCERTAIN]
        result = Reconciliation()
        if rows:
            requests = self._requests_by_key(frame)
            self.clock.seed(
                (r.sent_at, r.submitted_at) for r in self.rows if r.sent_at and r.submitted_at
            )
            found = await find(
                self.ledger, self.aclient, self.clock, rows, window=window, max_pages=max_pages
            )
            for row in found.proven:
                self.ledger.reset_for_resend(row)
            await self._sender.send([(row, requests[row.key]) for row in found.proven])
            result = Reconciliation(
                resent=[row.key for row in found.proven],
                candidates=found.candidates,
                inconclusive=[row.key for row in found.inconclusive],
                pages=found.pages,
            )
            logger.info("%r", result)
        self.reconciliation = result
        return result

    def adopt(self, row_key: Any, run_id: str) -> RowState:
        """Tie run ``run_id`` (a candidate from :meth:`reconcile`, or one found in Plextera) to
        the row ``row_key``, whose start is uncertain or failed: the row gets the run, as if its
        start had been answered. Fetches the run once to check it."""
        row = self.row(row_key)
        holder = next((r for r in self.rows if r.run_id == run_id and r is not row), None)
        if holder is not None:
            raise ValueError(f"Run {run_id} is already row {holder.key!r}'s run in this batch")
        if row.status not in (SUBMISSION_UNCERTAIN, SUBMISSION_FAILED, NOT_SUBMITTED):
            raise ValueError(
                f"Row {row_key!r} already has run {row.run_id} ({row.status}); "
                "only a row without a run can adopt one"
            )
        run = self.client.get_run(run_id)
        if run.workflow_id is not None and run.workflow_id != self.workflow_id:
            raise ValueError(
                f"Run {run_id} belongs to workflow {run.workflow_id!r}, not {self.workflow_id!r}"
            )
        self.ledger.adopt(row, run)
        self.ledger.commit()
        return row

    def _requests_by_key(self, frame: pd.DataFrame | None) -> dict[Any, RowRequest]:
        """The planned request of every row of ``frame`` (default: the batch's own frame), by
        key: planned again, the same way, rather than kept from submission."""
        plan = self._plan
        frame = frame if frame is not None else self.frame
        if frame is not None:
            if plan.body is None and plan.body_name:
                raise ValueError(
                    f"This batch was built with body={plan.body_name}, which the journal cannot "
                    "hold: call px.submit(df, workflow, body=..., journal=...) again and then "
                    "batch.resubmit(...)"
                )
            planned = plan.requests(frame, self.workflow_id)
            return dict(zip(frame.index.tolist(), planned, strict=True))
        raise ValueError(
            "This batch was resumed from a journal and has no input frame: pass it, "
            "batch.resubmit(rows, frame=df)"
        )

    # ------------------------------------------------------------------ display

    def _summary(self) -> tuple[str, list[tuple[str, int]]]:
        head = f"{len(self.rows)} rows of workflow {self.workflow_id!r}"
        if self.journal is not None:
            head += f", journal {str(self.journal.path)!r}"
        return head, list(self.counts.items())

    def __repr__(self) -> str:
        head, counts = self._summary()
        parts = ", ".join(f"{status}: {n}" for status, n in counts)
        return f"<Batch {head}; {parts}>"

    def _ipython_display_(self) -> None:
        """In a notebook, while a call runs (``watch()``), the batch shows as its live progress
        display (one display id: every copy moves together, a reloaded page picks it up);
        otherwise as its summary."""
        from IPython.display import display

        live = self._live
        if live is not None and hasattr(live, "show"):
            live.show()
            return
        display({"text/plain": repr(self), "text/html": self._repr_html_()}, raw=True)

    def _repr_html_(self) -> str:
        head, counts = self._summary()
        cells = "".join(
            f"<tr><td>{html.escape(status)}</td><td style='text-align:right'>{n}</td></tr>"
            for status, n in counts
        )
        notes = ""
        if self.adopted:
            notes += (
                f"<br>{len(self.adopted)} rows match starts the journal recorded under other "
                "keys; their runs were adopted and nothing was sent for them (see "
                "<code>batch.adopted</code>)."
            )
        if self.changed_rows:
            notes += (
                f"<br>{len(self.changed_rows)} rows differ from what the journal says was sent "
                "(see <code>batch.changed_rows</code>); they were not re-sent."
            )
        return (
            f"<div><b>Batch</b>: {html.escape(head)}{notes}"
            f"<table><thead><tr><th>status</th><th>rows</th></tr></thead>"
            f"<tbody>{cells}</tbody></table></div>"
        )


def _event_source(events: Any) -> EventSource:
    """An event store, or its path (opened here)."""
    if hasattr(events, "read_since"):
        source: EventSource = events
        return source
    return EventStore(events)


def _watch_ended(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        print(f"plextera-data: background polling stopped: {exc}", file=sys.stderr)
