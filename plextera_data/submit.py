"""Submitting a DataFrame: one workflow run per row, each started exactly once.

    import plextera_data as px

    batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
    batch.wait()

How a start is sent (see docs/guide/submitting.md):

* Every row is mapped and checked first (:mod:`plextera_data.rows`); nothing is sent if any row
  is bad.
* Up to ``concurrency`` starts are in flight, through the batch's shared
  :class:`~plextera_data.pacing.Pacer`: a 429 pauses the whole batch for ``Retry-After``, and
  the number in flight shrinks with the share of 429s among recent answers (a storm divides it
  by four) and grows back while the API is healthy. A 429 means no run was created, so that row
  is sent again (up to :data:`MAX_ATTEMPTS` POSTs per row).
* Any other failed start whose run may exist (5xx, a timeout or a dropped connection after the
  request was sent) marks the row ``SUBMISSION_UNCERTAIN`` and is never re-sent by itself;
  ``batch.resubmit()`` re-sends chosen rows on request. A refusal (4xx) marks it
  ``SUBMISSION_FAILED``.
* With a journal, a row is committed as ``SUBMITTING`` (with its ``X-Request-Id``) before its
  POST leaves, and its run id is committed before it counts as submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from plextera_data._loop import run_sync
from plextera_data._version import __version__
from plextera_data.batch import (
    LOCAL_STATUSES,
    NOT_SUBMITTED,
    SUBMISSION_FAILED,
    SUBMISSION_UNCERTAIN,
    SUBMITTING,
    Batch,
    RowState,
)
from plextera_data.client import AsyncClient, Client, new_request_id
from plextera_data.errors import (
    APIError,
    InvalidInputError,
    JournalError,
    PlexteraError,
    RateLimitError,
)
from plextera_data.journal import Journal, JournalRow, encode_key
from plextera_data.models import Run
from plextera_data.pacing import Pacer
from plextera_data.progress import NullReporter, ProgressReporter, open_progress
from plextera_data.rows import RowRequest, plan_requests

__all__ = ["MAX_ATTEMPTS", "SubmissionInterrupted", "resume", "submit", "submit_async"]

logger = logging.getLogger("plextera_data")

#: POST attempts per row (each 429 costs one) before the row is marked ``SUBMISSION_FAILED``.
MAX_ATTEMPTS = 10
#: Seconds that starts already in flight get to finish after an interrupt.
INTERRUPT_GRACE = 10.0
#: Seconds between two progress updates during submission.
PROGRESS_INTERVAL = 0.1

_UNCERTAIN_AFTER_CRASH = (
    "The process stopped while this row's start was in flight (request id {rid}); the run may "
    "or may not exist. Check in Plextera, then batch.resubmit([key]) if it does not."
)
_UNCERTAIN_INTERRUPTED = (
    "Interrupted while this row's start was in flight; the run may or may not exist. Check in "
    "Plextera (request id {rid}), then batch.resubmit([key]) if it does not."
)

BodyFunction = Callable[[pd.Series], Mapping[str, Any]]


class SubmissionInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`submit`: the message says how far it got; ``batch`` holds the rows."""

    def __init__(self, message: str, batch: Batch) -> None:
        super().__init__(message)
        self.batch = batch


# --------------------------------------------------------------------------- set-up


def _sync_client(client: Client | AsyncClient | None) -> Client:
    if client is None:
        return Client()
    if isinstance(client, Client):
        return client
    if isinstance(client, AsyncClient):
        face = Client.__new__(Client)  # the sync face over an existing AsyncClient
        face.aclient = client
        return face
    raise TypeError(
        f"client= takes a plextera_data.Client or AsyncClient, got {type(client).__name__}"
    )


