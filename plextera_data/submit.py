"""Submitting a DataFrame: :func:`submit`, :func:`submit_async` and :func:`resume`.

These are the top-level helpers: they plan the rows (:mod:`plextera_data.rows`), open the
ledger against the journal (:mod:`plextera_data.ledger`), and hand both to a
:class:`~plextera_data.batch.Batch`, which sends them (:mod:`plextera_data.sending`). One run per
row, each started exactly once.

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
  is sent again, as often as the client's ``RetryPolicy(max_retries=...)`` allows.
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
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from plextera_data._loop import run_sync
from plextera_data._version import __version__
from plextera_data.batch import Batch, BodyFunction, PlanOptions
from plextera_data.client import AsyncClient, Client
from plextera_data.errors import JournalError, PlexteraError
from plextera_data.journal import Journal
from plextera_data.ledger import SUBMISSION_UNCERTAIN, RowState, open_ledger, resume_ledger
from plextera_data.pacing import Pacer
from plextera_data.retry import DEFAULT_RETRY_POLICY
from plextera_data.rows import PlannedRequests, RowRequest, as_frame

__all__ = ["MAX_ATTEMPTS", "SubmissionInterrupted", "resume", "submit", "submit_async"]

logger = logging.getLogger("plextera_data")

#: Deprecated: the client's ``RetryPolicy(max_retries=...)`` decides how often a start is sent
#: after 429s (attempts = retries + 1). This is the default policy's figure.
MAX_ATTEMPTS = DEFAULT_RETRY_POLICY.max_retries + 1


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
        return Client.from_async(client)
    raise TypeError(
        f"client= takes a plextera_data.Client or AsyncClient, got {type(client).__name__}"
    )


def _options(
    frame: pd.DataFrame,
    plan: PlanOptions,
    concurrency: int,
) -> dict[str, Any]:
    """What the journal keeps of a submission's settings (nothing secret)."""
    return {
        "index_names": [None if n is None else str(n) for n in frame.index.names],
        "columns": None if plan.columns is None else [str(c) for c in plan.columns],
        "files": [str(c) for c in plan.files or []],
        "upload": [str(c) for c in plan.upload or []],
        "sep": plan.sep,
        "body": plan.body_name,
        "concurrency": concurrency,
        "library_version": __version__,
    }


