"""A submitted DataFrame: :class:`Batch` holds one :class:`RowState` per input row.

The batch is the one place where a row's state changes: submission (:mod:`plextera_data.submit`)
and polling (:mod:`plextera_data.poll`) both go through it, and it writes every change to the
journal when there is one. ``batch.status`` is a live DataFrame view indexed like the input.

Row statuses are uppercase, like the API's: before the API accepts a row it is
``NOT_SUBMITTED``, ``SUBMITTING`` (POST in flight), ``SUBMISSION_UNCERTAIN`` (a POST whose outcome
is unknown: a run may or may not exist; never re-sent without ``batch.resubmit``) or
``SUBMISSION_FAILED`` (the API refused it, no run exists). After that it carries the API's
status (``PROCESSING``, ``QUEUED``, ``COMPLETED``, ``FAILED``, ``CLOSED``, or any new one).
"""

from __future__ import annotations

import html
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from plextera_data.models import Run, is_terminal
from plextera_data.pacing import Pacer
from plextera_data.progress import FailureNote, Snapshot

if TYPE_CHECKING:
    from plextera_data.client import AsyncClient, Client
    from plextera_data.journal import Journal
    from plextera_data.rows import RowRequest
    from plextera_data.tables import Tables

__all__ = [
    "LOCAL_STATUSES",
    "NOT_SUBMITTED",
    "SUBMISSION_FAILED",
    "SUBMISSION_UNCERTAIN",
    "SUBMITTING",
    "Batch",
    "RowState",
]

NOT_SUBMITTED = "NOT_SUBMITTED"
SUBMITTING = "SUBMITTING"
SUBMISSION_UNCERTAIN = "SUBMISSION_UNCERTAIN"
SUBMISSION_FAILED = "SUBMISSION_FAILED"
#: Statuses a row has before the API accepted it (no run id).
LOCAL_STATUSES: frozenset[str] = frozenset(
    {NOT_SUBMITTED, SUBMITTING, SUBMISSION_UNCERTAIN, SUBMISSION_FAILED}
)

_SNAPSHOT_FIELD = {
    NOT_SUBMITTED: "not_submitted",
    SUBMITTING: "submitting",
    SUBMISSION_UNCERTAIN: "uncertain",
    SUBMISSION_FAILED: "submit_failed",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CLOSED": "closed",
}
_NOTED = frozenset({SUBMISSION_UNCERTAIN, SUBMISSION_FAILED, "FAILED", "CLOSED"})


@dataclass
class RowState:
    """Where one input row stands: its key, fingerprint, run id and status (see the module)."""

    key: Any
    position: int
    fingerprint: str
    run_id: str | None = None
    status: str = NOT_SUBMITTED
    error: str | None = None
    request_id: str | None = None
    attempts: int = 0
    polls: int = 0
    poll_failures: int = 0
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    run: Run | None = None
    #: The key as the journal writes it (set when the batch has a journal).
    key_text: str = field(default="", repr=False)


def _snapshot_field(status: str) -> str:
    return _SNAPSHOT_FIELD.get(status, "running")


