"""Progress display for batches: HTML in notebooks, a line in terminals, periodic text in logs.

A batch call opens one :class:`ProgressReporter` and feeds it :class:`Snapshot` objects on a
heartbeat (:func:`follow`, about four a second); the reporter decides when to redraw (the first
snapshot, each phase change, then whenever what it shows changed, at most every
``min_interval`` seconds: the elapsed time moves every second, so it never looks frozen).

Three reporters, picked by :func:`open_progress`:

* :class:`NotebookReporter`: an HTML block (with a ``text/plain`` twin) shown once and then
  updated in place by its display id. It needs no widget library and no live widget model: a
  saved notebook holds the last state drawn as plain HTML, which JupyterLab, nbconvert, GitHub
  or another machine show as it was, with no "model not found", and which looks the same live
  and saved. It shows a stacked bar (completed, failed, uncertain, running, not yet sent) with
  its legend, the pace and the time left, why the batch is slow (rate limits, backing off, the
  request rate), and the rows that went wrong grouped by kind and error code, each with what to
  do and its full message on demand. Colours are JupyterLab theme variables (4.5:1 contrast on
  the light and dark themes), text keeps the notebook's own colour.
* :class:`TqdmReporter`: one updating line on a terminal (tqdm).
* :class:`TextReporter`: a plain line every ``interval`` seconds (15 by default) and at phase
  changes, for CI logs and other non-TTY output; never a flood.

They share one throttle and one phase rule (:class:`_Throttled`): ``"submitting"`` while rows
are unsent and this call is sending them, ``"polling"`` after, ``"done"`` / ``"stopped"`` at the
end, so the label never flickers between the two engines' snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import sys
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

__all__ = [
    "FailureGroup",
    "FailureNote",
    "NotebookReporter",
    "NullReporter",
    "PacingState",
    "ProgressReporter",
    "Snapshot",
    "TextReporter",
    "TqdmReporter",
    "View",
    "WidgetReporter",
    "follow",
    "format_duration",
    "in_notebook",
    "open_progress",
]


@dataclass(frozen=True)
class FailureNote:
    """One recent failure shown in the progress display."""

    row_key: Any
    run_id: str | None
    error: str


@dataclass(frozen=True)
class FailureGroup:
    """Rows that went wrong the same way: one kind and one error code, counted once.

    ``kind``: ``"submission uncertain"``, ``"submission failed"``, ``"failed"``, ``"closed"``,
    ``"still running"`` or ``"failing to poll"``. ``code``: the vendor's error code
    (``FORBIDDEN``, ``UNSUPPORTED_DOCUMENT``...), else the exception's type name, else ``None``.
    ``row_keys``: the first few rows of the group (at most :data:`GROUP_KEYS_KEPT`), ``count``
    all of them. ``message``: the full message of the group's latest row; ``run_id`` its run.
    """

    kind: str
    code: str | None
    count: int
    row_keys: tuple[Any, ...] = ()
    message: str = ""
    run_id: str | None = None


#: Row keys a :class:`FailureGroup` keeps (its ``count`` counts all of them).
GROUP_KEYS_KEPT = 5


@dataclass(frozen=True)
class PacingState:
    """How the batch's requests are paced right now (from its :class:`~plextera_data.pacing.Pacer`).

    ``paused_for``: seconds left of a pause after a 429 (0: none); ``rate_limited``: 429s so far;
    ``limit`` / ``max_in_flight``: the adaptive cap on requests in flight and its ceiling;
    ``requests_per_second``: answers per second over the last few seconds (``None``: too early);
    ``backing_off``: rows whose polls are spaced out after failed GETs.
    """

    in_flight: int = 0
    limit: int = 0
    max_in_flight: int = 0
    paused_for: float = 0.0
    rate_limited: int = 0
    requests_per_second: float | None = None
    backing_off: int = 0

    @property
    def slowed(self) -> bool:
        """True when the API's answers hold the batch back (a pause, a cap below its ceiling,
        or polls backing off)."""
        return self.paused_for > 0 or self.limit < self.max_in_flight or self.backing_off > 0


@dataclass(frozen=True)
class Snapshot:
    """Where a batch stands. Counts add up to ``total``.

    ``not_submitted``: rows not yet sent; ``submitting``: POST in flight; ``uncertain``: a start
    whose outcome is unknown ("submission uncertain"); ``submit_failed``: a start the API refused;
    ``running``: accepted, not terminal; ``completed`` / ``failed`` / ``closed``: terminal.
    ``poll_errors``: rows whose GETs failed several times in a row ("failing to poll").
    ``elapsed`` is in seconds since the batch (or this wait) started. ``phase`` is
    ``"submitting"`` while rows are being sent, ``"polling"`` after, ``"done"`` or ``"stopped"``
    at the end. ``failures`` groups the rows that went wrong by kind and error code;
    ``workflow_id`` and ``journal`` (its file name) say which batch this is; ``pacing`` why it
    may be slow.
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
    failures: Sequence[FailureGroup] = field(default_factory=tuple)
    workflow_id: str | None = None
    journal: str | None = None
    pacing: PacingState | None = None

    @property
    def finished(self) -> int:
        """Rows with a terminal status."""
        return self.completed + self.failed + self.closed

    @property
    def waiting(self) -> int:
        """Rows not yet accepted by the API (not sent, or being sent)."""
        return self.not_submitted + self.submitting

    def counts(self) -> dict[str, int]:
        """The non-zero counts per status, in display order (completed first)."""
        pairs = (
            ("completed", self.completed),
            ("failed", self.failed),
            ("closed", self.closed),
            ("running", self.running),
            ("not yet submitted", self.waiting),
            ("submission uncertain", self.uncertain),
            ("submission failed", self.submit_failed),
        )
        return {name: count for name, count in pairs if count}


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


