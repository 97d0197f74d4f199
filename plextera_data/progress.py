"""Progress display for batches: a widget in notebooks, a line in terminals, periodic text in logs.

The batch produces :class:`Snapshot` objects; a :class:`ProgressReporter` shows them. Reporters are
fed from the thread that runs the batch's event loop (widget updates from other threads are
fragile under ipykernel 7), and rate-limit their own redraws, so ``update`` may be called after
every request.

Three reporters, picked by :func:`open_progress`:

* :class:`WidgetReporter`: an ipywidgets bar, counts per status, throughput, elapsed time, an
  estimate of the time left and the most recent failures. When it closes, its output is replaced
  by a static HTML summary (with a ``text/plain`` twin), so a saved notebook, GitHub or nbconvert
  show a readable result instead of "Error displaying widget: model not found".
* :class:`TqdmReporter`: one updating line on a terminal (tqdm).
* :class:`TextReporter`: a plain line every ``interval`` seconds and at phase changes, for CI logs
  and other non-TTY output; never a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

__all__ = [
    "FailureGroup",
    "FailureNote",
    "NullReporter",
    "PacingState",
    "ProgressReporter",
    "Snapshot",
    "TextReporter",
    "TqdmReporter",
    "WidgetReporter",
    "follow",
    "format_duration",
    "in_notebook",
    "open_progress",
]

WIDGET_HINT = "plextera-data: pip install ipywidgets for a progress widget in notebooks"


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


# --------------------------------------------------------------------------- shared helpers


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


def summary_text(snapshot: Snapshot, rate: float | None = None, eta: float | None = None) -> str:
    """One plain line: phase, finished of total, counts, throughput, elapsed and time left."""
    counts = ", ".join(f"{name} {count}" for name, count in snapshot.counts().items())
    parts = [f"{snapshot.phase}: {snapshot.finished}/{snapshot.total} finished"]
    if counts:
        parts[0] += f" ({counts})"
    if snapshot.poll_errors:
        parts.append(f"{snapshot.poll_errors} failing to poll")
    if rate is not None:
        parts.append(f"{rate:.0f} runs/min")
    parts.append(f"elapsed {format_duration(snapshot.elapsed)}")
    if snapshot.phase not in ("done", "stopped") and eta is not None:
        parts.append(f"left ~{format_duration(eta)}")
    return " | ".join(parts)


_STATUS_COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "closed": "#8d6e63",
    "running": "#1565c0",
    "not yet submitted": "#757575",
    "submission uncertain": "#ef6c00",
    "submission failed": "#c62828",
}


def _counts_html(snapshot: Snapshot) -> str:
    cells = []
    for name, count in snapshot.counts().items():
        colour = _STATUS_COLOURS.get(name, "inherit")
        cells.append(f'<span style="color:{colour}"><b>{count}</b> {html.escape(name)}</span>')
    if snapshot.poll_errors:
        cells.append(
            f'<span style="color:#ef6c00"><b>{snapshot.poll_errors}</b> failing to poll</span>'
        )
    return " &middot; ".join(cells) or "nothing yet"


def _failures_html(failures: Sequence[FailureNote], shown: int = 5) -> str:
    if not failures:
        return ""
    items = []
    for note in list(failures)[-shown:]:
        error = note.error if len(note.error) <= 160 else note.error[:157] + "..."
        items.append(
            f"<li><code>{html.escape(str(note.row_key))}</code> "
            f"<code>{html.escape(str(note.run_id or '-'))}</code>: {html.escape(error)}</li>"
        )
    return (
        '<div style="font-size:90%"><b>Recent failures</b>'
        f'<ul style="margin:2px 0 0 0">{"".join(items)}</ul></div>'
    )


def summary_html(snapshot: Snapshot, rate: float | None = None, eta: float | None = None) -> str:
    """The summary as a small HTML block (what the widget shows, and its static fallback)."""
    pace = [f"elapsed {format_duration(snapshot.elapsed)}"]
    if rate is not None:
        pace.append(f"{rate:.0f} runs/min")
    if snapshot.phase not in ("done", "stopped") and eta is not None:
        pace.append(f"about {format_duration(eta)} left")
    return (
        f"<div><b>Plextera batch</b> &middot; {html.escape(snapshot.phase)} &middot; "
        f"{snapshot.finished} of {snapshot.total} finished<br>"
        f"{_counts_html(snapshot)}<br>"
        f'<span style="color:#757575">{" &middot; ".join(pace)}</span>'
        f"{_failures_html(snapshot.recent_failures)}</div>"
    )


class _Throttled:
    """What the reporters share: they keep the pace of finished runs, and draw the first
    snapshot, each phase change, and otherwise at most once per ``min_interval`` seconds."""

    def __init__(self, min_interval: float, clock: Callable[[], float]) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._last_draw: float | None = None
        self._last_phase: str | None = None
        self._throughput = _Throughput()

    def _draw(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def _drawn(self, phase: str) -> None:
        self._last_draw = self._clock()
        self._last_phase = phase

    def update(self, snapshot: Snapshot) -> None:
        self._throughput.add(snapshot)
        if (
            self._last_draw is None
            or snapshot.phase != self._last_phase
            or self._clock() - self._last_draw >= self.min_interval
        ):
            self._draw(snapshot)


# --------------------------------------------------------------------------- text (logs, CI)


class TextReporter(_Throttled):
    """Periodic plain lines for non-TTY output (CI logs, files): one line every ``interval``
    seconds at most, plus one at each phase change and one at the end."""

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

    def _draw(self, snapshot: Snapshot) -> None:
        line = summary_text(snapshot, self._throughput.per_minute(), self._throughput.eta(snapshot))
        self.stream.write(self.prefix + line + "\n")
        self.stream.flush()
        self.lines_written += 1
        self._drawn(snapshot.phase)

    def close(self, snapshot: Snapshot) -> None:
        self._throughput.add(snapshot)
        self._draw(snapshot)


# --------------------------------------------------------------------------- terminal (tqdm)


class TqdmReporter(_Throttled):
    """A single updating line on a terminal (tqdm): finished of total, counts, pace."""

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
            smoothing=0.1,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}{postfix}]",
        )

    def _draw(self, snapshot: Snapshot) -> None:
        bar = self.bar
        if bar.total != snapshot.total:
            bar.total = snapshot.total
        bar.n = snapshot.finished
        bar.set_description_str(snapshot.phase, refresh=False)
        counts = ", ".join(f"{n} {c}" for n, c in snapshot.counts().items() if n != "completed")
        if snapshot.poll_errors:
            counts += f", {snapshot.poll_errors} failing to poll"
        bar.set_postfix_str(counts.strip(", "), refresh=False)
        bar.refresh()
        self._drawn(snapshot.phase)

    def close(self, snapshot: Snapshot) -> None:
        self._draw(snapshot)
        self.bar.close()


# --------------------------------------------------------------------------- notebook widget


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


class _StaticSummary:
    """What replaces the widget's output when it closes: HTML with a plain-text twin."""

    def __init__(self, text: str, html_text: str) -> None:
        self.text = text
        self.html_text = html_text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.text, "text/html": self.html_text}


