"""The batch poller against the served simulator: every run ends terminal, none is polled after
it is terminal, faults are survived, timeout and resume, watch() in a running loop, interrupts;
and, offline, when the scheduler polls a run next (backoff, predictions, a skewed client clock).

Simulated time runs 100x faster and the scheduler's intervals are scaled to match
(``time_scale``), so these tests take seconds; they assert outcomes and counts, never durations.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plextera_data import errors
from plextera_data.batch import Batch
from plextera_data.client import Client
from plextera_data.ledger import Ledger, RowState
from plextera_data.models import TERMINAL_STATUSES, Run
from plextera_data.pacing import Pacer
from plextera_data.poll import _RowPlan
from plextera_data.progress import NotebookReporter
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
    ledger = Ledger(rows, pd.Index([r.key for r in rows]), workflow_id=workflow)
    return Batch(client, ledger, pacer=Pacer())


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
    reporter = NotebookReporter(len(batch.rows), display=False)
    asyncio.run(batch.wait_async(progress=reporter, time_scale=FAST["time_scale"]))
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
        task = batch._watch_task
        assert task is not None
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
            task = batch._watch_task
            assert task is not None
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
    with pytest.raises(KeyboardInterrupt, match=r"Polling interrupted.*batch\.wait\(\)"):
        batch.wait(**FAST)
    assert capsys.readouterr().err == ""  # the exception says it; callers add their advice
    assert batch._scheduler is None
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
            batch.ledger.accept(row, Run(id=run_id, status="PROCESSING"), datetime.now(UTC))

    async def main() -> None:
        from plextera_data.poll import PollSettings

        task = asyncio.ensure_future(submission())
        settings = PollSettings(time_scale=FAST["time_scale"])
        await batch._poll(settings, None, submission=task)
        assert task.done()

    asyncio.run(main())
    assert_all_accounted(batch, sim)


def test_unknown_polling_option_is_named() -> None:
    from plextera_data.poll import PollSettings

    with pytest.raises(TypeError, match="max_intervl"):
        PollSettings.from_limits({"max_intervl": 3})
    assert PollSettings.from_limits({"max_interval": 3}).max_interval == 3


# --------------------------------------------------------------------------- when to poll next


def offline_scheduler(n_rows: int = 1, **settings: Any) -> tuple[Any, Batch]:
    """A scheduler over a batch of ``n_rows`` running rows, with no server and no jitter."""
    from plextera_data.poll import PollSettings, Scheduler

    rows = [
        RowState(key=i, position=i, fingerprint=str(i), run_id=f"run-{i}", status="PROCESSING")
        for i in range(n_rows)
    ]
    client = Client(api_key="k", base_url="http://127.0.0.1:9")
    batch = Batch(client, Ledger(rows, pd.RangeIndex(n_rows), workflow_id="wf"), pacer=Pacer())
    scheduler = Scheduler(
        batch.ledger,
        batch.aclient,
        batch.pacer,
        batch.clock,
        PollSettings(jitter=0.0, **settings),
        clock=lambda: 0.0,
    )
    return scheduler, batch


def running(started_ago: float, *, k: int = 0, n: int = 1, step_ended_at: float = 0.0) -> Any:
    """A running run as the API would describe it, started ``started_ago`` seconds ago (by the
    client's clock), ``k`` of ``n`` steps done, the last one ending ``step_ended_at`` s in."""
    from datetime import timedelta

    from plextera_data.models import Run

    start = datetime.now(UTC) - timedelta(seconds=started_ago)
    return Run(
        id="run-0",
        status="PROCESSING",
        created_at=start,
        started_at=start,
        updated_at=start + timedelta(seconds=step_ended_at) if k else start,
        steps_completed=k,
        steps_total=n,
    )


def finished(seconds: float, boundaries: dict[int, float] | None = None) -> tuple[Any, Any]:
    from datetime import timedelta

    from plextera_data.models import Run

    start = datetime(2026, 1, 1, tzinfo=UTC)
    run = Run(
        id="done",
        status="COMPLETED",
        started_at=start,
        completed_at=start + timedelta(seconds=seconds),
    )
    return _RowPlan(interval=2.0, boundaries=dict(boundaries or {})), run


def test_without_history_the_interval_backs_off_to_the_cap() -> None:
    scheduler, batch = offline_scheduler(min_interval=2.0, backoff=2.0, max_interval=30.0)
    row = batch.rows[0]
    plan = _RowPlan(2.0)
    delays = [scheduler.next_delay(row, plan, running(1.0)) for _ in range(6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_finished_runs_predict_the_next_poll() -> None:
    scheduler, batch = offline_scheduler(quantile=0.5, finish_margin=0.1)
    for seconds in (10.0, 12.0, 14.0, 30.0):
        scheduler.model.learn(*finished(seconds))
    plan = _RowPlan(2.0)
    # 11 s in: the finished runs still longer are 12, 14 and 30 s; their median is 14 s.
    delay = scheduler.next_delay(batch.rows[0], plan, running(11.0))
    assert delay == pytest.approx(14.0 - 11.0 + 0.1, abs=0.5)
    # Longer than any finished run: overdue, polled at a short interval that grows.
    overdue = [scheduler.next_delay(batch.rows[0], plan, running(45.0)) for _ in range(3)]
    assert overdue == [0.5, 1.0, 2.0]


def test_a_step_boundary_predicts_the_end_from_the_steps_share() -> None:
    scheduler, batch = offline_scheduler(finish_margin=0.0)
    plan = _RowPlan(2.0)
    row = batch.rows[0]
    # Nothing learned yet: 1 of 4 steps took 5 s, so the run should end at 20 s.
    delay = scheduler.next_delay(row, plan, running(6.0, k=1, n=4, step_ended_at=5.0))
    assert plan.boundaries == {1: pytest.approx(5.0)}
    assert delay == pytest.approx(20.0 - 6.0, abs=0.5)
    # Finished runs of the batch spent half their time in step 1: the end moves to 10 s.
    for seconds in (10.0, 20.0, 30.0):
        scheduler.model.learn(*finished(seconds, {1: seconds / 2}))
    plan = _RowPlan(2.0)
    delay = scheduler.next_delay(row, plan, running(6.0, k=1, n=4, step_ended_at=5.0))
    assert delay == pytest.approx(10.0 - 6.0, abs=0.5)


def test_elapsed_time_follows_the_api_clock_not_a_skewed_client_clock() -> None:
    from datetime import timedelta

    scheduler, batch = offline_scheduler()
    row = batch.rows[0]
    run = running(5.0)  # by the API's clock, started 5 s ago
    assert scheduler._elapsed(row, run) == pytest.approx(5.0, abs=2.0)
    # The client's clock is 10 minutes ahead of the API's: a new run's createdAt reads 600 s
    # before the moment its answer arrives, and a run started 5 s ago reads 605 s ago.
    ahead = timedelta(seconds=600)
    skewed = running(605.0)
    assert scheduler._elapsed(row, skewed) == pytest.approx(605.0, abs=2.0)
    batch.clock.note(datetime.now(UTC) - ahead, received_at=datetime.now(UTC))
    assert batch.clock.offset == pytest.approx(600.0, abs=2.0)
    # A slower answer (more latency) never makes the estimate worse.
    batch.clock.note(datetime.now(UTC) - ahead, received_at=datetime.now(UTC) + ahead)
    assert batch.clock.offset == pytest.approx(600.0, abs=2.0)
    assert scheduler._elapsed(row, skewed) == pytest.approx(5.0, abs=2.0)


def test_polling_writes_status_changes_and_each_final_run_once(tmp_path: Any) -> None:
    import sqlite3

    import plextera_data as px

    sim = Simulator(seed=3, speed=None)  # a manual clock
    with sim.serve() as server:
        client = Client(api_key=sim.api_key, base_url=server.base_url)
        seconds = [1.0, 2.0, 50.0, 60.0]
        frame = pd.DataFrame({"durationSeconds": seconds}, index=["a", "b", "c", "d"])
        journal = tmp_path / "poll.db"
        batch = px.submit(
            frame, "variable-duration", client=client, journal=journal, progress=False
        )
        sim.clock.advance(10)  # a and b end; c and d still run
        with pytest.raises(errors.BatchTimeoutError):
            batch.wait(timeout=0.5, **FAST)

        def on_disk() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
            with sqlite3.connect(journal) as db:
                statuses = dict(db.execute("SELECT run_id, status FROM rows"))
                query = "SELECT run_id, final_json, recorded_at FROM runs"
                finals = {r: (j, t) for r, j, t in db.execute(query)}
            return statuses, finals

        statuses, finals = on_disk()
        assert statuses == {r.run_id: r.status for r in batch.rows}
        assert sorted(statuses.values()) == ["COMPLETED", "COMPLETED", "PROCESSING", "PROCESSING"]
        ended = {r.run_id for r in batch.rows[:2]}
        assert set(finals) == ended
        for run_id in ended:
            assert json.loads(finals[run_id][0]) == sim.run_model(run_id)

        sim.clock.advance(60)
        batch.wait(**FAST)
        statuses, finals_after = on_disk()
        assert set(statuses.values()) == {"COMPLETED"}
        assert set(finals_after) == {r.run_id for r in batch.rows}
        for run_id in ended:  # stored once: the first record is untouched
            assert finals_after[run_id] == finals[run_id]
        assert_all_accounted(batch, sim)


# --------------------------------------------------------------------------- censored durations


def test_running_runs_count_as_lasting_at_least_their_elapsed_time() -> None:
    from plextera_data.poll import DurationModel

    model = DurationModel(min_interval=2.0)
    for seconds in (1.0, 3.0):
        model.learn(*finished(seconds))
    model.observe(_RowPlan(2.0), 2.0)  # a run seen running 2 s in
    # Kaplan-Meier: at 1 s, 1 of 3 at risk ends (2/3 left); the running run leaves the risk set
    # at 2 s; at 3 s the last one at risk ends.
    assert model.survival(0.5) == 1.0
    assert model.survival(2.5) == pytest.approx(2 / 3)
    assert model.survival(3.0) == 0.0
    # Seen again later, a run's earlier sighting no longer counts.
    plan = _RowPlan(2.0)
    model.observe(plan, 1.0)
    model.observe(plan, 4.0)
    assert model.censored == [2.0, 4.0]
    model.observe(plan, None)  # it ended
    assert model.censored == [2.0]


def test_a_batch_started_together_is_not_overdue_past_its_finished_runs() -> None:
    scheduler, batch = offline_scheduler(min_interval=2.0, finish_margin=0.1)
    # Every run started at once: 2 s in, 3 have finished and 27 were seen running at 2 s. No
    # finished run lasted longer than 2 s, yet 90 % of the batch did.
    for seconds in (1.0, 1.5, 2.0):
        scheduler.model.learn(*finished(seconds))
    for _ in range(27):
        scheduler.model.observe(_RowPlan(2.0), 2.0)
    assert scheduler.model.survival(2.0) == pytest.approx(0.9)
    # Runs ended at a share 0.1 per 2 s: about 18 s to go. The next poll goes at the geometric
    # mean of that and 0.75 x min_interval (sqrt(27) = 5.2 s), not at the overdue follow-up.
    delay = scheduler.next_delay(batch.rows[0], _RowPlan(2.0), running(2.0))
    assert delay == pytest.approx(27**0.5 + 0.1, abs=0.3)
    # A run of several steps that has not ended a step yet is still followed up as overdue: its
    # first step boundary says more than the batch's tail.
    plan = _RowPlan(2.0)
    steps = [scheduler.next_delay(batch.rows[0], plan, running(2.0, n=4)) for _ in range(2)]
    assert steps == [0.5, 1.0]


def test_past_almost_every_run_of_the_batch_is_overdue() -> None:
    scheduler, batch = offline_scheduler(min_interval=2.0)
    for seconds in [1.0 + 0.1 * i for i in range(19)]:
        scheduler.model.learn(*finished(seconds))
    scheduler.model.observe(_RowPlan(2.0), 2.9)  # 1 of 20 runs still running: 5 % < 10 %
    plan = _RowPlan(2.0)
    delays = [scheduler.next_delay(batch.rows[0], plan, running(3.0)) for _ in range(3)]
    assert delays == [0.5, 1.0, 2.0]


def test_with_events_a_run_without_its_event_is_polled_in_the_end() -> None:
    """Runs whose event was lost look like long runs to the Kaplan-Meier estimate: 5 or 6 of
    38 left hold its tail above overdue_share for ever. Twice the longest finished
    run, they are polled; with nothing finished at all, at their first decision."""
    clock = [0.0]
    scheduler, batch = offline_scheduler(n_rows=6, min_interval=2.0)
    scheduler._clock = lambda: clock[0]
    scheduler.slack = 30.0
    assert scheduler.pick_up() == 6
    row = batch.rows[0]
    plan = scheduler._plans[row.position]
    assert scheduler._event_recheck(row, plan) is None  # nothing finished: poll it
    for seconds in [1.0 + 0.5 * i for i in range(32)]:  # 1 s .. 16.5 s
        scheduler.model.learn(*finished(seconds))
    for other in batch.rows[1:]:
        scheduler.model.observe(scheduler._plans[other.position], 30.0)
    clock[0] = 30.0
    assert scheduler.model.survival(30.0) > scheduler.model.overdue_share
    assert scheduler._event_recheck(row, plan) is not None  # 30 s < 2 x 16.5 s: wait on
    clock[0] = 34.0
    assert scheduler.model.survival(34.0) > scheduler.model.overdue_share
    assert scheduler._event_recheck(row, plan) is None  # past 33 s: poll it


def test_a_run_its_event_finished_before_pick_up_teaches_the_model() -> None:
    scheduler, batch = offline_scheduler(n_rows=1)
    _, run = finished(7.0)
    scheduler.forget(batch.rows[0], run)  # never picked up
    assert list(scheduler.model.durations) == [7.0]


def test_with_nothing_learned_only_probe_rows_are_polled_at_first() -> None:
    clock = [0.0]
    scheduler, batch = offline_scheduler(n_rows=20, min_interval=2.0, finish_margin=0.1)
    scheduler._clock = lambda: clock[0]
    assert scheduler.pick_up() == 20
    # One row in ten is polled at min_interval; the others only decide then.
    assert sum(plan.deferred for plan in scheduler._plans.values()) == 18
    assert sorted(due for due, _, _ in scheduler._heap) == [2.0] * 20
    clock[0] = 2.0
    deferred = batch.rows[1]
    plan = scheduler._plans[deferred.position]
    assert plan.deferred
    # The probes told nothing (fewer than 3 finished runs): the row is polled now.
    assert scheduler.deferred_delay(deferred, plan) is None
    # They told that 3 of 30 runs ended within 2 s: the row waits as a polled one would.
    for seconds in (1.0, 1.5, 2.0):
        scheduler.model.learn(*finished(seconds))
    for _ in range(27):
        scheduler.model.observe(_RowPlan(2.0), 2.0)
    assert scheduler.deferred_delay(deferred, plan) == pytest.approx(27**0.5 + 0.1)


def test_the_poller_follows_the_clients_clock_rate_for_a_sped_up_simulator() -> None:
    """Against a simulator running 100x, with no time_scale given: the client is told the
    simulator's speed (``clock_rate``), and the poller's idea of the API's time follows the
    simulated clock (the runs' times are simulated; polls must be spaced in wall time)."""
    import plextera_data as px
    from plextera_data.poll import PollSettings, Scheduler

    sim = Simulator(seed=4, speed=SPEED)
    with sim.serve() as server:
        client = Client(api_key=sim.api_key, base_url=server.base_url, clock_rate=SPEED)
        assert client.aclient.clock_rate == SPEED
        frame = pd.DataFrame({"durationSeconds": [5.0, 10.0, 20.0]})
        batch = px.submit(frame, "variable-duration", client=client, progress=False)

        def scheduler(settings: PollSettings) -> Scheduler:
            return Scheduler(batch.ledger, batch.aclient, batch.pacer, batch.clock, settings)

        async def check() -> None:
            fast = scheduler(PollSettings())
            assert fast.time_scale == pytest.approx(1 / SPEED)
            gap = (fast._api_now() - sim.clock.now()).total_seconds()
            assert abs(gap) < 30  # simulated seconds: 0.3 s of wall time at 100x
            explicit = scheduler(PollSettings(time_scale=0.5))
            assert explicit.time_scale == 0.5  # a setting wins over the client's rate

        asyncio.run(check())
        batch.wait(progress=False)
        assert_all_accounted(batch, sim)
        assert sum(r.polls for r in batch.rows) <= 3 * 6


# --------------------------------------------------------------------------- cost per poll


def sorted_quantile(values: list[float], q: float) -> float:
    """The quantile as the model's docstring defines it, computed from scratch."""
    values = sorted(values)
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    durations=st.lists(st.integers(1000, 60_000).map(lambda ms: ms / 1000), max_size=40),
    firsts=st.lists(st.floats(0.1, 20.0), max_size=40),
    seen_running=st.lists(st.floats(0.0, 70.0), max_size=40),
    elapsed=st.floats(0.0, 70.0),
)
def test_the_incremental_model_predicts_as_from_its_samples_sorted_afresh(
    durations: list[float], firsts: list[float], seen_running: list[float], elapsed: float
) -> None:
    """Samples kept sorted as they come give the predictions that filtering and sorting every
    sample at each poll gives (the model before it was incremental)."""
    from plextera_data.poll import DurationModel

    q = 0.35
    model = DurationModel(q, min_interval=2.0)
    for seconds, boundary in zip(durations, _shares(durations), strict=True):
        model.learn(*finished(seconds, {1: boundary}))
    for t in firsts:
        model.learn_boundary(1, t)
    plans = [_RowPlan(2.0) for _ in seen_running]
    for plan, t in zip(plans, seen_running, strict=True):
        model.observe(plan, t)
    for plan in plans[::3]:  # seen again later, or ended
        model.observe(plan, None if plan.observed is None or plan.observed > 50 else elapsed)
    assert list(model.censored) == sorted(p.observed for p in plans if p.observed is not None)

    # After step 1 of 4: the step's share among the finished runs.
    shares = [b / d for d, b in zip(durations, _shares(durations), strict=True)]
    step = _RowPlan(2.0, boundaries={1: 3.0}, last_k=1)
    want = 3.0 / sorted_quantile(shares, 1 - q) if len(shares) >= 3 else 3.0 / 0.25
    assert model.predict_end(step, running(0.0, n=4), elapsed) == want

    # Before step 1 ends: the first boundaries later than the elapsed time.
    later = [t for t in firsts if t > elapsed]
    end = model.predict_end(_RowPlan(2.0), running(0.0, n=4), elapsed)
    if len(firsts) >= 3 and later:
        assert end == sorted_quantile(later, q)
    # One step: the finished durations still longer than the elapsed time.
    longer = [d for d in durations if d > elapsed]
    end = model.predict_end(_RowPlan(2.0), running(0.0), elapsed)
    if len(durations) < 3:
        assert end is None
    elif len(longer) >= 3:
        assert end == sorted_quantile(longer, q)


def _shares(durations: list[float]) -> list[float]:
    """Where step 1 of each finished run ended: 20-80 % of its duration."""
    return [d * (0.2 + 0.6 * (i % 5) / 4) for i, d in enumerate(durations)]


def test_the_kaplan_meier_curve_is_the_product_over_the_finished_runs() -> None:
    """In a loop (a few finished runs) or vectorized (many), the curve is the same product, in
    the same order, as the model computed it before (so the decisions are the same to the last
    bit)."""
    import bisect

    from plextera_data.poll import _VECTOR_FROM, _kaplan_meier

    rng = random.Random(5)
    for size in (1, _VECTOR_FROM - 1, _VECTOR_FROM, 2 * _VECTOR_FROM):
        durations = sorted(rng.uniform(0.5, 20.0) for _ in range(size))
        censored = sorted(rng.uniform(0.0, 25.0) for _ in range(300))
        s, expected = 1.0, []
        for i, d in enumerate(durations):
            s *= 1.0 - 1.0 / (size - i + len(censored) - bisect.bisect_left(censored, d))
            expected.append(s)
        times, surviving = _kaplan_meier(durations, rng.sample(censored, len(censored)))
        assert times == durations
        assert surviving == expected, size
    assert _kaplan_meier([], [1.0]) == ([], [])


def test_a_prediction_reads_a_few_samples_not_every_one() -> None:
    """With 20,000 samples of each kind, one prediction reads a handful of them: no scan,
    no copy, no sort per poll (the cost per GET does not grow with the batch)."""
    from sortedcontainers import SortedList

    from plextera_data.poll import DurationModel

    reads = [0]

    class Counting(SortedList):  # type: ignore[misc]
        def __getitem__(self, index: Any) -> Any:
            reads[0] += 1
            return super().__getitem__(index)

        def __iter__(self) -> Any:
            raise AssertionError("a prediction iterated over every sample")

    rng = random.Random(3)
    model = DurationModel(0.35, min_interval=2.0)
    model.durations = Counting(rng.uniform(1.0, 60.0) for _ in range(20_000))
    model.first_boundaries = Counting(rng.uniform(0.5, 10.0) for _ in range(20_000))
    model.ratios = {1: Counting(rng.uniform(0.1, 0.5) for _ in range(20_000))}
    cases = [
        (_RowPlan(2.0, boundaries={1: 3.0}, last_k=1), running(0.0, n=4), 5.0),  # after step 1
        (_RowPlan(2.0), running(0.0, n=4), 2.0),  # before step 1 ends
        (_RowPlan(2.0), running(0.0), 30.0),  # one step
    ]
    for plan, run, elapsed in cases:
        reads[0] = 0
        for _ in range(10):
            assert model.predict_end(plan, run, elapsed) is not None
        assert reads[0] <= 2 * 10, reads[0]


def test_backing_off_counts_the_rows_whose_last_get_failed() -> None:
    scheduler, batch = offline_scheduler(n_rows=3)
    scheduler.pick_up()
    a, b = batch.rows[0], batch.rows[1]

    def dropped() -> errors.APIConnectionError:
        return errors.APIConnectionError("dropped", method="GET", path="/workflow-runs/x")

    scheduler._failed(a, dropped())
    scheduler._failed(a, dropped())  # the same row failing again still counts once
    scheduler._failed(b, dropped())
    assert scheduler.backing_off == 2
    scheduler._answered(a, running(3.0))
    assert scheduler.backing_off == 1
    done = Run(id="run-1", status="COMPLETED")
    scheduler._answered(b, done)
    assert scheduler.backing_off == 0
