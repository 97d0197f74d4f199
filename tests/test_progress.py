"""Progress reporters, driven by hand-made snapshot sequences and a fake clock.

What is checked is what a user sees: the notebook display's state (its view, HTML and text twin,
what was sent to the front end and under which display id), the text fallback's lines, the tqdm
line; and that the colours keep their contrast on JupyterLab's own themes.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from plextera_data import progress
from plextera_data.progress import (
    FailureGroup,
    FailureNote,
    NotebookReporter,
    NullReporter,
    PacingState,
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


def snap(finished: int = 0, total: int = 10, elapsed: float = 0.0, **kw: Any) -> Snapshot:
    fields: dict[str, Any] = {"completed": finished, "running": total - finished}
    fields.update(kw)
    return Snapshot(total=total, elapsed=elapsed, **fields)


def notebook(total: int = 10, clock: FakeClock | None = None, **kw: Any) -> NotebookReporter:
    return NotebookReporter(
        total, display=False, clock=clock or FakeClock(), wall=lambda: "14:03:12", **kw
    )


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


# --------------------------------------------------------------------------- the stacked bar


def test_the_bar_shows_every_part_with_its_legend() -> None:
    # "submitting 248/2000" when 248 runs had finished and 846 were accepted: the parts say it.
    reporter = notebook(2000)
    reporter.update(
        Snapshot(
            total=2000,
            completed=240,
            failed=6,
            closed=2,
            running=598,
            not_submitted=1150,
            submitting=4,
            phase="submitting",
        )
    )
    bar = reporter.bar
    assert bar.counts() == {
        "completed": 240,
        "failed": 8,
        "running": 598,
        "not yet sent": 1154,
    }
    assert sum(s.count for s in bar.segments) == bar.total == bar.max == 2000
    assert bar.value == 248
    page = reporter.html
    assert 'aria-label="240 completed, 8 failed, 598 running, 1,154 not yet sent"' in page
    widths = [float(w) for w in re.findall(r"width:([0-9.]+)%;background", page)]
    assert widths == pytest.approx([12.0, 0.4, 29.9, 57.7])
    for name, count in bar.counts().items():  # the legend: a swatch, the count, the name
        assert f"<b>{count:,}</b> {name}</span>" in page
    assert "submitting</b> &middot; 248 of 2,000 finished" in page


def test_uncertain_rows_get_their_own_part_and_zero_parts_stay_in_the_legend() -> None:
    reporter = notebook(5)
    reporter.update(Snapshot(total=5, completed=4, uncertain=1, elapsed=3.0))
    assert reporter.bar.counts() == {
        "completed": 4,
        "failed": 0,
        "uncertain": 1,
        "running": 0,
        "not yet sent": 0,
    }
    assert "<b>0</b> failed" in reporter.html  # the legend does not jump around
    assert 'title="0 failed"' not in reporter.html  # but no empty part in the bar


# --------------------------------------------------------------------------- when it draws


def test_heartbeat_redraws_every_second_and_never_more_than_the_interval() -> None:
    # "elapsed 31s · 0 runs/min" stayed unchanged for 26 s: the heartbeat feeds a snapshot every
    # 0.25 s; the display redraws when what it shows changed (the elapsed second does).
    clock = FakeClock()
    reporter = notebook(100, clock, min_interval=0.5)
    for beat in range(121):  # 30 s of heartbeats, nothing finishes
        clock.now = beat * 0.25
        reporter.update(snap(0, 100, elapsed=clock.now))
    assert reporter.draws == 31  # 0 s, then each second
    assert "elapsed 30s" in reporter.html


def test_nothing_visible_changed_no_redraw() -> None:
    clock = FakeClock()
    reporter = notebook(10, clock, min_interval=0.25)
    for beat in range(4):  # the same second, the same counts
        clock.now = beat * 0.25
        reporter.update(snap(2, 10, elapsed=5.1 + beat * 0.1))
    assert reporter.draws == 1


def test_counts_changing_fast_still_draw_at_most_every_interval() -> None:
    clock = FakeClock()
    reporter = notebook(1000, clock, min_interval=0.5)
    for step in range(100):  # an answer every 10 ms for one second
        clock.now = step * 0.01
        reporter.update(snap(step, 1000, elapsed=clock.now))
    assert reporter.draws == 2  # the first, then one at 0.5 s


def test_phase_does_not_flicker_between_the_engines_snapshots() -> None:
    # Today's engines: the submitter says "submitting", the poller "polling", interleaved.
    clock = FakeClock()
    reporter = notebook(40, clock, min_interval=0.0)
    shown = []
    for step in range(40):
        clock.now = step * 0.25
        unsent = 40 - step
        phase = "submitting" if step % 2 else "polling"
        reporter.update(
            Snapshot(total=40, not_submitted=unsent, running=step, elapsed=clock.now, phase=phase)
        )
        shown.append(reporter.view.phase if reporter.view else None)
    reporter.update(Snapshot(total=40, running=40, elapsed=10.0, phase="polling"))
    shown.append(reporter.view.phase if reporter.view else None)
    reporter.close(Snapshot(total=40, completed=40, elapsed=12.0, phase="done"))
    shown.append(reporter.view.phase if reporter.view else None)
    changes = [phase for i, phase in enumerate(shown) if i == 0 or phase != shown[i - 1]]
    # The very first snapshot (a poller's) shows polling; from the first submitter's snapshot
    # on, submitting while rows are unsent; then polling; then done. One phase at a time.
    assert changes == ["polling", "submitting", "polling", "done"]


def test_rows_never_sent_in_this_call_read_polling() -> None:
    # batch.wait() on a resumed batch with rows not sent: it polls, it does not submit.
    reporter = notebook(10)
    reporter.update(Snapshot(total=10, not_submitted=4, running=6, phase="polling"))
    assert reporter.view is not None
    assert reporter.view.phase == "polling"


def test_after_close_updates_are_ignored() -> None:
    reporter = notebook(3)
    reporter.close(Snapshot(total=3, completed=3, elapsed=2.0, phase="done"))
    reporter.update(snap(1, 3, elapsed=3.0))
    assert reporter.draws == 1
    assert reporter.closed
    assert "done</b> &middot; 3 of 3 finished" in reporter.html


# --------------------------------------------------------------------------- failures


def groups() -> tuple[FailureGroup, ...]:
    long_message = "The document could not be read: " + "page 3 is an image without text; " * 20
    return (
        FailureGroup(
            "submission failed",
            "FORBIDDEN",
            403,
            ("c-1", "c-2", "c-3", "c-4", "c-5"),
            "This API key may not start runs of workflow 'incoming-claim' in this workspace.",
        ),
        FailureGroup("failed", "UNSUPPORTED_DOCUMENT", 2, ("c-7", "<c-8>"), long_message, "run_8"),
        FailureGroup("submission uncertain", "ReadTimeout", 1, ("c-9",), "timed out", None),
    )


def test_failures_are_grouped_with_counts_rows_actions_and_the_full_message() -> None:
    reporter = notebook(500)
    snapshot = Snapshot(
        total=500, submit_failed=403, failed=2, uncertain=1, completed=94, failures=groups()
    )
    reporter.close(snapshot)
    page = reporter.html
    # 403 of one kind said once, with its count, code and first rows.
    assert page.count("FORBIDDEN") == 1
    assert "<b>403</b> submission failed <code>FORBIDDEN</code>: rows c-1, c-2, c-3, c-4, c-5 " in (
        page
    )
    assert "and 398 more" in page
    # What to do, per kind; a group whose rows are not all known gets a query, not 5 of them.
    assert (
        "<code>batch.resubmit(batch.status.query(&quot;status == "
        "&#x27;SUBMISSION_FAILED&#x27;&quot;).index)</code>" in page
    )
    assert "<code>batch.status.query(&quot;status == &#x27;FAILED&#x27;&quot;)</code>" in page
    assert "<code>batch.reconcile()</code>" in page
    assert "<code>batch.resubmit([&#x27;c-9&#x27;])</code>" in page
    # The full message on demand, never cut, with its run; row keys escaped.
    long_message = groups()[1].message
    assert len(long_message) > 600
    assert f"{long_message}</div></details>".replace("'", "&#x27;") in page
    assert "latest message (run <code>run_8</code>)" in page
    assert "&lt;c-8&gt;" in page
    assert "<c-8>" not in page
    text = reporter.text  # the text/plain twin says the same
    assert "403 submission failed FORBIDDEN: rows c-1, c-2, c-3, c-4, c-5 and 398 more" in text
    assert "-> a run may exist: `batch.reconcile()`" in text
    assert long_message in text


def test_snapshots_without_groups_get_groups_from_the_counts() -> None:
    # Today's engines fill recent_failures only: one group per kind, the notes apart.
    reporter = notebook(10)
    note = FailureNote(row_key="row-3", run_id="run_3", error="Step failed: bad input")
    reporter.close(
        Snapshot(
            total=10,
            completed=6,
            failed=2,
            closed=1,
            submit_failed=1,
            elapsed=9.0,
            phase="done",
            recent_failures=(note,),
        )
    )
    view = reporter.view
    assert view is not None
    assert [(g.kind, g.count) for g in view.failures] == [
        ("submission failed", 1),
        ("failed", 2),
        ("closed", 1),
    ]
    assert "latest failure: row <code>row-3</code> (run <code>run_3</code>)" in reporter.html
    assert "Step failed: bad input" in reporter.html


def test_a_timeout_says_still_running_not_a_failure() -> None:
    reporter = notebook(50)
    reporter.close(Snapshot(total=50, running=50, elapsed=30.0, phase="stopped"))
    assert reporter.view is not None
    assert [(g.kind, g.count) for g in reporter.view.failures] == [("still running", 50)]
    assert "<code>batch.wait()</code> goes on waiting" in reporter.html
    assert "PROCESSING" not in reporter.text


def test_poll_errors_without_groups_are_a_group() -> None:
    reporter = notebook(10)
    reporter.update(snap(2, 10, elapsed=1.0, poll_errors=3))
    assert reporter.view is not None
    assert [(g.kind, g.count) for g in reporter.view.failures] == [("failing to poll", 3)]


# --------------------------------------------------------------------------- which batch, why slow


def test_the_title_names_the_workflow_and_the_journal() -> None:
    # Two displays in one cell both read "Plextera batch": now each says which batch it is.
    reporter = notebook(4)
    reporter.update(
        Snapshot(total=4, running=4, workflow_id="incoming-claim", journal="claims.plextera.db")
    )
    assert (
        "<b>Plextera batch</b> &middot; <code>incoming-claim</code> &middot; journal "
        "<code>claims.plextera.db</code>" in reporter.html
    )
    assert reporter.text.startswith("Plextera batch · incoming-claim · journal claims.plextera.db")


def test_rate_limits_and_backing_off_say_why_it_is_slow() -> None:
    reporter = notebook(100)
    pacing = PacingState(
        in_flight=4,
        limit=4,
        max_in_flight=16,
        paused_for=1.5,
        rate_limited=37,
        requests_per_second=6.25,
        backing_off=2,
    )
    reporter.update(snap(10, 100, elapsed=20.0, pacing=pacing))
    assert reporter.view is not None
    assert reporter.view.slowdown == (
        "paused 1.5s after a 429",
        "rate-limited 37 times (429)",
        "4 of 16 requests in flight allowed",
        "backing off: 2 rows polled less often",
        "6.2 requests/s",
    )
    assert "<div>Slowed by the API: paused 1.5s after a 429" in reporter.html
    assert "slowed: paused 1.5s" in reporter.summary


def test_no_slowdown_line_when_nothing_holds_the_batch_back() -> None:
    reporter = notebook(100)
    pacing = PacingState(in_flight=16, limit=16, max_in_flight=16, requests_per_second=30.0)
    reporter.update(snap(10, 100, elapsed=20.0, pacing=pacing))
    assert reporter.view is not None
    assert reporter.view.slowdown == ()
    assert "Slowed" not in reporter.html


# --------------------------------------------------------------------------- pace


def test_a_backlog_found_at_once_is_not_a_pace() -> None:
    # batch.wait() on runs that ended while nobody polled: the first poll finds them all within
    # 30 ms. What a user saw in JupyterLab was "elapsed 6s · 13813 runs/min".
    reporter = notebook(6)
    reporter.update(snap(finished=0, total=6, elapsed=5.97))
    reporter.update(snap(finished=3, total=6, elapsed=5.985))
    reporter.close(snap(finished=6, total=6, elapsed=5.996, phase="done"))
    for text in (reporter.summary, reporter.html, reporter.text):
        assert "runs/min" not in text
    assert reporter.summary == "done: 6/6 finished (completed 6) | elapsed 6s"


def test_pace_after_a_backlog_counts_only_the_runs_seen_ending() -> None:
    clock = FakeClock()
    out = io.StringIO()
    reporter = TextReporter(out, interval=0.0, clock=clock)
    reporter.update(snap(finished=0, total=100, elapsed=0.0))
    reporter.update(snap(finished=90, total=100, elapsed=0.05))  # the backlog, found at once
    line = out.getvalue().splitlines()[-1]
    assert "runs/min" not in line  # no pace from one jump
    assert "left" not in line
    for second in range(1, 61):  # then one run every 6 s
        reporter.update(snap(finished=90 + second // 6, total=100, elapsed=0.05 + second))
    line = out.getvalue().splitlines()[-1]
    assert "10 runs/min" in line
    assert "polling: 100/100 finished" in line


def test_no_pace_before_any_run_finished() -> None:
    reporter = notebook(5, min_interval=0.0)
    for second in range(10):
        reporter.update(snap(finished=0, total=5, elapsed=float(second)))
    assert "runs/min" not in reporter.summary  # was "0 runs/min" while nothing had finished
    assert reporter.summary == "polling: 0/5 finished (running 5) | elapsed 9s"


def test_time_left_is_said_while_running_and_not_at_the_end() -> None:
    clock = FakeClock()
    reporter = notebook(100, clock, min_interval=0.0)
    reporter.update(snap(0, 100, elapsed=0.0))
    reporter.update(snap(10, 100, elapsed=1.0))
    clock.now = 61.0
    reporter.update(snap(60, 100, elapsed=61.0))
    assert "50 runs/min &middot; about 48s left &middot; updated 14:03:12" in reporter.html
    reporter.close(snap(100, 100, elapsed=100.0, phase="done"))
    assert "left" not in reporter.html
    assert "updated" not in reporter.html  # the saved summary carries no clock time


# --------------------------------------------------------------------------- the notebook output


class FakeFrontEnd:
    """Records IPython.display calls as the kernel would send them."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, str], str]] = []

    def display(self, obj: Any, *, raw: bool = False, display_id: Any = None) -> None:
        assert raw
        self.messages.append(("display_data", obj, display_id))

    def update_display(self, obj: Any, *, raw: bool = False, display_id: Any = None) -> None:
        assert raw
        self.messages.append(("update_display_data", obj, display_id))