# --------------------------------------------------------------------------- what a display shows


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1m 15s"``; ``3725`` -> ``"1h 02m"``; ``None`` -> ``"?"``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class _Throughput:
    """Runs finished per minute over a sliding window, and the time left at that pace.

    The window starts at the first snapshot in which runs finished, not at the first snapshot:
    a display opened on a batch already under way (``batch.wait()`` after ``wait=False``, a
    resumed journal) finds the runs that ended while nobody polled all at once, and those are a
    backlog, not a pace (six of them found within 30 ms read as 13,813 runs/min). No pace is
    given until the window spans ``min_span`` seconds.
    """

    def __init__(self, window: float = 120.0, min_span: float = 1.0) -> None:
        self.window = window
        self.min_span = min_span
        self._points: deque[tuple[float, int]] = deque()
        self._anchored = False

    def add(self, snapshot: Snapshot) -> None:
        point = (snapshot.elapsed, snapshot.finished)
        if not self._anchored:
            if self._points and point[1] > self._points[0][1]:
                self._anchored = True  # the first runs seen finished: the window starts here
            self._points.clear()
            self._points.append(point)
            return
        if self._points[-1][0] >= point[0]:
            self._points[-1] = (self._points[-1][0], point[1])
        else:
            self._points.append(point)
        while len(self._points) > 2 and point[0] - self._points[1][0] >= self.window:
            self._points.popleft()

    def per_minute(self) -> float | None:
        if len(self._points) < 2:
            return None
        (t0, n0), (t1, n1) = self._points[0], self._points[-1]
        if t1 - t0 < max(self.min_span, 1e-9):
            return None
        return max(0.0, (n1 - n0) / (t1 - t0) * 60.0)

    def eta(self, snapshot: Snapshot) -> float | None:
        left = snapshot.total - snapshot.finished - snapshot.submit_failed - snapshot.uncertain
        if left <= 0:
            return 0.0
        rate = self.per_minute()
        if not rate:
            return None
        return left / rate * 60.0