class Batch:
    """The rows of one DataFrame submitted as runs of one workflow.

    Made by :func:`plextera_data.submit` or :func:`plextera_data.resume`, not directly.

        batch = px.submit(df, "daily-lab-loader", journal="labs.plextera.db")
        batch.wait()
        batch.status.query("status == 'FAILED'")
    """

    def __init__(
        self,
        workflow_id: str,
        client: Client,
        rows: list[RowState],
        index: pd.Index,
        *,
        journal: Journal | None = None,
        journal_batch_id: int | None = None,
        pacer: Pacer | None = None,
        frame: pd.DataFrame | None = None,
        requests: Sequence[RowRequest] | None = None,
        changed_rows: Sequence[Any] = (),
    ) -> None:
        self.workflow_id = workflow_id
        self.client = client
        self.journal = journal
        self.journal_batch_id = journal_batch_id
        self.rows = rows
        self.index = index
        self.pacer = pacer if pacer is not None else Pacer()
        self.frame = frame
        self.requests: list[RowRequest] | None = list(requests) if requests is not None else None
        #: Keys of rows that differ from what the journal says was sent for them (not re-sent).
        self.changed_rows: list[Any] = list(changed_rows)
        self._counts: Counter[str] = Counter(_snapshot_field(r.status) for r in rows)
        self._poll_errors = sum(1 for r in rows if r.poll_failures)
        self._recent: deque[FailureNote] = deque(maxlen=5)
        self._started = time.monotonic()
        self._reporter: Any = None
        self._poller: Any = None
        self._by_key: dict[Any, RowState] | None = None
        #: How rows map to requests (body, columns, files, sep), for resubmit.
        self._plan_options: dict[str, Any] = {}
        #: Client clock minus the API's clock, in seconds (``None``: not measured yet).
        self.clock_offset: float | None = None
        self._latest_server_time: tuple[float, datetime] | None = None  # (monotonic, API time)

    # ------------------------------------------------------------------ clocks

    def note_server_time(self, server_time: datetime | None, received_at: datetime) -> None:
        """Learn the API's clock from a timestamp it set just before answering (a new run's
        ``createdAt``). The smallest ``received_at - server_time`` seen is the skew plus the
        fastest answer's latency, so the estimate only gets better."""
        if server_time is None:
            return
        sample = (received_at - server_time).total_seconds()
        if self.clock_offset is None or sample < self.clock_offset:
            self.clock_offset = sample
        self._latest_server_time = (time.monotonic(), server_time)

    def server_now(self, rate: float = 1.0) -> datetime:
        """The API's current time as estimated from this client's clock (see
        :meth:`note_server_time`); the client's clock until a start has been answered.
        ``rate``: the API's seconds per client second (a sped-up simulator's speed)."""
        if rate != 1.0 and self._latest_server_time is not None:
            seen_at, server_time = self._latest_server_time
            return server_time + timedelta(seconds=rate * (time.monotonic() - seen_at))
        now = datetime.now(UTC)
        return now - timedelta(seconds=self.clock_offset) if self.clock_offset else now

    # ------------------------------------------------------------------ clients

    @property
    def aclient(self) -> AsyncClient:
        """The :class:`~plextera_data.AsyncClient` behind :attr:`client`."""
        return self.client.aclient

    # ------------------------------------------------------------------ state changes

    def set_status(self, row: RowState, status: str, *, error: str | None = None) -> None:
        """Change a row's status (and error), keeping the counts; not journaled (see save)."""
        if status != row.status:
            self._counts[_snapshot_field(row.status)] -= 1
            self._counts[_snapshot_field(status)] += 1
            row.status = status
            if status in _NOTED:
                self._recent.append(FailureNote(row.key, row.run_id, error or row.error or status))
        row.error = error

    def save(self, row: RowState) -> None:
        """Write the row's state to the journal (committed at the next flush / loop turn)."""
        if self.journal is None or self.journal_batch_id is None:
            return
        self.journal.save_row(
            self.journal_batch_id,
            row.key_text,
            fingerprint=row.fingerprint,
            run_id=row.run_id,
            status=row.status,
            error=row.error,
            request_id=row.request_id,
            attempts=row.attempts,
            submitted_at=row.submitted_at,
            finished_at=row.finished_at,
        )

    def record_run(self, row: RowState, run: Run) -> bool:
        """Apply a fetched run to its row; returns True if the status changed.

        A change is journaled; a terminal run gets ``finished_at`` (the run's ``completedAt``
        if given) and its final JSON is written to the journal once.
        """
        row.run = run
        if row.poll_failures:
            row.poll_failures = 0
            self._poll_errors -= 1
        if row.run_id is None and run.id:
            row.run_id = run.id
        status = run.status
        changed = status is not None and status != row.status
        if changed:
            assert status is not None
            error = None
            if run.error is not None:
                error = ": ".join(t for t in (run.error.code, run.error.message) if t) or None
            self.set_status(row, status, error=error)
        elif row.error is not None and row.status not in LOCAL_STATUSES and run.error is None:
            row.error = None  # a poll error that has passed
        terminal_now = is_terminal(status) and row.finished_at is None
        if terminal_now:
            row.finished_at = run.completed_at or datetime.now(UTC)
            if self.journal is not None and self.journal_batch_id is not None and run.id:
                self.journal.save_final_run(self.journal_batch_id, run.id, run.raw)
        if changed or terminal_now:
            self.save(row)
            if self.journal is not None:
                self.journal.commit_soon()
        return changed

    def record_poll_error(self, row: RowState, exc: BaseException) -> None:
        """A GET for this row's run failed: keep the row, remember the error."""
        if row.poll_failures == 0:
            self._poll_errors += 1
        row.poll_failures += 1
        row.error = str(exc)

    # ------------------------------------------------------------------ views

    def pending_poll(self) -> list[RowState]:
        """Rows that have a run whose status is not terminal, in input order."""
        return [
            r
            for r in self.rows
            if r.run_id is not None and r.status not in LOCAL_STATUSES and not is_terminal(r.status)
        ]

    @property
    def runs(self) -> list[Run]:
        """The latest model of each row's run, in input order (rows without a run left out)."""
        return [r.run for r in self.rows if r.run is not None and r.run_id is not None]

    @property
    def row_keys(self) -> dict[str, Any]:
        """``run_id -> row key`` for every row with a run."""
        return {r.run_id: r.key for r in self.rows if r.run_id is not None}

    def row(self, key: Any) -> RowState:
        """The :class:`RowState` of the row with index value ``key``."""
        if self._by_key is None or len(self._by_key) != len(self.rows):
            self._by_key = {r.key: r for r in self.rows}
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"No row with key {key!r} in this batch") from None

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, most common first."""
        return dict(Counter(r.status for r in self.rows).most_common())

    @property
    def status(self) -> pd.DataFrame:
        """One row per input row (same index, same order): ``run_id``, ``status``, ``error``,
        ``request_id``, ``attempts``, ``submitted_at``, ``finished_at`` (UTC) and ``polls``."""
        rows = self.rows
        frame = pd.DataFrame(
            {
                "run_id": pd.array([r.run_id for r in rows], dtype="str"),
                "status": pd.array([r.status for r in rows], dtype="str"),
                "error": pd.array([r.error for r in rows], dtype="str"),
                "request_id": pd.array([r.request_id for r in rows], dtype="str"),
                "attempts": pd.array([r.attempts for r in rows], dtype="int64"),
                "submitted_at": _utc_column([r.submitted_at for r in rows]),
                "finished_at": _utc_column([r.finished_at for r in rows]),
                "polls": pd.array([r.polls for r in rows], dtype="int64"),
            },
            index=self.index,
        )
        return frame

    def snapshot(self, phase: str = "polling") -> Snapshot:
        """Where the batch stands, for a progress reporter (cheap: kept counts)."""
        counts = self._counts
        return Snapshot(
            total=len(self.rows),
            not_submitted=counts["not_submitted"],
            submitting=counts["submitting"],
            uncertain=counts["uncertain"],
            submit_failed=counts["submit_failed"],
            running=counts["running"],
            completed=counts["completed"],
            failed=counts["failed"],
            closed=counts["closed"],
            poll_errors=self._poll_errors,
            elapsed=time.monotonic() - self._started,
            phase=phase,
            recent_failures=tuple(self._recent),
        )

    # ------------------------------------------------------------------ polling (poll.py)

    def wait(
        self,
        timeout: float | None = None,
        progress: Any = True,
        raise_on_failure: bool = False,
        **limits: Any,
    ) -> Batch:
        """Poll every run until all are finished (see :func:`plextera_data.poll.wait`)."""
        from plextera_data import poll

        poll.wait(
            self, timeout=timeout, progress=progress, raise_on_failure=raise_on_failure, **limits
        )
        return self

    async def wait_async(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the public contract, enforced in poll
        progress: Any = True,
        raise_on_failure: bool = False,
        **limits: Any,
    ) -> Batch:
        """Async twin of :meth:`wait`."""
        from plextera_data import poll

        await poll.wait_async(
            self, timeout=timeout, progress=progress, raise_on_failure=raise_on_failure, **limits
        )
        return self

    def watch(self, progress: Any = True, **limits: Any) -> Batch:
        """Poll in the background and return at once (see :func:`plextera_data.poll.watch`)."""
        from plextera_data import poll

        poll.watch(self, progress=progress, **limits)
        return self

    def stop(self) -> None:
        """Stop background polling started by :meth:`watch`."""
        from plextera_data import poll

        poll.stop(self)

    # ------------------------------------------------------------------ results (flatten.py)

    def _flatten_source(self) -> tuple[list[Run], dict[str, Any]]:
        return self.runs, self.row_keys

    def tables(self, *, expand_nested: bool = False) -> Tables:
        """The runs, steps and outputs as tidy tables (see :func:`plextera_data.flatten`)."""
        from plextera_data.flatten import flatten

        runs, keys = self._flatten_source()
        return flatten(runs, row_keys=keys, expand_nested=expand_nested, client=self.client)

    def results(self, frame: pd.DataFrame | None = None, **kwargs: Any) -> pd.DataFrame:
        """The input frame with each row's run status and step outputs as columns."""
        from plextera_data.flatten import results

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
        from plextera_data._loop import run_sync

        return run_sync(self.resubmit_async(rows, frame=frame))

    async def resubmit_async(
        self, rows: Iterable[Any] | None = None, *, frame: pd.DataFrame | None = None
    ) -> Batch:
        """Async twin of :meth:`resubmit`."""
        from plextera_data.submit import resubmit_rows

        await resubmit_rows(self, rows, frame=frame)
        return self

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

    def _repr_html_(self) -> str:
        head, counts = self._summary()
        cells = "".join(
            f"<tr><td>{html.escape(status)}</td><td style='text-align:right'>{n}</td></tr>"
            for status, n in counts
        )
        changed = ""
        if self.changed_rows:
            changed = (
                f"<br>{len(self.changed_rows)} rows differ from what the journal says was sent "
                "(see <code>batch.changed_rows</code>); they were not re-sent."
            )
        return (
            f"<div><b>Batch</b>: {html.escape(head)}{changed}"
            f"<table><thead><tr><th>status</th><th>rows</th></tr></thead>"
            f"<tbody>{cells}</tbody></table></div>"
        )


def _utc_column(values: list[datetime | None]) -> Any:
    stamps: Any = values
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).as_unit("us").array