@pytest.fixture
def front_end(monkeypatch: pytest.MonkeyPatch) -> FakeFrontEnd:
    display_module = pytest.importorskip("IPython.display")
    fake = FakeFrontEnd()
    monkeypatch.setattr(display_module, "display", fake.display)
    monkeypatch.setattr(display_module, "update_display", fake.update_display)
    return fake


def test_one_output_updated_in_place_by_its_display_id(front_end: FakeFrontEnd) -> None:
    clock = FakeClock()
    reporter = NotebookReporter(3, clock=clock, wall=lambda: "09:00:00")
    reporter.update(snap(0, 3, elapsed=0.0))
    clock.now = 1.0
    reporter.update(snap(1, 3, elapsed=1.0))
    reporter.close(snap(3, 3, elapsed=2.0, phase="done"))
    kinds = [kind for kind, _, _ in front_end.messages]
    assert kinds == ["display_data", "update_display_data", "update_display_data"]
    assert {display_id for _, _, display_id in front_end.messages} == {reporter.display_id}
    for _, bundle, _ in front_end.messages:
        # Plain HTML and text: no widget view, so no model to load after a reload or to miss
        # after a kernel shutdown, and the saved file shows what was drawn.
        assert set(bundle) == {"text/plain", "text/html"}
    final = front_end.messages[-1][1]
    assert "done</b> &middot; 3 of 3 finished" in final["text/html"]
    assert (
        final["text/plain"]
        .splitlines()[1]
        .startswith("done: 3/3 finished (completed 3) | elapsed 2s")
    )