#: The bar's parts: name -> fill colour, a JupyterLab theme variable with a fallback for front
#: ends that define none. Each keeps 4.5:1 against the page on the dark theme and at least the
#: 3:1 of non-text parts on the light one (tests/test_progress.py reads the installed themes).
COLOURS = {
    "completed": "var(--jp-success-color0, #1b5e20)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "uncertain": "var(--jp-warn-color0, #e65100)",
    "running": "var(--jp-brand-color1, #1976d2)",
    "not yet sent": "var(--jp-ui-font-color2, #757575)",
}
#: Muted text (the pace line): the theme's secondary font colour; unset (inherited) elsewhere.
MUTED = "var(--jp-ui-font-color2)"

#: Phases that end a call.
ENDED = frozenset({"done", "stopped", "submitted"})

#: What to do about each kind of failure group, code in backticks; ``{rows}`` is the group's
#: rows as a Python list when all are known, else a query that selects them (``{status}``).
ACTIONS = {
    "submission uncertain": (
        "a run may exist: `batch.reconcile()` finds the runs that were created and sends the "
        "rows proven unsent; `batch.resubmit({rows})` sends them again regardless"
    ),
    "submission failed": "the API refused the start: fix the cause, then `batch.resubmit({rows})`",
    "failed": "`batch.status.query(\"status == 'FAILED'\")` lists them with their errors",
    "closed": "`batch.status.query(\"status == 'CLOSED'\")` lists them",
    "still running": "still running on the server: `batch.wait()` goes on waiting",
    "failing to poll": "their GETs keep failing; polling goes on: see `batch.status`",
}
_GROUP_STATUS = {
    "submission uncertain": "SUBMISSION_UNCERTAIN",
    "submission failed": "SUBMISSION_FAILED",
}


@dataclass(frozen=True)
class Segment:
    """One part of the stacked bar: a name, its rows, its fill colour (CSS)."""

    name: str
    count: int
    colour: str


@dataclass(frozen=True)
class BarState:
    """The stacked bar: ``segments`` add up to ``total``; ``value`` / ``max`` as a progress bar's
    (rows finished, all rows)."""

    total: int
    finished: int
    segments: tuple[Segment, ...]

    @property
    def value(self) -> int:
        return self.finished

    @property
    def max(self) -> int:
        return self.total

    def counts(self) -> dict[str, int]:
        """Segment name -> rows."""
        return {segment.name: segment.count for segment in self.segments}


def _bar(snapshot: Snapshot) -> BarState:
    parts = (
        ("completed", snapshot.completed),
        ("failed", snapshot.failed + snapshot.closed + snapshot.submit_failed),
        ("uncertain", snapshot.uncertain),
        ("running", snapshot.running),
        ("not yet sent", snapshot.waiting),
    )
    segments = tuple(
        Segment(name, count, COLOURS[name])
        for name, count in parts
        if count or name != "uncertain"  # the four main parts always, so the legend stays put
    )
    return BarState(snapshot.total, snapshot.finished, segments)


def _groups(snapshot: Snapshot) -> tuple[FailureGroup, ...]:
    """The snapshot's failure groups, and the runs still going when a call stopped early.

    For engines that do not group failures, one group per kind from the counts (no codes, no
    rows: their ``recent_failures`` are shown apart).
    """
    groups = list(snapshot.failures)
    if not groups:
        counted = (
            ("submission uncertain", snapshot.uncertain),
            ("submission failed", snapshot.submit_failed),
            ("failed", snapshot.failed),
            ("closed", snapshot.closed),
            ("failing to poll", snapshot.poll_errors),
        )
        groups = [FailureGroup(kind, None, count) for kind, count in counted if count]
    if (
        snapshot.phase == "stopped"
        and snapshot.running
        and not any(g.kind == "still running" for g in groups)
    ):
        groups.append(FailureGroup("still running", None, snapshot.running))
    return tuple(groups)


def _slowdown(pacing: PacingState | None) -> tuple[str, ...]:
    """Why the batch goes slower than it could, in words (empty: it does not)."""
    if pacing is None:
        return ()
    reasons = []
    if pacing.paused_for > 0:
        reasons.append(f"paused {pacing.paused_for:.1f}s after a 429")
    if pacing.rate_limited:
        reasons.append(f"rate-limited {pacing.rate_limited:,} times (429)")
    if pacing.max_in_flight and pacing.limit < pacing.max_in_flight:
        reasons.append(f"{pacing.limit} of {pacing.max_in_flight} requests in flight allowed")
    if pacing.backing_off:
        rows = "row" if pacing.backing_off == 1 else "rows"
        reasons.append(f"backing off: {pacing.backing_off:,} {rows} polled less often")
    if reasons and pacing.requests_per_second is not None:
        reasons.append(f"{pacing.requests_per_second:.1f} requests/s")
    return tuple(reasons)


def _rows_text(group: FailureGroup) -> str:
    shown = ", ".join(str(key) for key in group.row_keys)
    more = group.count - len(group.row_keys)
    if not shown:
        return ""
    word = "row" if group.count == 1 else "rows"
    return f"{word} {shown}" + (f" and {more:,} more" if more > 0 else "")


def action_for(group: FailureGroup) -> str:
    """What to do about a failure group (code in backticks), naming its rows where it can."""
    template = ACTIONS.get(group.kind, "see `batch.status`")
    if group.row_keys and len(group.row_keys) >= group.count:
        rows = repr(list(group.row_keys))
    else:
        status = _GROUP_STATUS.get(group.kind, "")
        rows = f"batch.status.query(\"status == '{status}'\").index"
    return template.format(rows=rows)


def _code_html(text: str) -> str:
    """Escape ``text`` and show its backticked spans as code."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


@dataclass(frozen=True)
class View:
    """What a progress display shows for one snapshot, rendered as text or as HTML.

    ``phase`` is the display's phase (see :class:`_Throttled`), ``rate`` runs finished per
    minute, ``eta`` seconds left at that pace (``None``: not known yet), ``slowdown`` why the
    batch is slow, ``failures`` the rows that went wrong by kind and error code, ``notes`` the
    latest failures of engines that do not group them.
    """

    phase: str
    bar: BarState
    elapsed: float
    rate: float | None = None
    eta: float | None = None
    workflow_id: str | None = None
    journal: str | None = None
    slowdown: tuple[str, ...] = ()
    failures: tuple[FailureGroup, ...] = ()
    notes: tuple[FailureNote, ...] = ()

    @classmethod
    def of(
        cls, snapshot: Snapshot, phase: str, rate: float | None = None, eta: float | None = None
    ) -> View:
        """The view of ``snapshot`` shown in ``phase`` at ``rate`` runs/min, ``eta`` left."""
        return cls(
            phase=phase,
            bar=_bar(snapshot),
            elapsed=snapshot.elapsed,
            rate=rate,
            eta=eta,
            workflow_id=snapshot.workflow_id,
            journal=snapshot.journal,
            slowdown=_slowdown(snapshot.pacing),
            failures=_groups(snapshot),
            notes=tuple(snapshot.recent_failures) if not snapshot.failures else (),
        )

    @property
    def ended(self) -> bool:
        """The call is over (``"done"``, ``"stopped"``, or ``"submitted"`` without waiting)."""
        return self.phase in ENDED

    # ---------------------------------------------------------------- text

    def title(self) -> str:
        """``Plextera batch · incoming-claim · journal claims.plextera.db``."""
        parts = ["Plextera batch"]
        if self.workflow_id:
            parts.append(self.workflow_id)
        if self.journal:
            parts.append(f"journal {self.journal}")
        return " · ".join(parts)

    def pace(self) -> list[str]:
        """Elapsed, runs per minute and time left, as far as known."""
        parts = [f"elapsed {format_duration(self.elapsed)}"]
        if self.rate is not None:
            parts.append(f"{self.rate:,.0f} runs/min")
        if not self.ended and self.eta is not None:
            parts.append(f"about {format_duration(self.eta)} left")
        return parts

    def line(self) -> str:
        """One plain line: ``polling: 12/40 finished (completed 10, ...) | ... | elapsed 9s``
        (counts without thousands separators, for logs that are searched)."""
        bar = self.bar
        counts = ", ".join(f"{s.name} {s.count}" for s in bar.segments if s.count)
        parts = [f"{self.phase}: {bar.finished}/{bar.total} finished"]
        if counts:
            parts[0] += f" ({counts})"
        parts.extend(self.pace())
        if self.slowdown:
            parts.append("slowed: " + ", ".join(self.slowdown))
        return " | ".join(parts)

    def failure_lines(self) -> list[str]:
        """One line per failure group (count, kind, code, first rows), then its action."""
        lines = []
        for group in self.failures:
            head = f"{group.count:,} {group.kind}"
            if group.code:
                head += f" {group.code}"
            rows = _rows_text(group)
            lines.append(f"{head}: {rows}" if rows else head)
            lines.append(f"  -> {action_for(group)}")
            if group.message:
                lines.append(f"  latest: {group.message}")
        for note in self.notes:
            lines.append(f"latest failure: row {note.row_key}: {note.error}")
        return lines

    def text(self) -> str:
        """The whole display as plain text (the ``text/plain`` twin of the HTML)."""
        lines = [self.title(), self.line(), *self.failure_lines()]
        return "\n".join(lines)

    # ---------------------------------------------------------------- HTML

    def html(self, updated: str | None = None) -> str:
        """The display as one HTML block; ``updated`` (a clock time) is said while running."""
        bar = self.bar
        esc = html.escape
        title = "<b>Plextera batch</b>"
        if self.workflow_id:
            title += f" &middot; <code>{esc(self.workflow_id)}</code>"
        if self.journal:
            title += f" &middot; journal <code>{esc(self.journal)}</code>"
        pace = self.pace()
        if updated and not self.ended:
            pace.append(f"updated {esc(updated)}")
        slow = ""
        if self.slowdown:
            slow = f"<div>Slowed by the API: {esc(', '.join(self.slowdown))}</div>"
        return (
            '<div class="plextera-progress" style="line-height:1.5;max-width:48em;'
            'margin:2px 0">'
            f"<div>{title}</div>"
            f"<div><b>{esc(self.phase)}</b> &middot; {bar.finished:,} of {bar.total:,} "
            "finished</div>"
            f"{_bar_html(bar)}{_legend_html(bar)}"
            f'<div style="color:{MUTED}">{" &middot; ".join(pace)}</div>'
            f"{slow}{_failures_html(self.failures, self.notes)}</div>"
        )


def _bar_html(bar: BarState) -> str:
    label = ", ".join(f"{s.count:,} {s.name}" for s in bar.segments if s.count) or "no rows"
    parts = "".join(
        f'<div title="{segment.count:,} {segment.name}" style="width:'
        f'{100 * segment.count / bar.total:.3f}%;background:{segment.colour}"></div>'
        for segment in bar.segments
        if segment.count and bar.total
    )
    return (
        f'<div role="img" aria-label="{html.escape(label)}" style="display:flex;height:12px;'
        "width:100%;margin:4px 0;border:1px solid var(--jp-border-color1, #bdbdbd);"
        f'border-radius:3px;overflow:hidden">{parts}</div>'
    )


def _legend_html(bar: BarState) -> str:
    items = "".join(
        '<span style="margin-right:1.2em;white-space:nowrap">'
        f'<span style="display:inline-block;width:0.8em;height:0.8em;margin-right:0.3em;'
        f'vertical-align:-0.05em;border-radius:2px;background:{segment.colour}"></span>'
        f"<b>{segment.count:,}</b> {html.escape(segment.name)}</span>"
        for segment in bar.segments
    )
    return f"<div>{items}</div>"


def _message_html(summary: str, message: str) -> str:
    """A full message, shown on demand under ``summary`` (both HTML-escaped by the caller)."""
    return (
        f"<details><summary>{summary}</summary>"
        '<div style="white-space:pre-wrap;overflow-wrap:anywhere;margin:2px 0 4px 1em">'
        f"{message}</div></details>"
    )


def _failures_html(failures: Sequence[FailureGroup], notes: Sequence[FailureNote]) -> str:
    if not failures and not notes:
        return ""
    esc = html.escape
    items = []
    for group in failures:
        head = f"<b>{group.count:,}</b> {esc(group.kind)}"
        if group.code:
            head += f" <code>{esc(group.code)}</code>"
        rows = _rows_text(group)
        if rows:
            head += f": {esc(rows)}"
        detail = ""
        if group.message:
            run = f" (run <code>{esc(group.run_id)}</code>)" if group.run_id else ""
            detail = _message_html(f"latest message{run}", esc(group.message))
        items.append(f"<li>{head}<br>&rarr; {_code_html(action_for(group))}{detail}</li>")
    for note in notes:
        run = f" (run <code>{esc(note.run_id)}</code>)" if note.run_id else ""
        summary = f"latest failure: row <code>{esc(str(note.row_key))}</code>{run}"
        items.append(f"<li>{_message_html(summary, esc(note.error))}</li>")
    return (
        "<div><b>Rows that did not complete</b>"
        f'<ul style="margin:2px 0 0 0;padding-left:1.4em">{"".join(items)}</ul></div>'
    )


# --------------------------------------------------------------------------- the shared throttle


class _Throttled:
    """What the reporters share: the pace of finished runs, the phase rule and when to draw.

    The phase shown is the snapshot's, except that once this call has been seen submitting it
    says ``"submitting"`` for as long as rows are unsent, whatever engine fed the snapshot (no
    flicker between a submitter's and a poller's snapshots), and ``"polling"`` once none is.

    A reporter draws the first snapshot, each phase change, and otherwise a snapshot whose text
    differs from the last one drawn, at most once per ``min_interval`` seconds (the elapsed time
    changes every second, so a display redraws at least that often while it runs).
    """

    def __init__(self, min_interval: float, clock: Callable[[], float]) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._last_draw: float | None = None
        self._sending = False
        self._throughput = _Throughput()
        #: The view drawn last (``None`` before the first draw).
        self.view: View | None = None
        #: How many times the reporter drew.
        self.draws = 0
        self.closed = False

    def _phase(self, snapshot: Snapshot) -> str:
        phase = snapshot.phase
        if phase == "submitting":
            self._sending = True
        if phase not in ("submitting", "polling"):
            return phase
        return "submitting" if self._sending and snapshot.waiting > 0 else "polling"

    def _view(self, snapshot: Snapshot) -> View:
        throughput = self._throughput
        return View.of(
            snapshot, self._phase(snapshot), throughput.per_minute(), throughput.eta(snapshot)
        )

    def _render(self, view: View, final: bool) -> None:
        raise NotImplementedError

    def _draw(self, view: View, final: bool = False) -> None:
        try:
            self._render(view, final)
        except OSError:  # the output went away (a closed pipe: `... 2>&1 | head`): stop drawing
            self.closed = True
            return
        self.view = view
        self.draws += 1
        self._last_draw = self._clock()

    def update(self, snapshot: Snapshot) -> None:
        """Take a snapshot; draw it if it is due (see the class docstring)."""
        if self.closed:
            return
        self._throughput.add(snapshot)
        view = self._view(snapshot)
        last = self.view
        if (
            last is None
            or self._last_draw is None
            or view.phase != last.phase
            or (self._clock() - self._last_draw >= self.min_interval and view.text() != last.text())
        ):
            self._draw(view)

    def close(self, snapshot: Snapshot) -> None:
        """Draw the final snapshot (always) and stop drawing."""
        if self.closed:
            return
        self._throughput.add(snapshot)
        self._draw(self._view(snapshot), final=True)
        self.closed = True


# --------------------------------------------------------------------------- text (logs, CI)


class TextReporter(_Throttled):
    """Periodic plain lines for non-TTY output (CI logs, files): one line every ``interval``
    seconds at most, plus one at each phase change and one at the end (with one more naming
    the failure groups, if any)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "plextera-data: ",
    ) -> None:
        super().__init__(interval, clock)
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.lines_written = 0

    def _write(self, line: str) -> None:
        self.stream.write(self.prefix + line + "\n")
        self.lines_written += 1

    def _render(self, view: View, final: bool) -> None:
        self._write(view.line())
        if final and view.failures:
            kinds = "; ".join(
                f"{g.count:,} {g.kind}" + (f" {g.code}" if g.code else "") for g in view.failures
            )
            self._write(f"did not complete: {kinds} (see batch.status)")
        self.stream.flush()