def _frame_fingerprint(key_texts: Sequence[str], fingerprints: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for key_text, fingerprint in zip(key_texts, fingerprints, strict=True):
        digest.update(key_text.encode("utf-8"))
        digest.update(b"\0")
        digest.update(fingerprint.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _open_journal(journal: str | os.PathLike[str] | Journal | None) -> Journal | None:
    if journal is None or isinstance(journal, Journal):
        return journal
    return Journal(journal)


def _options(
    frame: pd.DataFrame,
    *,
    body: BodyFunction | None,
    columns: Sequence[Any] | None,
    files: Sequence[Any] | None,
    sep: str,
    concurrency: int,
) -> dict[str, Any]:
    return {
        "index_names": [None if n is None else str(n) for n in frame.index.names],
        "columns": None if columns is None else [str(c) for c in columns],
        "files": [str(c) for c in files or []],
        "sep": sep,
        "body": None if body is None else getattr(body, "__qualname__", repr(body)),
        "concurrency": concurrency,
        "library_version": __version__,
    }


def _adopt(row: RowState, rec: JournalRow, final_runs: Mapping[str, dict[str, Any]]) -> None:
    """Give ``row`` the state the journal recorded for it."""
    row.run_id = rec.run_id
    row.status = rec.status
    row.error = rec.error
    row.request_id = rec.request_id
    row.attempts = rec.attempts
    row.submitted_at = rec.submitted_at
    row.finished_at = rec.finished_at
    row.key_text = rec.key_text
    if rec.run_id is not None and rec.run_id in final_runs:
        row.run = Run.from_dict(final_runs[rec.run_id])
    if row.status == SUBMITTING:
        # A start was in flight when the last process stopped: its outcome is unknown.
        row.status = SUBMISSION_UNCERTAIN
        row.error = _UNCERTAIN_AFTER_CRASH.format(rid=rec.request_id)


def _prepare(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None,
    body: BodyFunction | None,
    columns: Sequence[Any] | None,
    files: Sequence[Any] | None,
    journal: str | os.PathLike[str] | Journal | None,
    concurrency: int,
    sep: str,
) -> tuple[Batch, list[tuple[RowState, RowRequest]]]:
    """Check everything, reconcile with the journal; returns the batch and the rows to send."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    requests = plan_requests(frame, workflow_id, body=body, columns=columns, files=files, sep=sep)
    sync_client = _sync_client(client)
    keys = frame.index.tolist()
    rows = [
        RowState(key=key, position=i, fingerprint=req.fingerprint)
        for i, (key, req) in enumerate(zip(keys, requests, strict=True))
    ]
    opened = _open_journal(journal)
    batch_id: int | None = None
    changed: list[Any] = []
    to_send: list[tuple[RowState, RowRequest]] = []
    if opened is None:
        to_send = list(zip(rows, requests, strict=True))
    else:
        key_texts = [encode_key(key) for key in keys]
        for row, text in zip(rows, key_texts, strict=True):
            row.key_text = text
        frame_fp = _frame_fingerprint(key_texts, [r.fingerprint for r in rows])
        options = _options(
            frame, body=body, columns=columns, files=files, sep=sep, concurrency=concurrency
        )
        recorded = opened.load()
        if recorded is None:
            batch_id = opened.create_batch(workflow_id, options, frame_fp)
            opened.add_rows(
                batch_id,
                ((r.key_text, r.key, r.position, r.fingerprint, NOT_SUBMITTED) for r in rows),
            )
            to_send = list(zip(rows, requests, strict=True))
        else:
            if recorded.workflow_id != workflow_id:
                opened.close()
                raise JournalError(
                    f"The journal {str(opened.path)!r} records a batch of workflow "
                    f"{recorded.workflow_id!r}, not {workflow_id!r}. Use another journal file "
                    "for another workflow; nothing was sent."
                )
            batch_id = recorded.id
            by_key = {rec.key_text: rec for rec in recorded.rows}
            next_position = max((rec.position for rec in recorded.rows), default=-1) + 1
            new_rows: list[RowState] = []
            for row, req in zip(rows, requests, strict=True):
                rec = by_key.get(row.key_text)
                if rec is None:
                    new_rows.append(row)
                    to_send.append((row, req))
                    continue
                sendable = rec.status in (NOT_SUBMITTED, SUBMISSION_FAILED) and not rec.run_id
                if rec.fingerprint == row.fingerprint or sendable:
                    _adopt(row, rec, recorded.final_runs)
                    row.fingerprint = req.fingerprint
                    if sendable:
                        to_send.append((row, req))
                else:
                    _adopt(row, rec, recorded.final_runs)  # keeps the journal's fingerprint
                    changed.append(row.key)
            if new_rows:
                opened.add_rows(
                    batch_id,
                    (
                        (r.key_text, r.key, next_position + i, r.fingerprint, NOT_SUBMITTED)
                        for i, r in enumerate(new_rows)
                    ),
                )
            opened.set_frame_fingerprint(batch_id, frame_fp)
    batch = Batch(
        workflow_id,
        sync_client,
        rows,
        frame.index,
        journal=opened,
        journal_batch_id=batch_id,
        pacer=Pacer(max_in_flight=concurrency),
        frame=frame,
        requests=requests,
        changed_rows=changed,
    )
    batch._plan_options = {"body": body, "columns": columns, "files": files, "sep": sep}
    if opened is not None:
        for row in rows:
            if row.status == SUBMISSION_UNCERTAIN and row.request_id and row.attempts:
                batch.save(row)  # SUBMITTING -> SUBMISSION_UNCERTAIN, on disk too
        opened.commit()
    if changed and opened is not None:
        shown = ", ".join(repr(k) for k in changed[:5]) + (" ..." if len(changed) > 5 else "")
        note = (
            "This row differs from the request the journal recorded as sent; it was not "
            "re-sent. batch.resubmit([key]) sends it again (starting another run)."
        )
        for key in changed:
            row = batch.row(key)
            if row.error is None:
                row.error = note
        warnings.warn(
            f"{len(changed)} rows differ from what the journal {str(opened.path)!r} recorded "
            f"as sent ({shown}); they were not re-sent. See batch.changed_rows; "
            "batch.resubmit(rows=[...]) sends them again, starting another run for each.",
            UserWarning,
            stacklevel=3,
        )
    return batch, to_send


# --------------------------------------------------------------------------- sending


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _send_one(batch: Batch, row: RowState, request: RowRequest) -> None:
    """Start one row's run, re-sending after 429s; leaves the row accepted or flagged."""
    pacer = batch.pacer
    journal = batch.journal
    aclient = batch.aclient
    kwargs = request.start_kwargs()
    request_id = new_request_id()
    row.fingerprint = request.fingerprint
    while True:
        await pacer.acquire()
        accepted = False
        try:
            row.attempts += 1
            row.request_id = request_id
            batch.set_status(row, SUBMITTING)
            batch.save(row)
            if journal is not None:
                await journal.flush()  # the SUBMITTING mark is on disk before the POST leaves
            try:
                run = await aclient.start_run(
                    batch.workflow_id, request_id=request_id, retry_rate_limits=False, **kwargs
                )
            except RateLimitError as exc:
                pacer.on_rate_limited(exc.retry_after)
                if row.attempts >= MAX_ATTEMPTS:
                    batch.set_status(
                        row,
                        SUBMISSION_FAILED,
                        error=f"Still rate limited after {row.attempts} attempts: {exc}",
                    )
                    _save_soon(batch, row)
                    return
                batch.set_status(row, NOT_SUBMITTED, error=_describe(exc))
                _save_soon(batch, row)
                continue
            except (APIError, InvalidInputError) as exc:
                uncertain = isinstance(exc, APIError) and exc.may_have_created
                row.request_id = getattr(exc, "request_id", None) or request_id
                batch.set_status(
                    row,
                    SUBMISSION_UNCERTAIN if uncertain else SUBMISSION_FAILED,
                    error=_describe(exc),
                )
                _save_soon(batch, row)
                return
            pacer.on_success()
            if not run.id:
                batch.set_status(
                    row,
                    SUBMISSION_UNCERTAIN,
                    error="The API accepted the start but its answer had no run id",
                )
                _save_soon(batch, row)
                return
            received_at = datetime.now(UTC)
            batch.note_server_time(run.created_at, received_at)
            row.run_id = run.id
            row.run = run
            row.submitted_at = run.created_at or received_at
            batch.set_status(row, run.status or "PROCESSING")
            accepted = True
            # Committed at the loop's next turn, before any other callback (user code in a
            # notebook included) can read the row; the worker need not wait for it.
            _save_soon(batch, row)
            return
        except asyncio.CancelledError:
            if accepted:
                if journal is not None:
                    journal.commit()
            elif row.status == SUBMITTING:
                batch.set_status(
                    row, SUBMISSION_UNCERTAIN, error=_UNCERTAIN_INTERRUPTED.format(rid=request_id)
                )
                batch.save(row)
                if journal is not None:
                    journal.commit()
            raise
        finally:
            pacer.release()


def _save_soon(batch: Batch, row: RowState) -> None:
    batch.save(row)
    if batch.journal is not None:
        batch.journal.commit_soon()


async def send_rows(
    batch: Batch,
    targets: Sequence[tuple[RowState, RowRequest]],
    *,
    reporter: ProgressReporter | None = None,
    workers: int | None = None,
) -> None:
    """Start the runs of ``targets`` with up to ``workers`` (default: the pacer's cap) at once.

    On cancellation, no new start is sent, starts in flight get :data:`INTERRUPT_GRACE` seconds
    to finish (after which they are marked uncertain), the journal is committed, and
    ``CancelledError`` propagates.
    """
    pending: Iterator[tuple[RowState, RowRequest]] = iter(targets)
    stopping = False
    last_update = 0.0
    count = workers or batch.pacer.max_in_flight

    async def worker() -> None:
        nonlocal last_update
        for row, request in pending:
            if stopping:
                return
            await _send_one(batch, row, request)
            if reporter is not None:
                now = time.monotonic()
                if now - last_update >= PROGRESS_INTERVAL:
                    last_update = now
                    reporter.update(batch.snapshot("submitting"))

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(count, len(targets))))]
    try:
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
        if batch.journal is not None:
            batch.journal.commit()
        raise
    finally:
        if batch.journal is not None:
            batch.journal.commit()
        if reporter is not None:
            reporter.update(batch.snapshot("submitting"))