def test_show_puts_the_live_display_in_another_cell(front_end: FakeFrontEnd) -> None:
    # After a page reload the new page knows none of the old outputs: showing the reporter again
    # makes an output with the same display id, which the following updates reach.
    clock = FakeClock()
    reporter = NotebookReporter(3, clock=clock)
    reporter.update(snap(1, 3, elapsed=0.0))
    reporter._ipython_display_()  # what `reporter` as the last line of a cell does
    clock.now = 1.0
    reporter.update(snap(2, 3, elapsed=1.0))
    assert [(kind, display_id) for kind, _, display_id in front_end.messages] == [
        ("display_data", reporter.display_id),
        ("display_data", reporter.display_id),
        ("update_display_data", reporter.display_id),
    ]
    assert "2 of 3 finished" in front_end.messages[-1][1]["text/html"]


def test_one_display_id_for_several_calls(front_end: FakeFrontEnd) -> None:
    first = open_progress("notebook", total=2, display_id="plextera-batch-1")
    second = open_progress("notebook", total=2, display_id="plextera-batch-1")
    first.close(Snapshot(total=2, running=2, phase="submitted"))
    second.update(Snapshot(total=2, running=2))
    assert [display_id for _, _, display_id in front_end.messages] == ["plextera-batch-1"] * 2


