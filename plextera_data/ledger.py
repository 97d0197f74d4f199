"""The ledger of a batch: one :class:`RowState` per input row, and the journal that keeps them.

The ledger is the only code that changes a row's state. The engines tell it what happened (a
start sent, accepted, refused, uncertain; a run fetched; a GET that failed) and it keeps the
counts and failure groups the progress display reads, and writes every change to the journal
when there is one. It knows nothing of HTTP, pacing or the display.

Row statuses are uppercase, like the API's: before the API accepts a row it is
``NOT_SUBMITTED``, ``SUBMITTING`` (POST in flight), ``SUBMISSION_UNCERTAIN`` (a POST whose outcome
is unknown: a run may or may not exist; never re-sent without ``batch.resubmit``) or
``SUBMISSION_FAILED`` (the API refused it, no run exists). After that it carries the API's
status (``PROCESSING``, ``QUEUED``, ``COMPLETED``, ``FAILED``, ``CLOSED``, or any new one).
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from plextera_data.errors import APIStatusError, JournalError, PlexteraError
from plextera_data.journal import Journal, JournalBatch, JournalRow, encode_key
from plextera_data.models import Run, RunHead, is_terminal
from plextera_data.progress import GROUP_KEYS_KEPT, FailureGroup, FailureNote, Snapshot

__all__ = [
    "LOCAL_STATUSES",
    "NOT_SUBMITTED",
    "SUBMISSION_FAILED",
    "SUBMISSION_UNCERTAIN",
    "SUBMITTING",
    "Ledger",
    "Opened",
    "RowState",
    "open_ledger",
    "resume_ledger",
]

NOT_SUBMITTED = "NOT_SUBMITTED"
SUBMITTING = "SUBMITTING"
SUBMISSION_UNCERTAIN = "SUBMISSION_UNCERTAIN"
SUBMISSION_FAILED = "SUBMISSION_FAILED"
#: Statuses a row has before the API accepted it (no run id).
LOCAL_STATUSES: frozenset[str] = frozenset(
    {NOT_SUBMITTED, SUBMITTING, SUBMISSION_UNCERTAIN, SUBMISSION_FAILED}
)

#: How a status shows in a failure group (the statuses that put a row in one).
_FAILURE_KINDS = {
    SUBMISSION_UNCERTAIN: "submission uncertain",
    SUBMISSION_FAILED: "submission failed",
    "FAILED": "failed",
    "CLOSED": "closed",
}
POLL_FAILING = "failing to poll"

UNCERTAIN_AFTER_CRASH = (
    "The process stopped while this row's start was in flight (request id {rid}); the run may "
    "or may not exist. Check in Plextera, then batch.resubmit([key]) if it does not."
)


@dataclass(slots=True, eq=False, init=False)
class RowState:
    """Where one input row stands: its key, fingerprint, run id and status (see the module).

    ``sent_at`` (when the last start of this row left, client clock), ``submitted_at`` (its
    run's ``createdAt``) and ``finished_at`` are aware UTC datetimes; they are kept as POSIX
    seconds (a float costs half a datetime, and a batch holds three per row).
    """

    key: Any
    position: int
    fingerprint: str
    #: This row's place among the rows with the same fingerprint (0 for the first): the
    #: fingerprint and occurrence identify the start in the journal.
    occurrence: int
    run_id: str | None
    status: str
    error: str | None
    error_code: str | None
    _request_id: str | int | None = field(repr=False)
    attempts: int
    polls: int
    poll_failures: int
    _sent: float | None = field(repr=False)
    _submitted: float | None = field(repr=False)
    _finished: float | None = field(repr=False)
    run: Run | None
    #: The journal's id of the row (with a journal).
    journal_id: int | None = field(repr=False)

    def __init__(
        self,
        key: Any,
        position: int,
        fingerprint: str,
        occurrence: int = 0,
        run_id: str | None = None,
        status: str = NOT_SUBMITTED,
        error: str | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        attempts: int = 0,
        polls: int = 0,
        poll_failures: int = 0,
        sent_at: datetime | None = None,
        submitted_at: datetime | None = None,
        finished_at: datetime | None = None,
        run: Run | None = None,
        journal_id: int | None = None,
    ) -> None:
        self.key = key
        self.position = position
        self.fingerprint = fingerprint
        self.occurrence = occurrence
        self.run_id = run_id
        self.status = status
        self.error = error
        self.error_code = error_code
        self.request_id = request_id  # the property below
        self.attempts = attempts
        self.polls = polls
        self.poll_failures = poll_failures
        self._sent = _seconds(sent_at)
        self._submitted = _seconds(submitted_at)
        self._finished = _seconds(finished_at)
        self.run = run
        self.journal_id = journal_id

    @property
    def key_text(self) -> str:
        """Deprecated: the key as the journal writes it (``journal.encode_key(row.key)``)."""
        warnings.warn(
            "RowState.key_text is deprecated (the row no longer keeps it): use "
            "plextera_data.journal.encode_key(row.key)",
            DeprecationWarning,
            stacklevel=2,
        )
        return encode_key(self.key)

    @property
    def request_id(self) -> str | None:
        """The ``X-Request-Id`` of this row's last start (or the one an API error named)."""
        value = self._request_id
        return f"pxd_{value:032x}" if type(value) is int else value  # type: ignore[return-value]

    @request_id.setter
    def request_id(self, value: str | None) -> None:
        # The library's own ids (``pxd_`` + 32 hex digits) are kept as their 128-bit number:
        # half the bytes of the string, and a batch holds one per row.
        if isinstance(value, str) and _OWN_REQUEST_ID.fullmatch(value):
            self._request_id = int(value[4:], 16)
        else:
            self._request_id = value

    @property
    def sent_at(self) -> datetime | None:
        """When the last start of this row left (client clock, UTC)."""
        return _instant(self._sent)

    @sent_at.setter
    def sent_at(self, value: datetime | None) -> None:
        self._sent = _seconds(value)

    @property
    def submitted_at(self) -> datetime | None:
        """The ``createdAt`` of this row's run (UTC)."""
        return _instant(self._submitted)

    @submitted_at.setter
    def submitted_at(self, value: datetime | None) -> None:
        self._submitted = _seconds(value)

    @property
    def finished_at(self) -> datetime | None:
        """When this row's run ended: its ``completedAt`` (UTC), else when it was seen ended."""
        return _instant(self._finished)

    @finished_at.setter
    def finished_at(self, value: datetime | None) -> None:
        self._finished = _seconds(value)


_OWN_REQUEST_ID = re.compile(r"pxd_[0-9a-f]{32}")


def _seconds(value: datetime | None) -> float | None:
    """An instant as POSIX seconds (a naive datetime is taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _instant(seconds: float | None) -> datetime | None:
    """POSIX seconds back as an aware UTC datetime (exact to the microsecond)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``: how an exception is kept in a row's ``error``."""
    return f"{type(exc).__name__}: {exc}"


def error_code(exc: BaseException) -> str:
    """The vendor's error code of an API error, else the exception's type name."""
    code = exc.code if isinstance(exc, APIStatusError) else None
    return code or type(exc).__name__


class _Group:
    """A failure group being counted (see :class:`~plextera_data.progress.FailureGroup`)."""

    __slots__ = ("count", "keys", "message", "run_id")

    def __init__(self) -> None:
        self.count = 0
        self.keys: list[Any] = []
        self.message = ""
        self.run_id: str | None = None


class Ledger:
    """The rows of one batch and their journal; the one writer of row state.

    ``rows`` are in input order and ``index`` is the input frame's index. With a ``journal``
    (and the ``journal_batch_id`` of the batch recorded in it), every change is written to it.
    """

    def __init__(
        self,
        rows: list[RowState],
        index: pd.Index,
        *,
        workflow_id: str,
        journal: Journal | None = None,
        journal_batch_id: int | None = None,
        changed_rows: Sequence[Any] = (),
    ) -> None:
        self.rows = rows
        self.index = index
        self.workflow_id = workflow_id
        self.journal = journal
        self.journal_batch_id = journal_batch_id
        #: Keys of rows that differ from what the journal says was sent for them (not re-sent).
        self.changed_rows: list[Any] = list(changed_rows)
        self._statuses: Counter[str] = Counter(r.status for r in rows)
        self._groups: dict[tuple[str, str | None], _Group] = {}
        self._grouped: dict[int, tuple[str, str | None]] = {}  # position -> its group
        self._failing_polls: set[int] = set()  # positions
        self._by_key: dict[Any, RowState] | None = None
        self._by_run: dict[str, RowState] | None = None
        #: Rows accepted by the API, in the order they were (see :meth:`accepted_since`).
        self._accepted: list[RowState] = []
        # fingerprint -> next free occurrence; counted when first needed (a row re-sent with new
        # content), as a dict of every row's fingerprint is a large part of a row's memory.
        self._occurrences: Counter[str] | None = None
        self._new_identity: set[int] = set()  # positions whose fingerprint the journal lacks
        for row in rows:
            self._regroup(row)

    # ------------------------------------------------------------------ reading

    def row(self, key: Any) -> RowState:
        """The :class:`RowState` of the row with index value ``key``."""
        if self._by_key is None or len(self._by_key) != len(self.rows):
            self._by_key = {r.key: r for r in self.rows}
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"No row with key {key!r} in this batch") from None

    def row_for_run(self, run_id: str) -> RowState | None:
        """The row whose run is ``run_id``, if any."""
        if self._by_run is None:
            self._by_run = {r.run_id: r for r in self.rows if r.run_id is not None}
        return self._by_run.get(run_id)

    def _index_run(self, row: RowState) -> None:
        if self._by_run is not None and row.run_id is not None:
            self._by_run[row.run_id] = row

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, most common first."""
        return {status: n for status, n in self._statuses.most_common() if n}

    def count(self, *statuses: str) -> int:
        """Rows in any of ``statuses``."""
        return sum(self._statuses[s] for s in statuses)

    @property
    def unsent(self) -> int:
        """Rows not accepted yet that submission may still send (not sent, or in flight)."""
        return self._statuses[NOT_SUBMITTED] + self._statuses[SUBMITTING]

    def pending_poll(self) -> list[RowState]:
        """Rows that have a run whose status is not terminal, in input order."""
        return [r for r in self.rows if _pollable(r)]

    def accepted_since(self, mark: int) -> tuple[list[RowState], int]:
        """Rows accepted since ``mark`` (0: since the ledger was made) and the next mark; a
        poller follows a submission with it without scanning every row."""
        rows = self._accepted[mark:]
        return [r for r in rows if _pollable(r)], len(self._accepted)

    @property
    def runs(self) -> list[Run]:
        """The latest model of each row's run, in input order (rows without a run left out);
        finished runs come from the journal when there is one."""
        return [Run.from_dict(raw) for raw, _ in self.raw_runs()]

    def run_of(self, row: RowState) -> Run | None:
        """``row``'s latest run: in memory while it runs, from the journal once it ended."""
        if row.run is not None or row.run_id is None:
            return row.run
        if self.journal is None or self.journal_batch_id is None:
            return None
        for _, raw in self.journal.final_runs(self.journal_batch_id, [row.run_id]):
            return Run.from_dict(raw)
        return None

    def raw_runs(self, chunk: int = 500) -> Iterator[tuple[dict[str, Any], Any]]:
        """``(run JSON, row key)`` of every row's latest run, in input order, ``chunk`` rows at
        a time: finished runs read from the journal, the others from memory."""
        for part in self.raw_run_chunks(chunk):
            for _, raw, key in part:
                yield raw, key

    def raw_run_chunks(self, chunk: int = 500) -> Iterator[list[tuple[str, dict[str, Any], Any]]]:
        """``(run id, run JSON, row key)`` of the latest runs of ``chunk`` rows at a time, in
        input order: finished runs read from the journal, the others (running, as last seen)
        from memory. Rows without a run, or whose run was not fetched yet, give none."""
        for start in range(0, len(self.rows), chunk):
            part = [r for r in self.rows[start : start + chunk] if r.run_id is not None]
            stored: dict[str, dict[str, Any]] = {}
            if self.journal is not None and self.journal_batch_id is not None:
                wanted = [r.run_id for r in part if r.run is None and r.run_id is not None]
                stored = dict(self.journal.final_runs(self.journal_batch_id, wanted))
            found: list[tuple[str, dict[str, Any], Any]] = []
            for row in part:
                assert row.run_id is not None
                if row.run is not None:
                    found.append((row.run_id, row.run.raw, row.key))
                elif row.run_id in stored:
                    found.append((row.run_id, stored[row.run_id], row.key))
            if found:
                yield found

    @property
    def row_keys(self) -> dict[str, Any]:
        """``run_id -> row key`` for every row with a run."""
        return {r.run_id: r.key for r in self.rows if r.run_id is not None}

    def status_frame(self) -> pd.DataFrame:
        """One row per input row (same index, same order): ``run_id``, ``status``, ``error``,
        ``request_id``, ``attempts``, ``submitted_at``, ``finished_at`` (UTC) and ``polls``."""
        rows = self.rows
        return pd.DataFrame(
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

    def snapshot(self, **extra: Any) -> Snapshot:
        """The counts and failure groups as a :class:`~plextera_data.progress.Snapshot`;
        ``extra`` fills the fields the ledger does not know (``phase``, ``elapsed``,
        ``pacing``)."""
        s = self._statuses
        running = len(self.rows) - sum(
            s[k]
            for k in (*LOCAL_STATUSES, "COMPLETED", "FAILED", "CLOSED")
            if k in s  # no new keys in the counter
        )
        groups = tuple(
            FailureGroup(kind, code, g.count, tuple(g.keys), g.message, g.run_id)
            for (kind, code), g in self._groups.items()
            if g.count
        )
        recent = tuple(
            FailureNote(g.keys[-1] if g.keys else None, g.run_id, g.message)
            for g in self._groups.values()
            if g.count
        )
        journal = self.journal.path.name if self.journal is not None else None
        return Snapshot(
            total=len(self.rows),
            not_submitted=s[NOT_SUBMITTED],
            submitting=s[SUBMITTING],
            uncertain=s[SUBMISSION_UNCERTAIN],
            submit_failed=s[SUBMISSION_FAILED],
            running=running,
            completed=s["COMPLETED"],
            failed=s["FAILED"],
            closed=s["CLOSED"],
            poll_errors=len(self._failing_polls),
            recent_failures=recent[-5:],
            failures=groups,
            workflow_id=self.workflow_id,
            journal=journal,
            **extra,
        )

    # ------------------------------------------------------------------ submission

    def mark_sending(self, row: RowState, request_id: str, fingerprint: str) -> None:
        """A start for ``row`` is about to leave with ``request_id`` (one more attempt). Await
        :meth:`flush` before sending: the mark must be on disk first."""
        row.attempts += 1
        row.request_id = request_id
        sent_at = datetime.now(UTC)
        row.sent_at = sent_at
        if fingerprint != row.fingerprint:  # new content for this row (a changed row re-sent)
            row.fingerprint = fingerprint
            row.occurrence = self._next_occurrence(fingerprint)
            self._new_identity.add(row.position)
        self._set(row, SUBMITTING, error=None, code=None)
        if self.journal is None or row.journal_id is None:
            return
        if (
            row.run_id is None
            and row._submitted is None
            and row._finished is None
            and row.position not in self._new_identity
        ):
            # What _save would write for this row, in a statement of its own (once per start).
            self.journal.save_start(
                row.journal_id,
                status=row.status,
                request_id=request_id,
                attempts=row.attempts,
                sent_at=sent_at,
            )
        else:
            self._save(row)

    def requeue(self, row: RowState, exc: BaseException) -> None:
        """The start was refused in a way that proves no run exists (a 429, a connection never
        opened): the row goes back to ``NOT_SUBMITTED`` to be sent again."""
        self._set(row, NOT_SUBMITTED, error=describe_error(exc), code=error_code(exc))
        self._save_soon(row)

    def refuse(self, row: RowState, exc: BaseException, *, message: str | None = None) -> None:
        """The API refused the start (no run exists): ``SUBMISSION_FAILED``."""
        self._flag(row, SUBMISSION_FAILED, exc, message)

    def mark_uncertain(
        self, row: RowState, exc: BaseException | None, *, message: str | None = None
    ) -> None:
        """The start's outcome is unknown (a run may exist): ``SUBMISSION_UNCERTAIN``."""
        self._flag(row, SUBMISSION_UNCERTAIN, exc, message)

    def _flag(
        self, row: RowState, status: str, exc: BaseException | None, message: str | None
    ) -> None:
        request_id = getattr(exc, "request_id", None)
        if request_id:
            row.request_id = request_id
        text = message or (describe_error(exc) if exc is not None else status)
        self._set(row, status, error=text, code=error_code(exc) if exc is not None else None)
        self._save_soon(row)

    def accept(self, row: RowState, run: Run | RunHead, received_at: datetime) -> None:
        """The API accepted the start and answered ``run``: its id is committed with the
        journal's next commit (the next start's mark, at the latest at the loop's next turn). A
        :class:`RunHead` (the answer read no further than its id, status and ``createdAt``) is
        enough."""
        if not run.id:
            self.mark_uncertain(
                row, None, message="The API accepted the start but its answer had no run id"
            )
            return
        row.run_id = run.id
        # The start's answer says little (PROCESSING, the workflow): not kept, so that a batch
        # of running rows costs no run model each; the first poll brings the run.
        row.run = None
        submitted_at = run.created_at or received_at
        row.submitted_at = submitted_at
        self._set(row, run.status or "PROCESSING", error=None, code=None)
        self._accepted.append(row)
        self._index_run(row)
        if is_terminal(run.status):  # ended already: the answer is its final state
            full = run.run() if isinstance(run, RunHead) else run
            self.record_run(row, full, force_save=True)
        elif self.journal is not None and row.journal_id is not None and row._finished is None:
            # Since mark_sending wrote the row, only these changed (once per start).
            self.journal.save_accepted(
                row.journal_id, run_id=run.id, status=row.status, submitted_at=submitted_at
            )
            self.journal.commit_soon()
        else:
            self._save_soon(row)

    def reset_for_resend(self, row: RowState) -> None:
        """Forget ``row``'s run (if any) so that it can be sent again (``batch.resubmit``)."""
        if self._by_run is not None and row.run_id is not None:
            self._by_run.pop(row.run_id, None)
        row.run_id = None
        row.run = None
        row.submitted_at = None
        row.finished_at = None
        row.poll_failures = 0
        self._failing_polls.discard(row.position)
        self._set(row, NOT_SUBMITTED, error=None, code=None)
        if row.key in self.changed_rows:
            self.changed_rows.remove(row.key)

    def adopt(self, row: RowState, run: Run) -> None:
        """Tie ``run`` (found on the server) to ``row`` as its run: the row is accepted."""
        row.run_id = run.id
        row.run = run
        row.submitted_at = run.created_at
        self._set(row, run.status or "PROCESSING", error=None, code=None)
        self._accepted.append(row)
        self._index_run(row)
        self.record_run(row, run, force_save=True)

    def _next_occurrence(self, fingerprint: str) -> int:
        if self._occurrences is None:
            self._occurrences = Counter()
            for row in self.rows:
                if row.occurrence >= self._occurrences[row.fingerprint]:
                    self._occurrences[row.fingerprint] = row.occurrence + 1
        occurrence = self._occurrences[fingerprint]
        self._occurrences[fingerprint] = occurrence + 1
        return occurrence

    # ------------------------------------------------------------------ polling

    def record_run(self, row: RowState, run: Run, *, force_save: bool = False) -> bool:
        """Apply a fetched run to its row; returns True if the status changed.

        A change is journaled; a terminal run gets ``finished_at`` (the run's ``completedAt``
        if given) and its final JSON is written to the journal once.
        """
        row.run = run
        if row.poll_failures:
            row.poll_failures = 0
            self._failing_polls.discard(row.position)
        if row.run_id is None and run.id:
            row.run_id = run.id
        status = run.status
        changed = status is not None and status != row.status
        if changed:
            assert status is not None
            error = code = None
            if run.error is not None:
                error = ": ".join(t for t in (run.error.code, run.error.message) if t) or None
                code = run.error.code
            self._set(row, status, error=error, code=code)
        elif row.error is not None and row.status not in LOCAL_STATUSES and run.error is None:
            row.error = None  # a poll error that has passed
            self._regroup(row)
        terminal_now = is_terminal(status) and row.finished_at is None
        if terminal_now:
            row.finished_at = run.completed_at or datetime.now(UTC)
            if self.journal is not None and self.journal_batch_id is not None and run.id:
                self.journal.save_final_run(self.journal_batch_id, run.id, run.raw)
        if is_terminal(status) and self.journal is not None:
            row.run = None  # the final JSON lives in the journal, not in memory
        if changed or terminal_now or force_save:
            self._save_soon(row)
        return changed

    def record_poll(self, row: RowState) -> None:
        """One more GET for ``row``'s run was answered or failed."""
        row.polls += 1

    def record_poll_error(self, row: RowState, exc: BaseException, *, failing: bool) -> None:
        """A GET for this row's run failed: keep the row, remember the error; ``failing``: the
        poller gave up retrying soon (the row counts as "failing to poll")."""
        row.poll_failures += 1
        row.error = str(exc)
        if failing:
            self._failing_polls.add(row.position)
            row.error_code = error_code(exc)
        self._regroup(row)

    # ------------------------------------------------------------------ persistence

    def _save(self, row: RowState) -> None:
        if self.journal is None or row.journal_id is None:
            return
        identity = None
        if row.position in self._new_identity:
            self._new_identity.discard(row.position)
            identity = (row.fingerprint, row.occurrence)
        self.journal.save_row(
            row.journal_id,
            identity=identity,
            run_id=row.run_id,
            status=row.status,
            error=row.error,
            error_code=row.error_code,
            request_id=row.request_id,
            attempts=row.attempts,
            sent_at=row.sent_at,
            submitted_at=row.submitted_at,
            finished_at=row.finished_at,
        )

    def _save_soon(self, row: RowState) -> None:
        self._save(row)
        if self.journal is not None:
            self.journal.commit_soon()

    def save_all(self, rows: Iterable[RowState], *, identity: bool = False) -> None:
        """Write these rows' state now (committed by :meth:`commit`); ``identity``: their
        fingerprint and occurrence too."""
        for row in rows:
            if identity:
                self._new_identity.add(row.position)
            self._save(row)

    async def flush(self) -> None:
        """Commit the journal's pending writes (shared by every writer of this loop turn)."""
        if self.journal is not None:
            await self.journal.flush()

    def commit(self) -> None:
        """Commit the journal's pending writes now."""
        if self.journal is not None:
            self.journal.commit()

    def commit_quietly(self) -> None:
        """:meth:`commit`, for clean-up paths where a journal error must not hide another."""
        with contextlib.suppress(PlexteraError):
            self.commit()

    # ------------------------------------------------------------------ state changes

    def _set(self, row: RowState, status: str, *, error: str | None, code: str | None) -> None:
        if status != row.status:
            self._statuses[row.status] -= 1
            self._statuses[status] += 1
            row.status = sys.intern(status)  # one string per status, not one per row
        row.error = error
        row.error_code = code
        self._regroup(row)

    def _regroup(self, row: RowState) -> None:
        """Keep ``row`` in the failure group its state puts it in (or in none)."""
        kind = _FAILURE_KINDS.get(row.status)
        if kind is None and row.position in self._failing_polls:
            kind = POLL_FAILING
        wanted = None if kind is None else (kind, row.error_code)
        current = self._grouped.get(row.position)
        if current == wanted:
            if wanted is not None:
                group = self._groups[wanted]
                group.message = row.error or group.message
            return
        if current is not None:
            group = self._groups[current]
            group.count -= 1
            if row.key in group.keys:
                group.keys.remove(row.key)
            del self._grouped[row.position]
        if wanted is not None:
            group = self._groups.setdefault(wanted, _Group())
            group.count += 1
            if len(group.keys) < GROUP_KEYS_KEPT:
                group.keys.append(row.key)
            group.message = row.error or kind or ""
            group.run_id = row.run_id
            self._grouped[row.position] = wanted


def _pollable(row: RowState) -> bool:
    status = row.status
    return row.run_id is not None and status not in LOCAL_STATUSES and not is_terminal(status)


def restore(row: RowState, rec: JournalRow) -> None:
    """Give a new ``row`` the state the journal recorded for it (before the ledger is made)."""
    row.journal_id = rec.id
    row.fingerprint = rec.fingerprint
    row.occurrence = rec.occurrence
    row.run_id = rec.run_id
    row.status = sys.intern(rec.status)
    row.error = rec.error
    row.error_code = None if rec.error_code is None else sys.intern(rec.error_code)
    row.request_id = rec.request_id
    row.attempts = rec.attempts
    row.sent_at = rec.sent_at
    row.submitted_at = rec.submitted_at
    row.finished_at = rec.finished_at
    if row.status == SUBMITTING:
        # A start was in flight when the last process stopped: its outcome is unknown.
        row.status = SUBMISSION_UNCERTAIN
        row.error = UNCERTAIN_AFTER_CRASH.format(rid=rec.request_id)


def _utc_column(values: list[datetime | None]) -> Any:
    stamps: Any = values
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).as_unit("us").array