def _interrupt_message(batch: Batch) -> str:
    submitted = sum(1 for r in batch.rows if r.run_id is not None)
    if submitted == len(batch.rows):
        running = len(batch.pending_poll())
        return (
            f"Interrupted while waiting: all {submitted} rows were submitted, {running} runs "
            "are still running on the server. batch.wait() goes on polling (in Jupyter: "
            "import sys; batch = sys.last_value.batch)"
            + (f", as does px.resume({str(batch.journal.path)!r})." if batch.journal else ".")
        )
    text = f"Interrupted: {submitted} of {len(batch.rows)} rows submitted"
    uncertain = sum(1 for r in batch.rows if r.status == SUBMISSION_UNCERTAIN)
    if batch.journal is not None:
        path = str(batch.journal.path)
        text += (
            f"; the journal {path!r} has them. Run px.submit(df, {batch.workflow_id!r}, "
            f"journal={path!r}) again to send the rest, or px.resume({path!r}) to poll the "
            "runs already started."
        )
    else:
        text += (
            ". No journal was given, so the run ids are only in this exception's .batch "
            "(in Jupyter: import sys; batch = sys.last_value.batch). Pass journal='...' to "
            "make a submission resumable."
        )
    if uncertain:
        text += (
            f" {uncertain} rows were in flight and are marked SUBMISSION_UNCERTAIN: "
            "they may or may not have a run (see batch.status)."
        )
    return text