# --------------------------------------------------------------------------- terminal (tqdm)


class TqdmReporter(_Throttled):
    """A single updating line on a terminal (tqdm): phase, finished of total, the counts, the
    pace and the time left (this module's estimate, the same as the other displays'), and why
    the batch is slow."""

    def __init__(
        self,
        total: int,
        stream: IO[str] | None = None,
        *,
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from tqdm.std import tqdm

        super().__init__(min_interval, clock)
        self.bar = tqdm(
            total=total,
            file=stream if stream is not None else sys.stderr,
            unit="run",
            desc="plextera",
            dynamic_ncols=True,
            mininterval=0,
            leave=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}",
        )

    def _render(self, view: View, final: bool) -> None:
        bar = self.bar
        if bar.total != view.bar.total:
            bar.total = view.bar.total
        bar.n = view.bar.finished
        bar.set_description_str(view.phase, refresh=False)
        counts = [f"{s.name} {s.count:,}" for s in view.bar.segments if s.count]
        parts = [", ".join(counts), *view.pace()]
        if view.slowdown:
            parts.append("slowed: " + ", ".join(view.slowdown))
        bar.set_postfix_str(" · ".join(part for part in parts if part), refresh=False)
        bar.refresh()
        if final:
            bar.close()


# --------------------------------------------------------------------------- notebook


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic notebook, VS Code), not a plain IPython."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    if shell is None:
        return False
    if getattr(shell, "kernel", None) is not None:
        return True
    config = getattr(shell, "config", None)
    try:
        return config is not None and "IPKernelApp" in config
    except TypeError:  # pragma: no cover - an exotic config object
        return False