# --------------------------------------------------------------------------- opening


@dataclass
class Opened:
    """A ledger made for a submission: which rows to send, and what the journal already had.

    ``to_send``: positions of the rows to start. ``adopted``: new key -> old key, for rows whose
    request the journal recorded as started under another key (their runs are this batch's now,
    nothing is sent for them). ``changed``: keys of rows that differ from what the journal says
    was sent under their key (not re-sent).
    """

    ledger: Ledger
    to_send: Sequence[int]
    adopted: dict[Any, Any] = field(default_factory=dict)


def _sendable(rec: JournalRow) -> bool:
    return rec.status in (NOT_SUBMITTED, SUBMISSION_FAILED) and not rec.run_id


def _occurrences(fingerprints: Sequence[str]) -> list[int]:
    seen: Counter[str] = Counter()
    out = []
    for fingerprint in fingerprints:
        out.append(seen[fingerprint])
        seen[fingerprint] += 1
    return out


def open_ledger(
    keys: Sequence[Any],
    fingerprints: Sequence[str],
    index: pd.Index,
    *,
    workflow_id: str,
    journal: Journal | None,
    options: dict[str, Any],
) -> Opened:
    """The ledger of a submission of rows ``keys`` (their requests' ``fingerprints``), matched
    against what ``journal`` recorded: a row whose request was started already (same content,
    under its key or another, in any order) gets that start's state and is not sent again."""
    rows = [
        # An integer key equal to the position is the same object: one int per row, not two.
        RowState(
            key=key,
            position=key if type(key) is int and key == i else i,
            fingerprint=fp,
            occurrence=occ,
        )
        for i, (key, fp, occ) in enumerate(
            zip(keys, fingerprints, _occurrences(fingerprints), strict=True)
        )
    ]
    if journal is None:
        return Opened(Ledger(rows, index, workflow_id=workflow_id), range(len(rows)))
    # The keys as the journal writes them: needed while the rows are matched and recorded only.
    key_texts = [encode_key(key) for key in keys]
    recorded = journal.load()
    if recorded is not None and recorded.workflow_id != workflow_id:
        if any(
            rec.run_id or rec.status not in (NOT_SUBMITTED, SUBMISSION_FAILED)
            for rec in recorded.rows
        ):
            journal.close()
            raise JournalError(
                f"The journal {str(journal.path)!r} records a batch of workflow "
                f"{recorded.workflow_id!r}, not {workflow_id!r}. Use another journal file for "
                "another workflow; nothing was sent."
            )
        recorded = None  # no run was ever started: the journal begins a new batch
    if recorded is None:
        batch_id = journal.create_batch(workflow_id, options)
        ids = journal.add_rows(
            batch_id,
            (
                (text, r.position, r.fingerprint, r.occurrence, 0, NOT_SUBMITTED)
                for r, text in zip(rows, key_texts, strict=True)
            ),
        )
        for row, row_id in zip(rows, ids, strict=True):
            row.journal_id = row_id
        journal.commit()
        ledger = Ledger(
            rows, index, workflow_id=workflow_id, journal=journal, journal_batch_id=batch_id
        )
        return Opened(ledger, range(len(rows)))  # every row; a range holds no int per row
    journal.set_options(recorded.id, options)
    return _reopen(rows, key_texts, index, recorded, workflow_id=workflow_id, journal=journal)