def test_the_deprecated_widget_reporter_is_the_notebook_display() -> None:
    with pytest.warns(DeprecationWarning, match="NotebookReporter"):
        reporter = WidgetReporter(4, display=False)
    reporter.close(Snapshot(total=4, completed=4, elapsed=1.0, phase="done"))
    assert reporter.bar.value == reporter.bar.max == 4
    assert reporter.summary.startswith("done: 4/4 finished")


# --------------------------------------------------------------------------- colours


def _hex(colour: str) -> tuple[float, float, float, float]:
    colour = colour.strip()
    if colour == "white":
        return (1.0, 1.0, 1.0, 1.0)
    match = re.fullmatch(r"rgba\((\d+),\s*(\d+),\s*(\d+),\s*([.\d]+)\)", colour)
    if match:
        r, g, b, a = match.groups()
        return (int(r) / 255, int(g) / 255, int(b) / 255, float(a))
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (*(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)), 1.0)  # type: ignore[return-value]


def _contrast(fore: tuple[float, ...], back: tuple[float, ...]) -> float:
    alpha = fore[3]
    blended = [alpha * f + (1 - alpha) * b for f, b in zip(fore[:3], back[:3], strict=True)]

    def luminance(rgb: Any) -> float:
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(blended), luminance(back[:3])), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _theme(name: str) -> dict[str, str]:
    """The variables of an installed JupyterLab theme, resolved (``var(--md-x, #fff)`` -> #fff)."""
    pytest.importorskip("jupyterlab")
    path = (
        Path(sys.prefix) / "share/jupyter/lab/themes/@jupyterlab" / name / "index.css"
    )  # where pip installs JupyterLab's themes
    if not path.is_file():
        pytest.skip(f"no JupyterLab theme at {path}")
    css = path.read_text(encoding="utf-8")
    values = dict(re.findall(r"(--jp-[\w-]+)\s*:\s*([^;}]+)", css))
    return {k: re.sub(r"var\(--md-[\w-]+,\s*(#\w+)\)", r"\1", v) for k, v in values.items()}