async def _run(
    batch: Batch,
    targets: list[tuple[RowState, RowRequest]],
    *,
    progress: Any,
    wait: bool,
) -> Batch:
    reporter = open_progress(progress, total=len(batch.rows))
    batch._reporter = reporter
    if not wait:
        try:
            await send_rows(batch, targets, reporter=reporter)
        finally:
            reporter.close(batch.snapshot("submitted"))
        return batch
    from plextera_data import poll

    task = asyncio.create_task(send_rows(batch, targets, reporter=reporter))
    try:
        await poll.wait_async(batch, progress=progress, submission=task, reporter=reporter)
    except asyncio.CancelledError:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    if not task.done():  # the poller returns once submission is over; be sure of it
        await task
    task.result()
    return batch


async def submit_async(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None = None,
    body: BodyFunction | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    concurrency: int = 16,
    progress: Any = True,
    wait: bool = False,
    sep: str = ".",
) -> Batch:
    """Async twin of :func:`submit`; cancelling it stops cleanly (see :func:`submit`)."""
    batch, targets = _prepare(
        frame,
        workflow_id,
        client=client,
        body=body,
        columns=columns,
        files=files,
        journal=journal,
        concurrency=concurrency,
        sep=sep,
    )
    try:
        return await _run(batch, targets, progress=progress, wait=wait)
    except asyncio.CancelledError:
        logger.warning("%s", _interrupt_message(batch))
        raise