def _reopen(
    rows: list[RowState],
    key_texts: list[str],
    index: pd.Index,
    recorded: JournalBatch,
    *,
    workflow_id: str,
    journal: Journal,
) -> Opened:
    """Match a new frame's rows with the starts a journal recorded (see :func:`open_ledger`)."""
    generation = max((rec.generation for rec in recorded.rows), default=0) + 1
    matches = _match(rows, key_texts, recorded.rows)
    next_occurrence: Counter[str] = Counter()
    for rec in recorded.rows:
        next_occurrence[rec.fingerprint] = max(next_occurrence[rec.fingerprint], rec.occurrence + 1)
    to_send: list[int] = []
    adopted: dict[Any, Any] = {}
    changed: list[Any] = []
    new_rows: list[RowState] = []
    renewed: list[RowState] = []  # recorded rows that take new content
    for row in rows:
        match = matches.get(row.position)
        if match is None:
            row.occurrence = next_occurrence[row.fingerprint]
            next_occurrence[row.fingerprint] += 1
            new_rows.append(row)
            to_send.append(row.position)
            continue
        rec, how = match
        fingerprint, key_text = row.fingerprint, key_texts[row.position]
        restore(row, rec)
        if how == "content" and rec.key_text != key_text:
            adopted[row.key] = rec.key
        if how == "key":  # same key, other content
            if not _sendable(rec):
                changed.append(row.key)
                continue
            row.fingerprint = fingerprint
            row.occurrence = next_occurrence[fingerprint]
            next_occurrence[fingerprint] += 1
            renewed.append(row)
        if _sendable(rec):
            to_send.append(row.position)
    assert recorded.id is not None
    ids = journal.add_rows(
        recorded.id,
        (
            (
                key_texts[r.position],
                r.position,
                r.fingerprint,
                r.occurrence,
                generation,
                NOT_SUBMITTED,
            )
            for r in new_rows
        ),
    )
    for row, row_id in zip(new_rows, ids, strict=True):
        row.journal_id = row_id
    new_positions = {r.position for r in new_rows}
    claimed = {r.journal_id for r in rows}
    others = [rec for rec in recorded.rows if rec.id not in claimed]
    journal.claim_rows(
        [
            (r.journal_id, key_texts[r.position], r.position, generation)
            for r in rows
            if r.journal_id is not None and r.position not in new_positions
        ]
        + [(rec.id, rec.key_text, len(rows) + i, rec.generation) for i, rec in enumerate(others)]
    )
    ledger = Ledger(
        rows, index, workflow_id=workflow_id, journal=journal, journal_batch_id=recorded.id
    )
    # Rows whose start was in flight at a crash are uncertain now, on disk too; a row of new
    # content under a recorded key is saved with it.
    ledger.save_all(renewed, identity=True)
    ledger.save_all(
        r for r in rows if r.position not in new_positions and r.status == SUBMISSION_UNCERTAIN
    )
    ledger.commit()
    _note_changed(ledger, changed, journal)
    return Opened(ledger, to_send, adopted)


