"""batch.wait(events=store): runs whose terminal event is stored finish without a GET; a failed
event without outputs costs one GET; runs whose event was lost are still polled and finish."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.models import TERMINAL_STATUSES
from plextera_data.simulator import DeliveryOptions, Simulator

SECRET = "whsec_test"
SPEED = 50.0
EVENTS = ["workflow.run.completed", "workflow.run.failed"]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Any]:
    store = px.events.EventStore(tmp_path / "events.db")
    with px.events.serve(SECRET, store=store) as hook:
        yield hook


def served(deliveries: DeliveryOptions, hook: Any) -> tuple[Simulator, Any]:
    sim = Simulator(seed=3, speed=SPEED, deliveries=deliveries)
    sim.create_subscription(hook.url + "hooks", EVENTS, SECRET, None)
    return sim, sim.serve()


def durations(n: int, seed: int = 1) -> pd.DataFrame:
    rng = random.Random(seed)
    seconds = [round(rng.uniform(2.0, 20.0), 2) for _ in range(n)]
    return pd.DataFrame({"rowId": range(n), "durationSeconds": seconds})


def test_runs_with_events_finish_without_a_get(receiver: Any) -> None:
    # A manual clock: the runs end when the clock is advanced, from another thread, while the
    # batch waits; a poll would come only an hour after its planned time.
    sim = Simulator(seed=3, speed=None, deliveries=DeliveryOptions())
    sim.create_subscription(receiver.url + "hooks", EVENTS, SECRET, None)
    with sim, sim.serve() as server:
        client = px.Client(**server.client_options())
        batch = px.submit(durations(120), "variable-duration", client=client, progress=False)
        later = threading.Timer(0.2, sim.clock.advance, args=(60.0,))
        later.start()
        try:
            batch.wait(events=receiver.store, progress=False, event_grace=3600, timeout=60)
        finally:
            later.join()
        assert all(r.status in TERMINAL_STATUSES for r in batch.rows)
        for row in batch.rows:
            assert row.run_id is not None
            assert row.status == sim.run_model(row.run_id)["status"]
        feed = batch.events_feed
        assert feed is not None
        assert feed.finished == 120
        assert sim.stats.total_gets == 0  # every run finished by its event
        tables = batch.tables()
        assert len(tables.runs) == 120
        assert tables.outputs["run_id"].nunique() == 120  # the events carried the outputs


def test_lost_and_duplicated_events_cost_delay_never_a_run(receiver: Any) -> None:
    options = DeliveryOptions(lost=0.1, duplicate=0.1, jitter=2.0)
    sim, server = served(options, receiver)
    with sim, server:
        client = px.Client(**server.client_options())
        batch = px.submit(
            durations(150, seed=2), "variable-duration", client=client, progress=False
        )
        # Polls wait 300 simulated seconds (6 s) past their planned time for the events.
        batch.wait(events=receiver.store, progress=False, event_grace=300, timeout=120)
        assert all(r.status in TERMINAL_STATUSES for r in batch.rows)
        with_event = {event.run.id for event in receiver.store.events()}
        lost = [r for r in batch.rows if r.run_id not in with_event]
        assert 5 <= len(lost) <= 30  # about 10 % of the events never came
        for row in lost:  # found by polling, later
            assert row.run_id is not None
            assert sim.stats.gets[row.run_id] >= 1
        arrived = [r.run_id for r in batch.rows if r.run_id in with_event]
        gets = sum(sim.stats.gets[run_id] for run_id in arrived)
        assert gets <= 0.1 * len(arrived)  # the runs whose event came were (nearly) never polled
        assert sum(sim.stats.gets_after_terminal.values()) == 0
        assert sim.stats.started_twice == {}


def test_with_every_event_lost_the_runs_are_polled_and_finish(receiver: Any) -> None:
    """A subscription that delivers nothing (a receiver nobody can reach) costs the grace, not
    the batch: with no run finished by an event, each run is polled at its first decision."""
    sim, server = served(DeliveryOptions(lost=1.0), receiver)
    with sim, server:
        client = px.Client(**server.client_options())
        batch = px.submit(durations(40), "variable-duration", client=client, progress=False)
        batch.wait(events=receiver.store, progress=False, event_grace=60, timeout=120)
        assert all(r.status in TERMINAL_STATUSES for r in batch.rows)
        assert receiver.store.events() == []
        feed = batch.events_feed
        assert feed is not None
        assert feed.finished == 0
        assert all(sim.stats.gets[r.run_id] >= 1 for r in batch.rows if r.run_id)
        assert sum(sim.stats.gets_after_terminal.values()) == 0
        assert sim.stats.started_twice == {}


def test_a_failed_event_without_outputs_is_fetched_once(receiver: Any) -> None:
    sim, server = served(DeliveryOptions(), receiver)
    with sim, server:
        client = px.Client(**server.client_options())
        frame = pd.DataFrame(
            {"simulate": [{"fail": True, "failMessage": "no such customer"}, {}, {}]}
        )
        batch = px.submit(frame, "daily-lab-loader", client=client, progress=False)
        batch.wait(events=receiver.store, progress=False, event_grace=300)
        failed = batch.rows[0]
        assert failed.status == "FAILED"
        assert "no such customer" in (failed.error or "")
        feed = batch.events_feed
        assert feed is not None
        assert feed.fetched == 1
        assert failed.run_id is not None
        assert sim.stats.gets[failed.run_id] == 1
        assert sum(sim.stats.gets.values()) == 1
