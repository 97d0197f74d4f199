"""The batch poller against the served simulator: every run ends terminal, none is polled after
it is terminal, faults are survived, timeout and resume, watch() in a running loop, interrupts.

Simulated time runs 100x faster and the scheduler's intervals are scaled to match
(``time_scale``), so these tests take seconds; they assert outcomes and counts, never durations.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from plextera_data import errors
from plextera_data.batch import Batch, RowState
from plextera_data.client import Client
from plextera_data.models import TERMINAL_STATUSES
from plextera_data.pacing import Pacer
from plextera_data.progress import WidgetReporter
from plextera_data.simulator import Fault, Simulator

SPEED = 100.0
FAST = {"time_scale": 1 / SPEED, "progress": False}


@pytest.fixture
def sim_server() -> Iterator[tuple[Simulator, Any]]:
    sim = Simulator(seed=7, speed=SPEED)
    with sim.serve() as server:
        yield sim, server


def make_batch(
    sim: Simulator,
    server: Any,
    inputs: list[dict[str, Any]],
    workflow: str = "variable-duration",
) -> Batch:
    """A batch whose runs were started directly on the simulator (as if just submitted)."""
    client = Client(api_key=sim.api_key, base_url=server.base_url)
    rows = []
    for i, run_input in enumerate(inputs):
        run_id = sim.start_run(workflow, run_input)
        rows.append(
            RowState(
                key=f"row-{i}",
                position=i,
                fingerprint=str(i),
                run_id=run_id,
                status="PROCESSING",
                submitted_at=datetime.now(UTC),
            )
        )
    return Batch(workflow, client, rows, pd.Index([r.key for r in rows]), pacer=Pacer())


def spread(n: int, low: float = 0.5, high: float = 20.0, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"durationSeconds": round(rng.uniform(low, high), 2)} for _ in range(n)]


def assert_all_accounted(batch: Batch, sim: Simulator, *, exact: bool = True) -> None:
    """Every row terminal, as the simulator says; the GETs it saw are the ones we counted
    (``exact=False`` after a stop: a GET cancelled in flight may have reached the server)."""
    assert all(r.status in TERMINAL_STATUSES for r in batch.rows)
    assert all(r.finished_at is not None for r in batch.rows)
    for row in batch.rows:
        assert row.run_id is not None
        assert row.status == sim.run_model(row.run_id)["status"]
        if exact:
            assert sim.stats.gets[row.run_id] == row.polls
        else:
            assert sim.stats.gets[row.run_id] >= row.polls
    assert sum(sim.stats.gets_after_terminal.values()) == 0


@pytest.mark.slow
def test_thousand_runs_all_terminal_none_polled_after_terminal(
    sim_server: tuple[Simulator, Any],
) -> None:
    sim, server = sim_server
    batch = make_batch(sim, server, spread(1000))
    reporter = WidgetReporter(len(batch.rows), display=False)
    from plextera_data import poll

    asyncio.run(poll.wait_async(batch, reporter=reporter, **FAST))
    assert_all_accounted(batch, sim)
    # The widget ends in its final state: all finished, the summary says done.
    assert reporter.bar.value == reporter.bar.max == 1000
    assert reporter.summary.startswith("done: 1000/1000 finished")
    # Politeness: far fewer GETs than polling each run every simulated second.
    assert sim.stats.total_gets < 1000 * 20.5 / 2


def test_faults_on_get_are_survived(sim_server: tuple[Simulator, Any]) -> None:
    sim, server = sim_server
    sim.set_faults(
        [
            Fault(kind="rate_limit", method="GET", requests=set(range(20, 60)), retry_after=0.01),
            Fault(kind="server_error", method="GET", rate=0.05, status=503),
            Fault(kind="drop", method="GET", rate=0.03),
            Fault(kind="malformed", method="GET", rate=0.03),
        ]
    )
    batch = make_batch(sim, server, spread(150))
    batch.wait(**FAST)
    assert_all_accounted(batch, sim)
    assert batch.pacer.rate_limited >= 1  # the storm paused the whole scheduler
    for kind in ("rate_limit", "server_error", "drop", "malformed"):
        assert sim.stats.faults[kind] > 0, kind
    assert batch.snapshot().poll_errors == 0  # every failing run recovered


def test_a_run_that_keeps_failing_is_reported_not_dropped(
    sim_server: tuple[Simulator, Any],
) -> None:
    sim, server = sim_server
    batch = make_batch(sim, server, spread(5, 0.5, 1.0))
    bad = batch.rows[2]
    bad.run_id = "run_does_not_exist"
    with pytest.raises(errors.BatchTimeoutError) as caught:
        batch.wait(timeout=1.0, slow_interval=5.0, **FAST)
    assert caught.value.still_running == 1
    assert bad.poll_failures >= 5
    assert bad.error is not None
    assert "404" in bad.error
    assert batch.snapshot().poll_errors == 1
    assert all(r.status in TERMINAL_STATUSES for r in batch.rows if r is not bad)


def test_timeout_then_resume() -> None:
    sim = Simulator(seed=3, speed=None)  # a manual clock: nothing finishes until advanced
    with sim.serve() as server:
        batch = make_batch(sim, server, spread(50, 1.0, 10.0))
        with pytest.raises(errors.BatchTimeoutError) as caught:
            batch.wait(timeout=0.3, **FAST)
        assert caught.value.still_running == 50
        message = str(caught.value)
        assert "50 of 50 runs still running after 0.3 s" in message
        assert "batch.wait()" in message
        assert all(r.status == "PROCESSING" for r in batch.rows)
        sim.clock.advance(30)
        batch.wait(**FAST)
        assert_all_accounted(batch, sim)


def test_raise_on_failure_lists_failed_rows(sim_server: tuple[Simulator, Any]) -> None:
    sim, server = sim_server
    inputs = spread(6, 0.5, 2.0)
    inputs[4] = {"simulate": {"fail": True, "failMessage": "no such customer"}}
    batch = make_batch(sim, server, inputs, workflow="daily-lab-loader")
    with pytest.raises(errors.RunFailedError) as caught:
        batch.wait(raise_on_failure=True, **FAST)
    message = str(caught.value)
    assert "1 of 6 runs did not complete" in message
    assert "row-4" in message
    assert batch.rows[4].run_id in message
    assert "no such customer" in message
    assert [run.id for run in caught.value.runs] == [batch.rows[4].run_id]


def test_watch_returns_at_once_in_a_running_loop(sim_server: tuple[Simulator, Any]) -> None:
    sim, server = sim_server
    batch = make_batch(sim, server, spread(100))

    async def notebook_cell() -> None:
        returned = batch.watch(**FAST)  # sync call inside a running loop, as in a notebook
        assert returned is batch
        task = batch._watch_task  # type: ignore[attr-defined]
        assert not task.done()  # polling goes on in the background
        partial = batch.status  # partial results are readable meanwhile
        assert len(partial) == 100
        await task

    asyncio.run(notebook_cell())
    assert_all_accounted(batch, sim)


def test_stop_cancels_background_polling() -> None:
    sim = Simulator(seed=5, speed=None)
    with sim.serve() as server:
        batch = make_batch(sim, server, spread(20))

        real_get = batch.aclient.get_run
        polled = asyncio.Event()

        async def counting_get(run_id: str, **kw: Any) -> Any:
            run = await real_get(run_id, **kw)
            if sum(r.polls for r in batch.rows) >= 19:  # this answer makes 20
                polled.set()
            return run

        batch.aclient.get_run = counting_get  # type: ignore[method-assign]

        async def cell() -> None:
            batch.watch(**FAST)
            task = batch._watch_task  # type: ignore[attr-defined]
            await polled.wait()
            batch.stop()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cell())
        assert all(r.status == "PROCESSING" for r in batch.rows)
        batch.aclient.get_run = real_get  # type: ignore[method-assign]
        gets = sim.stats.total_gets
        sim.clock.advance(30)
        batch.wait(**FAST)  # resumes where it stopped
        assert sim.stats.total_gets > gets
        assert_all_accounted(batch, sim, exact=False)


def test_interrupt_stops_cleanly_and_says_how_to_resume(
    sim_server: tuple[Simulator, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sim, server = sim_server
    batch = make_batch(sim, server, spread(30, 2.0, 5.0))
    real_get = batch.aclient.get_run
    calls = 0

    async def interrupted_get(run_id: str, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 10:
            raise KeyboardInterrupt
        return await real_get(run_id, **kw)

    batch.aclient.get_run = interrupted_get  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt, match=r"batch\.wait\(\)"):
        batch.wait(**FAST)
    assert "Polling interrupted" in capsys.readouterr().err
    assert batch._poller is None
    batch.aclient.get_run = real_get  # type: ignore[method-assign]
    batch.wait(**FAST)
    assert all(r.status in TERMINAL_STATUSES for r in batch.rows)


def test_rows_appearing_during_submission_are_picked_up(
    sim_server: tuple[Simulator, Any],
) -> None:
    sim, server = sim_server
    batch = make_batch(sim, server, spread(60, 0.5, 3.0))
    hidden = batch.rows[20:]
    ids = [r.run_id for r in hidden]
    for row in hidden:  # not yet submitted
        row.run_id, row.status = None, "NOT_SUBMITTED"

    async def submission() -> None:
        for row, run_id in zip(hidden, ids, strict=True):
            await asyncio.sleep(0.002)
            row.run_id = run_id
            batch.set_status(row, "PROCESSING")

    async def main() -> None:
        from plextera_data import poll

        task = asyncio.ensure_future(submission())
        await poll.wait_async(batch, submission=task, **FAST)
        assert task.done()

    asyncio.run(main())
    assert_all_accounted(batch, sim)


def test_unknown_polling_option_is_named() -> None:
    from plextera_data.poll import PollSettings

    with pytest.raises(TypeError, match="max_intervl"):
        PollSettings.from_limits({"max_intervl": 3})
    assert PollSettings.from_limits({"max_interval": 3}).max_interval == 3