def _match(
    rows: list[RowState], key_texts: list[str], recorded: list[JournalRow]
) -> dict[int, tuple[JournalRow, str]]:
    """Pair new rows with recorded starts: same key and content first, then same content under
    any key (in order), then same key with other content. Values: ``(record, how)`` with
    ``how`` one of ``"same"``, ``"content"``, ``"key"``."""
    claimed: set[int] = set()
    matches: dict[int, tuple[JournalRow, str]] = {}
    by_key_and_content = {(rec.key_text, rec.fingerprint): rec for rec in recorded}
    for row in rows:
        rec = by_key_and_content.get((key_texts[row.position], row.fingerprint))
        if rec is not None and rec.id not in claimed:
            claimed.add(rec.id)
            matches[row.position] = (rec, "same")
    by_content: dict[str, list[JournalRow]] = {}
    for rec in recorded:
        if rec.id not in claimed:
            by_content.setdefault(rec.fingerprint, []).append(rec)
    for row in rows:
        if row.position in matches:
            continue
        candidates = by_content.get(row.fingerprint)
        while candidates:
            rec = candidates.pop(0)
            if rec.id not in claimed:
                claimed.add(rec.id)
                matches[row.position] = (rec, "content")
                break
    by_key = {}
    for rec in sorted(recorded, key=lambda r: r.generation):
        if rec.id not in claimed:
            by_key[rec.key_text] = rec  # the latest generation's row for a key wins
    for row in rows:
        if row.position in matches:
            continue
        rec = by_key.get(key_texts[row.position])
        if rec is not None and rec.id not in claimed:
            claimed.add(rec.id)
            matches[row.position] = (rec, "key")
    return matches