class NotebookReporter(_Throttled):
    """The notebook display: one HTML output (with a ``text/plain`` twin), updated in place.

    It is shown at the first draw with ``display_id`` (default: a new one) and then updated by
    that id: no widget model, so nothing to load after a reload, nothing stale in a saved
    notebook, and the same HTML live and saved. A front end shows every output carrying the
    display id, in any cell, updated together. While the batch runs the block says when it was
    last updated: after a page reload it is the state of the notebook's last save, and the kernel
    goes on working (display ``batch`` again once the cell has finished).

    ``display=False`` draws without showing (tests read ``view``, ``html``, ``text`` and
    ``bundles``). ``wall`` gives the clock time written as "updated".
    """

    def __init__(
        self,
        total: int,
        *,
        display: bool = True,
        display_id: str | None = None,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
    ) -> None:
        super().__init__(min_interval, clock)
        self.total = total
        self.display_id = display_id or f"plextera-progress-{uuid.uuid4().hex}"
        self.text = f"Plextera batch: starting, {total:,} rows"
        self.html = f"<div>{html.escape(self.text)}</div>"
        #: Every bundle drawn, in order, when ``display=False`` (tests).
        self.bundles: list[dict[str, str]] = []
        self._display = display
        self._shown = False
        self._wall = wall

    @property
    def bar(self) -> BarState:
        """The stacked bar drawn last."""
        if self.view is None:
            return BarState(self.total, 0, ())
        return self.view.bar

    @property
    def summary(self) -> str:
        """The one-line summary drawn last (as :class:`TextReporter` writes it)."""
        return self.view.line() if self.view is not None else ""

    def bundle(self) -> dict[str, str]:
        """The MIME bundle drawn last: ``text/html`` and its ``text/plain`` twin."""
        return {"text/plain": self.text, "text/html": self.html}

    def _render(self, view: View, final: bool) -> None:
        self.html = view.html(updated=None if final else self._wall())
        self.text = view.text()
        if not self._display:
            self.bundles.append(self.bundle())
            return
        from IPython.display import display, update_display

        if self._shown:
            update_display(self.bundle(), raw=True, display_id=self.display_id)
        else:
            display(self.bundle(), raw=True, display_id=self.display_id)
            self._shown = True

    def show(self) -> None:
        """Show the display again in the current cell, as a new output with the same display id,
        which the front end updates with the others (after a page reload, for instance: the new
        page follows the live display from then on). ``reporter`` as a cell's last line does it.
        """
        from IPython.display import display

        display(self.bundle(), raw=True, display_id=self.display_id)
        self._shown = True

    def _ipython_display_(self) -> None:
        self.show()


