"""A 2,000-row batch whose events are delivered on loopback to a receiver process that is killed
mid-stream, while the batch waits on the events.

The simulator (sped up) delivers with 10 % duplicates, 5 % lost deliveries and jitter that puts
events out of order; the receiver runs in its own process on a SQLite store, is SIGKILLed once
about a third of the events are stored, and is started again on the same port and store. Every
event acknowledged must be in the store, once; every event not lost must get there; every run of
the batch finishes, those whose event came (almost) without a GET.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

import plextera_data as px
from plextera_data.events import EventStore
from plextera_data.models import TERMINAL_STATUSES
from plextera_data.simulator import DeliveryOptions, Simulator

SECRET = "whsec_loopback"
RUNS = 2000
ROOT = Path(__file__).resolve().parents[1]

RECEIVER = """
import signal, sys
from plextera_data.events import serve
server = serve(sys.argv[1], store=sys.argv[2], port=int(sys.argv[3]))
print(server.port, flush=True)
signal.sigwait({signal.SIGTERM})
"""


def _start_receiver(store: Path, port: int) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, SECRET, str(store), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the receiver prints its port once it accepts
    assert line.strip(), "the receiver process did not start"
    return process, int(line)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_2000_runs_delivered_through_a_receiver_restart(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "events.db"
    first, port = _start_receiver(path, 0)
    processes.append(first)
    options = DeliveryOptions(
        duplicate=0.10, lost=0.05, jitter=30.0, backoff=1.0, max_backoff=200.0, max_attempts=14
    )
    reader = EventStore(path)  # this process reads while the receiver process writes
    with Simulator(seed=21, speed=100, deliveries=options) as sim:
        headers = {"Authorization": f"api-key {sim.api_key}"}
        with sim.serve() as api:
            subscription = httpx.post(
                f"{api.base_url}/event-subscriptions",
                headers=headers,
                json={
                    "endpointUrl": f"http://127.0.0.1:{port}/hooks/plextera",
                    "eventTypes": ["workflow.run.completed", "workflow.run.failed"],
                    "signingSecret": SECRET,
                },
            )
            assert subscription.status_code == 201, subscription.text
            frame = pd.DataFrame(
                {
                    "durationSeconds": [5 + (n * 7919 % RUNS) / 10 for n in range(RUNS)],
                    "simulate": [{"fail": n % 9 == 0} for n in range(RUNS)],
                }
            )  # they end over 200 simulated seconds: 2 s of wall time
            client = px.Client(**api.client_options())
            batch = px.submit(
                frame, "variable-duration", client=client, concurrency=32, progress=False
            )
            restarted: list[tuple[subprocess.Popen[str], int]] = []

            def crash_and_restart() -> None:
                _wait_for(lambda: len(reader) >= RUNS // 3, 60, "a third of the events")
                first.send_signal(signal.SIGKILL)  # a crash: no shutdown, no flush
                first.wait(10)
                restarted.append((first, len(reader)))
                second, _ = _start_receiver(path, port)
                processes.append(second)

            crash = threading.Thread(target=crash_and_restart)
            crash.start()
            try:
                # The receiver's durable commits take real time: at 100x its events come up to
                # 450 simulated seconds late. Polls wait 900 (9 s) for them.
                batch.wait(events=reader, progress=False, event_grace=900, timeout=180)
            finally:
                crash.join()
            _wait_for(lambda: sim.deliveries.pending == 0, 120, "every delivery to settle")
            stats = sim.stats
            log = list(sim.deliveries.log)
            acknowledged = sim.deliveries.acknowledged()
            final = {r.run_id: sim.run_model(r.run_id)["status"] for r in batch.rows if r.run_id}
        stored_at_kill = restarted[0][1]

    stored = {event.event_id: event for event in reader}
    lost = RUNS - len({a.event_id for a in log})
    # Every event acknowledged is stored (a kill never lost one), each once.
    assert acknowledged <= set(stored)
    assert len(stored) == len(reader) == len(set(stored))
    # Every event that was not lost got there, through the restart.
    assert stats.events_abandoned == 0
    assert set(stored) == {a.event_id for a in log}
    assert lost == stats.events_lost
    assert 0.02 * RUNS < lost < 0.08 * RUNS
    runs = {r.run_id for r in batch.rows}
    assert len(runs) == RUNS
    assert {event.run.id for event in stored.values()} <= runs
    assert len(reader.runs()) == len(stored)
    # The restart happened mid-stream, and deliveries failed meanwhile.
    assert RUNS // 3 <= stored_at_kill < RUNS * 0.9
    refused = [a for a in log if a.status is None]
    assert refused, "no delivery met the stopped receiver"
    assert all(a.event_id in stored for a in refused)  # each was retried until stored
    # Duplicates arrived and were stored once; events arrived out of order.
    assert 0.05 * RUNS < stats.events_duplicated < 0.15 * RUNS
    acked_per_event = Counter(a.event_id for a in log if a.acknowledged)
    assert all(reader.delivery_count(e) >= n for e, n in acked_per_event.items())
    assert sum(n > 1 for n in acked_per_event.values()) > 0.04 * RUNS  # stored once all the same
    reached = sum(reader.delivery_count(e) for e in stored)
    assert sum(acked_per_event.values()) <= reached <= len(log)
    arrival = [event.occurred_at for event in stored.values()]
    assert arrival != sorted(arrival)
    failed = [e.run for e in stored.values() if e.event_type == "workflow.run.failed"]
    assert failed
    assert all(run.status == "FAILED" for run in failed)
    # The batch: every run finished as the API says, none started twice, none polled after its
    # end; the runs whose event came were (nearly) never polled, the others were.
    assert stats.started_twice == {}
    assert all(r.status in TERMINAL_STATUSES for r in batch.rows)
    assert all(r.status == final[r.run_id] for r in batch.rows if r.run_id)
    assert sum(stats.gets_after_terminal.values()) == 0
    with_event = {event.run.id for event in stored.values()}
    completed = {e.run.id for e in stored.values() if e.event_type == "workflow.run.completed"}
    gets_completed = sum(stats.gets[r] for r in completed) / len(completed)
    print(
        f"GETs per run: {stats.total_gets / RUNS:.3f}; per run with a completed event: "
        f"{gets_completed:.3f}; {len(with_event - completed)} failed events fetched once"
    )
    assert gets_completed <= 0.1
    # A failed event carries no step outputs: the run is fetched once, at once.
    assert all(stats.gets[r] == 1 for r in with_event - completed)
    assert all(stats.gets[r] >= 1 for r in runs - with_event)  # the lost events: polled
