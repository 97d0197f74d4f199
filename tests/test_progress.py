"""Progress reporters: widget state, the periodic text lines, the terminal line, the picker."""

from __future__ import annotations

import io
import sys
from typing import ClassVar

import pytest

from plextera_data import progress
from plextera_data.progress import (
    FailureNote,
    NullReporter,
    Snapshot,
    TextReporter,
    TqdmReporter,
    WidgetReporter,
    format_duration,
    open_progress,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def snap(finished: int = 0, total: int = 10, elapsed: float = 0.0, **kw: object) -> Snapshot:
    fields: dict[str, object] = {"completed": finished, "running": total - finished}
    fields.update(kw)
    return Snapshot(total=total, elapsed=elapsed, **fields)  # type: ignore[arg-type]


def test_snapshot_counts_in_display_order() -> None:
    s = Snapshot(total=10, completed=3, failed=1, running=4, not_submitted=1, submitting=1)
    assert s.finished == 4
    assert s.waiting == 2
    assert list(s.counts().items()) == [
        ("completed", 3),
        ("failed", 1),
        ("running", 4),
        ("not yet submitted", 2),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "?"), (4.4, "4s"), (75, "1m 15s"), (3725, "1h 02m")]
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_text_reporter_writes_periodic_lines_not_a_flood() -> None:
    clock = FakeClock()
    out = io.StringIO()
    reporter = TextReporter(out, interval=10.0, clock=clock)
    for i in range(100):  # 100 updates within 9.9 s: one line (the first)
        clock.now = i * 0.099
        reporter.update(snap(finished=i // 20, total=10, elapsed=clock.now))
    assert reporter.lines_written == 1
    clock.now = 10.0
    reporter.update(snap(finished=6, elapsed=10.0))  # the interval passed: a second line
    clock.now = 10.5
    reporter.update(snap(finished=6, elapsed=10.5, phase="done"))  # phase change: a line
    reporter.close(snap(finished=10, elapsed=11.0, phase="done"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 == reporter.lines_written
    assert lines[0].startswith("plextera-data: polling: 0/10 finished")
    assert "completed 6, running 4" in lines[1]
    assert "runs/min" in lines[1]
    assert lines[-1].startswith("plextera-data: done: 10/10 finished (completed 10)")
    assert "left ~" not in lines[-1]


def test_text_reporter_names_poll_errors_and_time_left() -> None:
    clock = FakeClock()
    out = io.StringIO()
    reporter = TextReporter(out, interval=5.0, clock=clock)
    reporter.update(snap(finished=0, total=100, elapsed=0.0))
    clock.now = 1.0
    reporter.update(snap(finished=10, total=100, elapsed=1.0))  # the first runs seen finished
    clock.now = 61.0
    reporter.update(snap(finished=60, total=100, elapsed=61.0, poll_errors=2))
    last = out.getvalue().splitlines()[-1]
    assert "2 failing to poll" in last
    assert "50 runs/min" in last  # 50 more in the 60 s since the first ones
    assert "left ~48s" in last  # 40 left at 50 a minute


def test_a_backlog_found_at_once_is_not_a_pace() -> None:
    # batch.wait() on runs that ended while nobody polled: the first poll finds them all within
    # 30 ms. What a user saw in JupyterLab was "elapsed 6s · 13813 runs/min".
    reporter = WidgetReporter(6, display=False, clock=FakeClock())
    reporter.update(snap(finished=0, total=6, elapsed=5.97))
    reporter.update(snap(finished=3, total=6, elapsed=5.985))
    reporter.close(snap(finished=6, total=6, elapsed=5.996, phase="done"))
    bundle = reporter.box.fallback._repr_mimebundle_()
    for text in (reporter.summary, reporter.label.value, bundle["text/plain"], bundle["text/html"]):
        assert "runs/min" not in text
    assert reporter.summary == "done: 6/6 finished (completed 6) | elapsed 6s"
    assert "6 of 6 finished" in reporter.label.value


def test_pace_after_a_backlog_counts_only_the_runs_seen_ending() -> None:
    clock = FakeClock()
    out = io.StringIO()
    reporter = TextReporter(out, interval=0.0, clock=clock)
    reporter.update(snap(finished=0, total=100, elapsed=0.0))
    reporter.update(snap(finished=90, total=100, elapsed=0.05))  # the backlog, found at once
    line = out.getvalue().splitlines()[-1]
    assert "runs/min" not in line  # no pace from one jump
    assert "left ~" not in line
    for second in range(1, 61):  # then one run every 6 s
        reporter.update(snap(finished=90 + second // 6, total=100, elapsed=0.05 + second))
    line = out.getvalue().splitlines()[-1]
    assert "10 runs/min" in line
    assert "polling: 100/100 finished" in line
    assert reporter.lines_written == 62


def test_no_pace_before_any_run_finished() -> None:
    reporter = WidgetReporter(5, display=False, clock=FakeClock(), min_interval=0.0)
    for second in range(10):
        reporter.update(snap(finished=0, total=5, elapsed=float(second)))
    assert "runs/min" not in reporter.summary  # was "0 runs/min" while nothing had finished
    assert reporter.summary == "polling: 0/5 finished (running 5) | elapsed 9s"


def test_widget_reporter_state_after_a_batch() -> None:
    clock = FakeClock()
    reporter = WidgetReporter(5, display=False, clock=clock, min_interval=0.25)
    reporter.update(Snapshot(total=5, not_submitted=5, phase="submitting"))
    assert reporter.bar.max == 5
    assert reporter.bar.value == 0
    assert "not yet submitted" in reporter.label.value
    clock.now = 0.1
    reporter.update(Snapshot(total=5, running=5, elapsed=0.1))  # phase change: redrawn
    assert reporter.bar.description.startswith("polling")
    clock.now = 0.2
    reporter.update(Snapshot(total=5, running=2, completed=3, elapsed=0.2))  # throttled
    assert reporter.bar.value == 0
    failure = FailureNote(row_key="row-<3>", run_id="run_3", error="Step failed: bad input")
    final = Snapshot(
        total=5, completed=4, failed=1, elapsed=30.0, phase="done", recent_failures=(failure,)
    )
    clock.now = 30.0
    reporter.close(final)
    assert reporter.closed
    assert reporter.bar.value == 5
    assert reporter.bar.max == 5
    assert reporter.bar.bar_style == "warning"  # a failure among the runs
    label = reporter.label.value
    assert "<b>4</b> completed" in label
    assert "<b>1</b> failed" in label
    assert "row-&lt;3&gt;" in label  # escaped row key in the failure list
    assert "run_3" in label
    assert "Step failed: bad input" in label
    assert reporter.summary.startswith("done: 5/5 finished (completed 4, failed 1)")


def test_widget_bundle_has_readable_fallback_not_vbox_repr() -> None:
    reporter = WidgetReporter(3, display=False)
    reporter.close(Snapshot(total=3, completed=3, elapsed=2.0, phase="done"))
    bundle = reporter.box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("Plextera batch done: 3/3 finished")
    assert "VBox" not in bundle["text/plain"]
    assert "3 of 3 finished" in bundle["text/html"]
    assert reporter.bar.bar_style == "success"


def test_widget_close_replaces_the_output_with_a_static_summary() -> None:
    class Handle:
        def __init__(self) -> None:
            self.updates: list[object] = []

        def update(self, obj: object) -> None:
            self.updates.append(obj)

    reporter = WidgetReporter(2, display=False)
    handle = Handle()
    reporter._handle = handle
    reporter.close(Snapshot(total=2, completed=1, closed=1, elapsed=1.0, phase="done"))
    (static,) = handle.updates
    bundle = static._repr_mimebundle_()  # type: ignore[attr-defined]
    assert set(bundle) == {"text/plain", "text/html"}
    assert "completed 1, closed 1" in bundle["text/plain"]


def test_tqdm_reporter_on_a_fake_tty() -> None:
    clock = FakeClock()
    tty = FakeTTY()
    reporter = TqdmReporter(4, tty, clock=clock)
    reporter.update(Snapshot(total=4, running=4))
    for i in range(50):  # throttled: far fewer redraws than updates
        clock.now = 0.001 * i
        reporter.update(Snapshot(total=4, running=3, completed=1, elapsed=clock.now))
    assert reporter.bar.n == 0
    clock.now = 1.0
    reporter.close(Snapshot(total=4, completed=3, failed=1, phase="done", elapsed=1.0))
    text = tty.getvalue()
    assert "\r" in text  # one line, redrawn in place
    assert "done" in text
    assert "4/4" in text
    assert "failed 1" in text
    assert reporter.bar.n == 4


def test_open_progress_picks_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_progress(False, total=3), NullReporter)
    custom = NullReporter()
    assert open_progress(custom, total=3) is custom  # type: ignore[arg-type]
    assert isinstance(open_progress(True, total=3, stream=io.StringIO()), TextReporter)
    assert isinstance(open_progress("auto", total=3, stream=FakeTTY()), TqdmReporter)
    assert isinstance(open_progress("text", total=3, stream=FakeTTY()), TextReporter)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "WidgetReporter", lambda total: ("widget", total))
    assert open_progress(True, total=3, stream=io.StringIO()) == ("widget", 3)
    with pytest.raises(ValueError, match="progress must be"):
        open_progress("fancy", total=3)


def test_missing_ipywidgets_degrades_to_text_with_one_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import raises ImportError
    progress._summary_vbox_class.cache_clear()
    out = io.StringIO()
    reporter = open_progress("widget", total=3, stream=out)
    assert isinstance(reporter, TextReporter)
    assert out.getvalue() == progress.WIDGET_HINT + "\n"
    progress._summary_vbox_class.cache_clear()


def test_in_notebook_detects_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    class Shell:
        kernel = object()
        config: ClassVar[dict[str, object]] = {}

    class FakeIPython:
        @staticmethod
        def get_ipython() -> Shell:
            return Shell()

    monkeypatch.setitem(sys.modules, "IPython", FakeIPython)
    assert progress.in_notebook()
    Shell.kernel = None  # type: ignore[assignment]
    assert not progress.in_notebook()
    Shell.config = {"IPKernelApp": {}}
    assert progress.in_notebook()
