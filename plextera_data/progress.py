"""Progress display for batches: a widget in notebooks, a line in terminals, periodic text in logs.

The batch produces :class:`Snapshot` objects; a :class:`ProgressReporter` shows them. Reporters are
fed from the thread that runs the batch's event loop, and rate-limit their own redraws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["FailureNote", "NullReporter", "ProgressReporter", "Snapshot", "open_progress"]


@dataclass(frozen=True)
class FailureNote:
    """One recent failure shown in the progress display."""

    row_key: Any
    run_id: str | None
    error: str


@dataclass(frozen=True)
class Snapshot:
    """Where a batch stands. Counts add up to ``total``.

    ``not_submitted``: rows not yet sent; ``submitting``: POST in flight; ``uncertain``: a start
    whose outcome is unknown ("submission uncertain"); ``submit_failed``: a start the API refused;
    ``running``: accepted, not terminal; ``completed`` / ``failed`` / ``closed``: terminal.
    ``elapsed`` is in seconds since the batch (or this wait) started.
    """

    total: int
    not_submitted: int = 0
    submitting: int = 0
    uncertain: int = 0
    submit_failed: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    closed: int = 0
    poll_errors: int = 0
    elapsed: float = 0.0
    phase: str = "polling"  # "submitting" | "polling" | "done" | "stopped"
    recent_failures: Sequence[FailureNote] = field(default_factory=tuple)

    @property
    def finished(self) -> int:
        """Rows with a terminal status."""
        return self.completed + self.failed + self.closed


class ProgressReporter(Protocol):
    """Shows snapshots. ``update`` may be called often; the reporter limits its redraw rate."""

    def update(self, snapshot: Snapshot) -> None: ...

    def close(self, snapshot: Snapshot) -> None: ...


class NullReporter:
    """The reporter for ``progress=False``: shows nothing."""

    def update(self, snapshot: Snapshot) -> None:
        return None

    def close(self, snapshot: Snapshot) -> None:
        return None


def open_progress(progress: bool | str | ProgressReporter, *, total: int) -> ProgressReporter:
    """A reporter for ``progress``: ``False`` is silent; ``True`` / ``"auto"`` picks a widget in a
    notebook, a single updating line on a TTY, periodic plain lines elsewhere; ``"widget"``,
    ``"tty"`` and ``"text"`` force one; an object with ``update``/``close`` is used as is."""
    if progress is False:
        return NullReporter()
    if not isinstance(progress, (bool, str)):
        return progress
    # The display reporters are implemented in the polling/progress issue.
    return NullReporter()