class WidgetReporter(_Throttled):
    """An ipywidgets progress display: bar, counts per status, pace, time left, recent failures.

    ``display=False`` builds the widget without showing it (tests inspect ``bar``, ``label`` and
    ``summary``). Redraws at most every ``min_interval`` seconds (and at every phase change).
    """

    def __init__(
        self,
        total: int,
        *,
        display: bool = True,
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import ipywidgets as widgets

        super().__init__(min_interval, clock)
        self.redraws = 0
        self.bar = widgets.IntProgress(
            value=0,
            min=0,
            max=max(total, 1),
            description="starting",
            bar_style="info",
            layout=widgets.Layout(width="60%"),
            style={"description_width": "initial"},
        )
        self.label = widgets.HTML(value=f"<div>0 of {total} finished</div>")
        self.box = _summary_vbox_class()(children=[self.bar, self.label])
        self.box.fallback = _StaticSummary(f"Plextera batch: 0 of {total} finished", "")
        self.summary: str = ""
        self.summary_html: str = ""
        self.closed = False
        self._handle: Any = None
        if display:
            from IPython.display import display as ipython_display

            self._handle = ipython_display(self.box, display_id=True)

    def _draw(self, snapshot: Snapshot, final: bool = False) -> None:
        rate, eta = self._throughput.per_minute(), self._throughput.eta(snapshot)
        self.summary = summary_text(snapshot, rate, eta)
        self.summary_html = summary_html(snapshot, rate, eta)
        self.bar.max = max(snapshot.total, 1)
        self.bar.value = snapshot.finished
        self.bar.description = f"{snapshot.phase} {snapshot.finished}/{snapshot.total}"
        if final:
            bad = snapshot.failed + snapshot.closed + snapshot.submit_failed + snapshot.uncertain
            self.bar.bar_style = "warning" if bad or snapshot.phase == "stopped" else "success"
        self.label.value = self.summary_html
        self.box.fallback = _StaticSummary("Plextera batch " + self.summary, self.summary_html)
        self._drawn(snapshot.phase)
        self.redraws += 1

    def close(self, snapshot: Snapshot) -> None:
        """Draw the final state, then swap the live widget's output for a static summary that
        stays readable in a saved notebook or a front end without a widget manager."""
        self._throughput.add(snapshot)
        self._draw(snapshot, final=True)
        self.closed = True
        if self._handle is not None:
            # A front end that refuses display updates keeps the live widget: not worth failing.
            with contextlib.suppress(Exception):
                self._handle.update(self.box.fallback)


@functools.cache
def _summary_vbox_class() -> type:
    """The widget's container, built at first use so ipywidgets is imported only when needed."""
    import ipywidgets as widgets

    class SummaryVBox(widgets.VBox):
        """A VBox whose display bundle carries a readable text/plain and text/html summary next
        to the widget view, instead of ``VBox(children=...)``."""

        fallback: _StaticSummary | None = None

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            data = super()._repr_mimebundle_(**kwargs)
            if isinstance(data, dict) and self.fallback is not None:
                data = dict(data)
                data["text/plain"] = self.fallback.text
                if self.fallback.html_text:
                    data["text/html"] = self.fallback.html_text
            return data

    return SummaryVBox


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
) -> ProgressReporter:
    """A reporter for ``progress``: ``False`` is silent; ``True`` / ``"auto"`` picks a widget in a
    notebook, a single updating line on a TTY, periodic plain lines elsewhere; ``"widget"``,
    ``"tty"`` and ``"text"`` force one; an object with ``update``/``close`` is used as is.

    A missing ipywidgets (or tqdm) degrades to text with one hint line, never an exception.
    ``stream`` (default ``sys.stderr``) is where the terminal and text reporters write.
    """
    if progress is False or progress is None:
        return NullReporter()
    if not isinstance(progress, (bool, str)):
        return progress
    out = stream if stream is not None else sys.stderr
    mode = "auto" if progress is True else progress.lower()
    if mode not in ("auto", "widget", "tty", "text"):
        raise ValueError(
            f"progress must be True, False, 'auto', 'widget', 'tty', 'text' or a reporter; "
            f"got {progress!r}"
        )
    if mode == "widget" or (mode == "auto" and in_notebook()):
        try:
            return WidgetReporter(total)
        except ImportError:
            out.write(WIDGET_HINT + "\n")
            return TextReporter(out)
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