@pytest.mark.parametrize(
    ("theme", "fills"), [("theme-dark-extension", 4.5), ("theme-light-extension", 3.0)]
)
def test_colours_keep_their_contrast_on_jupyterlab_themes(theme: str, fills: float) -> None:
    # The bar's colours: 4.5:1 on the dark theme; on the light one, whose orange stops at
    # 3.8:1, the 3:1 that non-text parts need. The muted text: 4.5:1 on both.
    variables = _theme(theme)
    page = _hex(variables["--jp-layout-color0"])
    used = {**{name: (css, fills) for name, css in progress.COLOURS.items()},
            "muted text": (progress.MUTED, 4.5)}  # fmt: skip
    for name, (css, wanted) in used.items():
        variable = re.match(r"var\((--jp-[\w-]+)", css)
        assert variable, f"{name}: {css} is not a theme variable"
        value = variables[variable.group(1)]
        ratio = _contrast(_hex(value), page)
        assert ratio >= wanted, f"{theme}: {name} ({value}) is {ratio:.2f}:1 on the page"


def test_fallback_colours_keep_3_to_1_on_white() -> None:
    for name, css in progress.COLOURS.items():
        fallback = re.search(r",\s*(#\w+)\)", css)
        assert fallback, f"{name} has no fallback colour"
        assert _contrast(_hex(fallback.group(1)), (1.0, 1.0, 1.0, 1.0)) >= 3.0, name


def test_text_keeps_the_notebook_colour() -> None:
    # No hard-coded text colour: text is readable on any theme, light or dark.
    reporter = notebook(3)
    reporter.close(Snapshot(total=3, completed=2, failed=1, phase="done", elapsed=1.0))
    assert re.findall(r"[^-]color:([^;\"]+)", reporter.html) == [progress.MUTED]


