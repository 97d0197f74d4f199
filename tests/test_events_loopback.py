"""2,000 runs' events delivered on loopback to a receiver process that is killed mid-stream.

The simulator (sped up) delivers with 10 % duplicates, 5 % lost deliveries and jitter that puts
events out of order; the receiver runs in its own process on a SQLite store, is SIGKILLed once
about a third of the events are stored, and is started again on the same port and store. Every
event acknowledged must be in the store, once; every event not lost must get there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from plextera_data.events import EventStore
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
        runs = [
            sim.start_run(
                "variable-duration",
                {"durationSeconds": 5 + (n * 7919 % RUNS) / 10, "simulate": {"fail": n % 9 == 0}},
            )
            for n in range(RUNS)
        ]  # they end over 200 simulated seconds: 2 s of wall time

        _wait_for(lambda: len(reader) >= RUNS // 3, 60, "a third of the events")
        first.send_signal(signal.SIGKILL)  # a crash: no shutdown, no flush
        first.wait(10)
        stored_at_kill = len(reader)
        second, _ = _start_receiver(path, port)
        processes.append(second)

        _wait_for(lambda: sim.deliveries.pending == 0, 120, "every delivery to settle")
        stats = sim.stats
        log = list(sim.deliveries.log)
        acknowledged = sim.deliveries.acknowledged()

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
    assert {event.run.id for event in stored.values()} <= set(runs)
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
