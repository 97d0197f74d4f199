"""Benchmark: events finish runs without polling, against the batch poller alone, on the same runs.

    python bench/bench_events.py [--runs 2000] [--delay 0.5] [--lost 0.05]

The workloads and the virtual clock are those of ``bench_poll.py``: the simulator runs
in-process and the event loop's time jumps to the next timer when nothing is ready. Each run's
terminal event is "delivered" ``--delay`` simulated seconds after the run ends (an in-memory
event store that releases it then, carrying the run as the API describes it at that moment),
``--lost`` of them never. Reported per workload and strategy: GETs per run (all runs, and the
runs whose event arrived), and the median and 90th percentile delay from a run ending to the
batch seeing it, in simulated seconds.

Targets (issue "Events finish runs without polling"): at most 0.1 GET per run whose event
arrives, and a median delay within 0.2 s of the delivery delay.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from bench_poll import (
    PIPELINE,
    LoopClock,
    VirtualTimeLoop,
    workloads,
)  # a script: bench/ is on the path

from plextera_data.client import Client
from plextera_data.clock import ApiClock
from plextera_data.events_feed import EventFeed
from plextera_data.ledger import Ledger, RowState
from plextera_data.models import Run
from plextera_data.pacing import Pacer
from plextera_data.poll import PollSettings, Scheduler
from plextera_data.simulator import Simulator


@dataclass
class Event:
    """What the feed reads of an event."""

    event_type: str
    run: Run


class DelayedEvents:
    """An event store whose events appear ``delay`` seconds after their run ends (virtual time);
    a share ``lost`` never appears."""

    def __init__(
        self,
        sim: Simulator,
        run_ids: list[str],
        loop: asyncio.AbstractEventLoop,
        *,
        delay: float,
        lost: float,
        seed: int,
    ) -> None:
        self.sim = sim
        self.loop = loop
        rng = random.Random(seed)
        start = sim.clock.start
        releases = []
        self.lost: set[str] = set()
        for run_id in run_ids:
            if rng.random() < lost:
                self.lost.add(run_id)
                continue
            finished = sim.record(run_id).finished_at  # planned: the run has not ended yet
            releases.append(((finished - start).total_seconds() + delay, run_id))
        releases.sort()
        self._times = [t for t, _ in releases]
        self._ids = [r for _, r in releases]

    def read_since(self, cursor: int = 0) -> tuple[list[Event], int]:
        upto = bisect.bisect_right(self._times, self.loop.time())
        events = []
        for run_id in self._ids[cursor:upto]:
            model = self.sim.run_model(run_id)
            kind = (
                "workflow.run.completed"
                if model["status"] == "COMPLETED"
                else "workflow.run.failed"
            )
            events.append(Event(kind, Run.from_dict(model)))
        return events, max(cursor, upto)


async def batch_poller(
    sim: Simulator,
    run_ids: list[str],
    seen: dict[str, float],
    events: DelayedEvents | None,
) -> None:
    loop = asyncio.get_running_loop()
    client = Client(**sim.client_options())
    rows = [
        RowState(key=i, position=i, fingerprint=str(i), run_id=run_id, status="PROCESSING")
        for i, run_id in enumerate(run_ids)
    ]

    class TimingLedger(Ledger):
        """Notes when each run was first seen terminal (by a poll or by its event)."""

        def record_run(self, row: RowState, run: Run, *, force_save: bool = False) -> bool:
            changed = super().record_run(row, run, force_save=force_save)
            if run.is_terminal and row.run_id not in seen:
                seen[str(row.run_id)] = loop.time()
            return changed

    workflow = str(sim.run_model(run_ids[0])["workflow"]["id"])
    ledger = TimingLedger(rows, pd.RangeIndex(len(rows)), workflow_id=workflow)
    settings = PollSettings(seed=1)
    scheduler = Scheduler(ledger, client.aclient, Pacer(clock=loop.time), ApiClock(), settings)
    feed_task = None
    if events is not None:
        feed = EventFeed(events, ledger, scheduler)
        scheduler.slack = settings.event_grace
        feed_task = loop.create_task(feed.run())
    try:
        await scheduler.run()
    finally:
        if feed_task is not None:
            feed_task.cancel()
    await client.aclient.aclose()


def measure(
    workflow: str, inputs: list[dict[str, Any]], strategy: str, args: argparse.Namespace
) -> dict[str, float]:
    loop = VirtualTimeLoop()
    asyncio.set_event_loop(loop)
    sim = Simulator(seed=11, clock=LoopClock(loop))
    sim.add_workflow(PIPELINE)
    run_ids = [sim.start_run(workflow, run_input) for run_input in inputs]
    seen: dict[str, float] = {}
    events = None
    if strategy == "events":
        events = DelayedEvents(sim, run_ids, loop, delay=args.delay, lost=args.lost, seed=5)
    loop.run_until_complete(batch_poller(sim, run_ids, seen, events))
    loop.close()
    start = sim.clock.start
    delays = {}
    for run_id in run_ids:
        finished = sim.finished_at(run_id)
        assert finished is not None
        delays[run_id] = seen[run_id] - (finished - start).total_seconds()
    assert sum(sim.stats.gets_after_terminal.values()) == 0
    arrived = [r for r in run_ids if events is None or r not in events.lost]
    all_delays = sorted(delays.values())
    return {
        "gets_per_run": sim.stats.total_gets / len(run_ids),
        "gets_per_arrived": sum(sim.stats.gets[r] for r in arrived) / max(1, len(arrived)),
        "median_delay": statistics.median(all_delays),
        "p90_delay": statistics.quantiles(all_delays, n=10)[-1],
        "median_delay_arrived": statistics.median(delays[r] for r in arrived),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.5, help="delivery delay (simulated s)")
    parser.add_argument("--lost", type=float, default=0.05, help="share of events never sent")
    args = parser.parse_args()
    print(
        f"{args.runs} runs per workload; delivery {args.delay:g} s after the end, "
        f"{args.lost:.0%} of events lost; simulated seconds; virtual clock\n"
    )
    print(
        "| workload | strategy | GETs per run | GETs per run with an event | median delay (s) | "
        "median delay with an event (s) | p90 delay (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (workflow, inputs) in workloads(args.runs).items():
        for strategy in ("polling", "events"):
            r = measure(workflow, inputs, strategy, args)
            with_event = f"{r['gets_per_arrived']:.2f}" if strategy == "events" else "-"
            print(
                f"| {name} | {strategy} | {r['gets_per_run']:.2f} | {with_event} | "
                f"{r['median_delay']:.2f} | {r['median_delay_arrived']:.2f} | "
                f"{r['p90_delay']:.2f} |",
                flush=True,
            )
    print(f"\n(run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