# --------------------------------------------------------------------------- text and tqdm


def test_text_reporter_writes_one_line_per_interval_plus_phase_changes() -> None:
    # The text fallback printed 43 lines in 125 s: heartbeats every 0.25 s for 125 s now give
    # a line at 0 s, every 15 s, at the phase change and at the end.
    clock = FakeClock()
    out = io.StringIO()
    reporter = TextReporter(out, interval=15.0, clock=clock)
    for beat in range(500):
        clock.now = beat * 0.25
        unsent = max(0, 100 - beat)  # all sent after 25 s
        phase = "submitting" if beat % 2 else "polling"  # the two engines, interleaved
        reporter.update(
            Snapshot(
                total=100,
                not_submitted=unsent,
                running=100 - unsent - beat // 5,
                completed=beat // 5,
                elapsed=clock.now,
                phase=phase,
            )
        )
    reporter.close(Snapshot(total=100, completed=100, elapsed=125.0, phase="done"))
    lines = out.getvalue().splitlines()
    phases = [line.split(":")[1].strip() for line in lines]
    assert phases[0] == "polling"  # the very first snapshot was the poller's
    assert phases[1:].count("submitting") <= 3
    assert len(lines) <= 125 // 15 + 4  # the periodic lines, 3 phase changes, the end
    assert lines[-1].startswith("plextera-data: done: 100/100 finished (completed 100)")


def test_text_reporter_final_line_names_the_failure_groups() -> None:
    out = io.StringIO()
    reporter = TextReporter(out, clock=FakeClock())
    reporter.close(
        Snapshot(total=500, submit_failed=403, failed=2, uncertain=1, completed=94, phase="done",
                 failures=groups())
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == (
        "plextera-data: did not complete: 403 submission failed FORBIDDEN; 2 failed "
        "UNSUPPORTED_DOCUMENT; 1 submission uncertain ReadTimeout (see batch.status)"
    )


def test_tqdm_reporter_on_a_fake_tty() -> None:
    clock = FakeClock()
    tty = FakeTTY()
    reporter = TqdmReporter(100, tty, clock=clock)
    reporter.update(snap(0, 100))
    for i in range(50):  # throttled: far fewer redraws than updates
        clock.now = 0.001 * i
        reporter.update(snap(1, 100, elapsed=clock.now))
    assert reporter.bar.n == 0
    assert reporter.draws == 1
    clock.now = 61.0
    reporter.update(snap(60, 100, elapsed=61.0))
    assert reporter.bar.n == 60
    # The pace is this module's (the same as the other displays'), not tqdm's own.
    assert "runs/min · about" in tty.getvalue()
    clock.now = 62.0
    reporter.close(Snapshot(total=100, completed=99, failed=1, phase="done", elapsed=62.0))
    text = tty.getvalue()
    assert "\r" in text  # one line, redrawn in place
    assert "done" in text
    assert "100/100" in text
    assert "failed 1" in text
    assert reporter.bar.n == 100


# --------------------------------------------------------------------------- choosing one


def test_open_progress_picks_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_progress(False, total=3), NullReporter)
    custom = NullReporter()
    assert open_progress(custom, total=3) is custom
    assert isinstance(open_progress(True, total=3, stream=io.StringIO()), TextReporter)
    assert isinstance(open_progress("auto", total=3, stream=FakeTTY()), TqdmReporter)
    assert isinstance(open_progress("text", total=3, stream=FakeTTY()), TextReporter)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    picked = open_progress(True, total=3, stream=io.StringIO())
    assert isinstance(picked, NotebookReporter)
    assert isinstance(open_progress("widget", total=3), NotebookReporter)
    with pytest.raises(ValueError, match="progress must be"):
        open_progress("fancy", total=3)


def test_the_notebook_display_needs_no_widget_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it raises ImportError
    reporter = open_progress("notebook", total=3)
    assert isinstance(reporter, NotebookReporter)


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


def test_a_closed_output_stops_the_text_reporter_not_the_batch() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    clock = FakeClock()
    reporter = TextReporter(ClosedPipe(), interval=0.0, clock=clock)
    reporter.update(snap(1, 10, elapsed=1.0))  # no exception into the engine that feeds it
    assert reporter.closed
    clock.now = 5.0
    reporter.update(snap(2, 10, elapsed=5.0))
    reporter.close(snap(10, 10, elapsed=9.0, phase="done"))
    assert reporter.lines_written == 0