def _prepare(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None,
    body: BodyFunction | None,
    columns: Sequence[Any] | None,
    files: Sequence[Any] | None,
    upload: Sequence[Any] | None,
    journal: str | os.PathLike[str] | Journal | None,
    concurrency: int,
    sep: str,
) -> tuple[Batch, _Targets]:
    """Check everything, match the rows with the journal; returns the batch and the rows to
    send with their requests."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    frame = as_frame(frame)
    plan = PlanOptions(
        body=body,
        columns=columns,
        files=files,
        upload=upload,
        sep=sep,
        body_name=None if body is None else getattr(body, "__qualname__", repr(body)),
    )
    requests = plan.requests(frame, workflow_id)
    sync_client = _sync_client(client)
    opened_journal = (
        journal if journal is None or isinstance(journal, Journal) else Journal(journal)
    )
    opened = open_ledger(
        frame.index.tolist(),
        requests.fingerprints,
        frame.index,
        workflow_id=workflow_id,
        journal=opened_journal,
        options=_options(frame, plan, concurrency),
    )
    batch = Batch(
        sync_client,
        opened.ledger,
        pacer=Pacer(max_in_flight=concurrency),
        frame=frame,
        plan=plan,
        adopted=opened.adopted,
    )
    if opened.adopted:
        shown = ", ".join(f"{new!r} (was {old!r})" for new, old in list(opened.adopted.items())[:5])
        warnings.warn(
            f"{len(opened.adopted)} rows match starts the journal recorded under other keys "
            f"({shown}{' ...' if len(opened.adopted) > 5 else ''}); their runs were adopted "
            "and nothing was sent for them. See batch.adopted.",
            UserWarning,
            stacklevel=3,
        )
    return batch, _Targets(batch.rows, requests, opened.to_send)


class _Targets:
    """The rows to send and their requests, each request made as the sender takes its row and
    let go (with its chunk's bodies) once sent: submission never holds every body."""

    def __init__(
        self, rows: Sequence[RowState], requests: PlannedRequests, positions: Sequence[int]
    ) -> None:
        self._rows = rows
        self._requests = requests
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    def __iter__(self) -> Iterator[tuple[RowState, RowRequest]]:
        for position, request in self._requests.take(self._positions):
            yield self._rows[position], request


# --------------------------------------------------------------------------- interrupts


def _interrupt_message(batch: Batch) -> str:
    submitted = sum(1 for r in batch.rows if r.run_id is not None)
    if submitted == len(batch.rows):
        running = len(batch.ledger.pending_poll())
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


# --------------------------------------------------------------------------- the calls


async def submit_async(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None = None,
    body: BodyFunction | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    upload: Sequence[Any] | None = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    concurrency: int = 16,
    progress: Any = True,
    wait: bool = False,
    sep: str = ".",
    reconcile: bool = False,
    events: Any = None,
) -> Batch:
    """Async twin of :func:`submit`; cancelling it stops cleanly (see :func:`submit`)."""
    batch, targets = _prepare(
        frame,
        workflow_id,
        client=client,
        body=body,
        columns=columns,
        files=files,
        upload=upload,
        journal=journal,
        concurrency=concurrency,
        sep=sep,
    )
    try:
        return await batch.submit_rows_async(
            targets, progress=progress, wait=wait, reconcile=reconcile, events=events
        )
    except asyncio.CancelledError:
        logger.warning("%s", _interrupt_message(batch))
        raise


def submit(
    frame: pd.DataFrame,
    workflow_id: str,
    *,
    client: Client | AsyncClient | None = None,
    body: BodyFunction | None = None,
    columns: Sequence[Any] | None = None,
    files: Sequence[Any] | None = None,
    upload: Sequence[Any] | None = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    concurrency: int = 16,
    progress: Any = True,
    wait: bool = False,
    sep: str = ".",
    reconcile: bool = False,
    events: Any = None,
) -> Batch:
    """Start one run of ``workflow_id`` per row of ``frame``; returns the :class:`Batch`.

    Every row is mapped and checked before the first request (see :mod:`plextera_data.rows`):
    bad input raises :class:`~plextera_data.errors.InvalidInputError` and nothing is sent.

    ``body(row)`` builds a row's JSON body instead of the default mapping; ``columns`` selects
    the columns sent; ``files`` names columns of paths/bytes/file objects (multipart starts);
    ``upload`` names columns of paths/bytes/file objects uploaded through the File Service
    (``POST /files``, once per content, remembered by the journal) and sent as
    ``{"fileId": id}`` in the JSON body;
    ``sep`` nests dotted column names. ``journal`` (a path) records every start in SQLite:
    calling ``submit`` again with the same journal sends only the rows not yet started (a row
    is recognised by its request's content, under whatever key and in whatever order), and
    :func:`resume` picks the batch up after a crash. ``concurrency``: starts in flight at most.
    ``wait=True`` polls while submitting and returns when all runs are done.
    ``reconcile=True`` settles the starts whose outcome is unknown at the end of submission, as
    the vendor advises (see :meth:`Batch.reconcile`). ``events``: with ``wait=True``, an event
    store whose terminal events finish runs without polling (see :meth:`Batch.wait`).

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
        upload=upload,
        journal=journal,
        concurrency=concurrency,
        sep=sep,
    )
    holder: list[asyncio.Task[Any]] = []

    async def main() -> Batch:
        task = asyncio.current_task()
        if task is not None:
            holder.append(task)
        return await batch.submit_rows_async(
            targets, progress=progress, wait=wait, reconcile=reconcile, events=events
        )

    try:
        with _interrupt_cancels(holder):
            return run_sync(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        with contextlib.suppress(PlexteraError):
            batch.ledger.commit()
        # from None: the chain is asyncio's cancellation plumbing, not the user's concern.
        raise SubmissionInterrupted(_interrupt_message(batch), batch) from None


def resume(path: str | os.PathLike[str], *, client: Client | AsyncClient | None = None) -> Batch:
    """The batch recorded in the journal at ``path``, ready to poll (``batch.wait()``).

    Finished runs come from the journal and are not fetched again. Rows whose start was in
    flight when the process stopped are ``SUBMISSION_UNCERTAIN``. The input frame is not in the
    journal: pass it to ``batch.results(df)`` or ``batch.resubmit(rows, frame=df)``, or call
    ``px.submit(df, ...)`` with the same journal to send rows not yet started.
    """
    if not Path(path).exists():
        raise JournalError(f"No journal at {str(path)!r}; check the path")
    journal = Journal(path)
    recorded = journal.load()
    if recorded is None:
        journal.close()
        raise JournalError(f"The journal {str(path)!r} holds no batch yet")
    ledger = resume_ledger(journal, recorded)
    options: Mapping[str, Any] = recorded.options
    plan = PlanOptions(
        columns=options.get("columns"),
        files=options.get("files") or None,
        upload=options.get("upload") or None,
        sep=options.get("sep", "."),
        body_name=options.get("body"),
    )
    return Batch(
        _sync_client(client),
        ledger,
        pacer=Pacer(max_in_flight=int(options.get("concurrency") or 16)),
        plan=plan,
    )