class WidgetReporter(NotebookReporter):
    """Deprecated: the notebook display is :class:`NotebookReporter` (plain HTML, no widget)."""

    def __init__(self, total: int, **kwargs: Any) -> None:
        warnings.warn(
            "WidgetReporter is now NotebookReporter (an HTML display, no ipywidgets)",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(total, **kwargs)


# --------------------------------------------------------------------------- choosing one


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def open_progress(
    progress: bool | str | ProgressReporter,
    *,
    total: int,
    stream: IO[str] | None = None,
    display_id: str | None = None,
) -> ProgressReporter:
    """A reporter for ``progress``: ``False`` is silent; ``True`` / ``"auto"`` picks the HTML
    display in a notebook, a single updating line on a TTY, periodic plain lines elsewhere;
    ``"notebook"`` (or ``"widget"``), ``"tty"`` and ``"text"`` force one; an object with
    ``update``/``close`` is used as is.

    ``stream`` (default ``sys.stderr``) is where the terminal and text reporters write;
    ``display_id`` the notebook display's id (pass the same one to show one batch's calls in
    one display, updated together).
    """
    if progress is False or progress is None:
        return NullReporter()
    if not isinstance(progress, (bool, str)):
        return progress
    out = stream if stream is not None else sys.stderr
    mode = "auto" if progress is True else progress.lower()
    if mode not in ("auto", "notebook", "widget", "tty", "text"):
        raise ValueError(
            "progress must be True, False, 'auto', 'notebook', 'tty', 'text' or a reporter; "
            f"got {progress!r}"
        )
    if mode in ("notebook", "widget") or (mode == "auto" and in_notebook()):
        return NotebookReporter(total, display_id=display_id)
    if mode == "tty" or (mode == "auto" and _is_tty(out)):
        try:
            return TqdmReporter(total, out)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return TextReporter(out)
    return TextReporter(out)


# --------------------------------------------------------------------------- the heartbeat

#: Seconds between two snapshots fed to a reporter by :func:`follow`.
HEARTBEAT = 0.25


@contextlib.asynccontextmanager
async def follow(
    reporter: ProgressReporter, snapshot: Callable[[], Snapshot], *, interval: float = HEARTBEAT
) -> AsyncIterator[None]:
    """Feed ``reporter`` a fresh ``snapshot()`` now and every ``interval`` seconds, on the running
    loop, until the block ends (the engines never call the reporter: it reads the batch's state,
    so the display moves while nothing answers). The caller closes the reporter."""

    async def beat() -> None:
        while True:
            reporter.update(snapshot())
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