@contextlib.contextmanager
def _interrupt_cancels(task_holder: list[asyncio.Task[Any]]) -> Iterator[None]:
    """While submitting from sync code on the main thread, Ctrl-C cancels the submission task
    (so it can stop cleanly) instead of raising wherever the loop happens to be; a second
    Ctrl-C raises at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, TypeError):
        yield
        return
    pressed = False

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal pressed
        if pressed or not task_holder:
            signal.default_int_handler(signum, frame)
            return
        pressed = True
        task = task_holder[0]
        task.get_loop().call_soon_threadsafe(task.cancel)

    try:
        signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def submit(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None = None,
    body: BodyFunction | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    concurrency: int = 16,
    progress: Any = True,
    wait: bool = False,
    sep: str = ".",
) -> Batch:
    """Start one run of ``workflow_id`` per row of ``frame``; returns the :class:`Batch`.

    Every row is mapped and checked before the first request (see :mod:`plextera_data.rows`):
    bad input raises :class:`~plextera_data.errors.InvalidInputError` and nothing is sent.

    ``body(row)`` builds a row's JSON body instead of the default mapping; ``columns`` selects
    the columns sent; ``files`` names columns of paths/bytes/file objects (multipart starts);
    ``sep`` nests dotted column names. ``journal`` (a path) records every start in SQLite:
    calling ``submit`` again with the same journal and frame sends only the rows not yet
    started, and :func:`resume` picks the batch up after a crash. ``concurrency``: starts in
    flight at most. ``wait=True`` polls while submitting and returns when all runs are done.

    Ctrl-C stops cleanly: starts in flight finish (or are marked ``SUBMISSION_UNCERTAIN``), the
    journal is committed, and :class:`SubmissionInterrupted` (a ``KeyboardInterrupt``) says how
    many rows were submitted and how to go on.

        batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
        batch.wait()
    """
    batch, targets = _prepare(
        frame,
        workflow_id,
        client=client,
        body=body,
        columns=columns,
        files=files,
        journal=journal,
        concurrency=concurrency,
        sep=sep,
    )
    holder: list[asyncio.Task[Any]] = []

    async def main() -> Batch:
        task = asyncio.current_task()
        if task is not None:
            holder.append(task)
        return await _run(batch, targets, progress=progress, wait=wait)

    try:
        with _interrupt_cancels(holder):
            return run_sync(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        if batch.journal is not None:
            with contextlib.suppress(PlexteraError):
                batch.journal.commit()
        # from None: the chain is asyncio's cancellation plumbing, not the user's concern.
        raise SubmissionInterrupted(_interrupt_message(batch), batch) from None


# --------------------------------------------------------------------------- resume / resubmit


def resume(path: str | os.PathLike[str], *, client: Client | AsyncClient | None = None) -> Batch:
    """The batch recorded in the journal at ``path``, ready to poll (``batch.wait()``).

    Finished runs come from the journal and are not fetched again. Rows whose start was in
    flight when the process stopped are ``SUBMISSION_UNCERTAIN``. The input frame is not in the
    journal: pass it to ``batch.results(df)``, or call ``px.submit(df, ...)`` with the same
    journal to send rows not yet started.
    """
    if not Path(path).exists():
        raise JournalError(f"No journal at {str(path)!r}; check the path")
    journal = Journal(path)
    recorded = journal.load()
    if recorded is None:
        journal.close()
        raise JournalError(f"The journal {str(path)!r} holds no batch yet")
    rows: list[RowState] = []
    for position, rec in enumerate(recorded.rows):
        row = RowState(key=rec.key, position=position, fingerprint=rec.fingerprint)
        _adopt(row, rec, recorded.final_runs)
        rows.append(row)
    names = recorded.options.get("index_names") or [None]
    keys = [r.key for r in rows]
    index: pd.Index
    if len(names) > 1:
        index = pd.MultiIndex.from_tuples(keys, names=names)
    else:
        index = pd.Index(keys, name=names[0], tupleize_cols=False)
    batch = Batch(
        recorded.workflow_id,
        _sync_client(client),
        rows,
        index,
        journal=journal,
        journal_batch_id=recorded.id,
        pacer=Pacer(max_in_flight=int(recorded.options.get("concurrency") or 16)),
    )
    batch._plan_options = {
        "body": None,
        "columns": recorded.options.get("columns"),
        "files": recorded.options.get("files") or None,
        "sep": recorded.options.get("sep", "."),
        "body_name": recorded.options.get("body"),
    }
    for row in rows:
        if row.status == SUBMISSION_UNCERTAIN:
            batch.save(row)
    journal.commit()
    return batch


async def resubmit_rows(
    batch: Batch, keys: Iterable[Any] | None = None, *, frame: pd.DataFrame | None = None
) -> None:
    """Send the chosen rows of ``batch`` again (see :meth:`Batch.resubmit`)."""
    options: dict[str, Any] = getattr(batch, "_plan_options", {})
    if frame is not None:
        if options.get("body") is None and options.get("body_name"):
            raise ValueError(
                "This batch was built with body=" + str(options["body_name"]) + ", which the "
                "journal cannot hold: call px.submit(df, workflow, body=..., journal=...) again "
                "and then batch.resubmit(...)"
            )
        requests = plan_requests(
            frame,
            batch.workflow_id,
            body=options.get("body"),
            columns=options.get("columns"),
            files=options.get("files"),
            sep=options.get("sep", "."),
        )
        by_key = dict(zip(frame.index.tolist(), requests, strict=True))
    elif batch.requests is not None and batch.frame is not None:
        by_key = dict(zip(batch.frame.index.tolist(), batch.requests, strict=True))
    else:
        raise ValueError(
            "This batch was resumed from a journal and has no input frame: pass it, "
            "batch.resubmit(rows, frame=df)"
        )
    if keys is None:
        chosen = [r for r in batch.rows if r.status in (SUBMISSION_UNCERTAIN, SUBMISSION_FAILED)]
    else:
        chosen = [batch.row(key) for key in keys]
    targets: list[tuple[RowState, RowRequest]] = []
    for row in chosen:
        if row.key not in by_key:
            raise InvalidInputError(
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
        row.run_id = None
        row.run = None
        row.submitted_at = None
        row.finished_at = None
        batch.set_status(row, NOT_SUBMITTED)
        targets.append((row, by_key[row.key]))
        if row.key in batch.changed_rows:
            batch.changed_rows.remove(row.key)
    if targets:
        await send_rows(batch, targets, reporter=NullReporter())