def _note_changed(ledger: Ledger, changed: list[Any], journal: Journal) -> None:
    if not changed:
        return
    ledger.changed_rows.extend(changed)
    note = (
        "This row differs from the request the journal recorded as sent; it was not re-sent. "
        "batch.resubmit([key]) sends it again (starting another run)."
    )
    for key in changed:
        row = ledger.row(key)
        if row.error is None:
            row.error = note
    shown = ", ".join(repr(k) for k in changed[:5]) + (" ..." if len(changed) > 5 else "")
    warnings.warn(
        f"{len(changed)} rows differ from what the journal {str(journal.path)!r} recorded "
        f"as sent ({shown}); they were not re-sent. See batch.changed_rows; "
        "batch.resubmit(rows=[...]) sends them again, starting another run for each.",
        UserWarning,
        stacklevel=4,
    )


def resume_ledger(journal: Journal, recorded: JournalBatch) -> Ledger:
    """The ledger of the batch ``recorded`` in ``journal`` (rows in the latest frame's order).

    A key that a later submission gave to another start shadows the older start: it is left out
    (with a warning naming its run), as the latest frame has no row for it.
    """
    latest: dict[str, JournalRow] = {}
    for rec in recorded.rows:
        held = latest.get(rec.key_text)
        if held is None or rec.generation > held.generation:
            latest[rec.key_text] = rec
    kept = [rec for rec in recorded.rows if latest[rec.key_text] is rec]
    shadowed = [rec for rec in recorded.rows if latest[rec.key_text] is not rec]
    if shadowed:
        shown = ", ".join(f"{rec.key!r} (run {rec.run_id})" for rec in shadowed[:5])
        warnings.warn(
            f"{len(shadowed)} starts in the journal carry keys that a later submission gave to "
            f"other rows ({shown}); they are not part of this batch.",
            UserWarning,
            stacklevel=3,
        )
    rows: list[RowState] = []
    for position, rec in enumerate(kept):
        row = RowState(key=rec.key, position=position, fingerprint=rec.fingerprint)
        restore(row, rec)
        rows.append(row)
    names = recorded.options.get("index_names") or [None]
    keys = [r.key for r in rows]
    index: pd.Index
    if len(names) > 1:
        index = pd.MultiIndex.from_tuples(keys, names=names)
    else:
        index = pd.Index(keys, name=names[0], tupleize_cols=False)
    ledger = Ledger(
        rows,
        index,
        workflow_id=recorded.workflow_id,
        journal=journal,
        journal_batch_id=recorded.id,
    )
    ledger.save_all(r for r in rows if r.status == SUBMISSION_UNCERTAIN)
    ledger.commit()
    return ledger
