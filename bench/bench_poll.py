"""Benchmark: the batch poller against fixed 1 s and 5 s polling, and its CPU per GET.

    python bench/bench_poll.py [--runs 2000 50000] [--rounds 1] [--slice 0.5] [--fixed-max 2000]

Two tables:

* *When it polls.* Per strategy and workload, the GET requests per run and the median (and 90th
  percentile) delay between a run finishing (the simulator's ``finished_at``) and the client
  seeing it terminal, in simulated seconds. The fixed-interval baselines run only for ``--runs``
  up to ``--fixed-max`` (every 1 s is 31 GETs per four-step run).
* *What its decisions cost.* The poller as it was before its model was made incremental
  (``plextera_data/poll.py`` at commit ``BASELINE_COMMIT``, loaded with ``git show``) against
  the current one, for every ``--runs``. "decide" is the scheduler's own CPU per GET
  (``time.process_time()`` spent in ``pick_up``, ``deferred_delay``, ``_answered`` and
  ``_failed``, less the ledger's share and the garbage collector's); "process" is the whole
  process's CPU per GET while polling (client, httpx and the in-process simulator included).
  The machine is shared, and CPU time per unit of work drifts by 2x with its load: so for each
  poller and workload the sizes run in separate processes *taking turns* in ``--slice`` second
  slices (SIGSTOP / SIGCONT, one running at a time), the largest measured once, the smaller
  ones over and over meanwhile (medians), so that every size sees the same minutes of the
  machine. Both pollers must decide alike: the table says whether every run got the same
  number of GETs and was seen terminal at the same simulated instant.

The simulator runs in-process on a *virtual clock*: the event loop's time jumps to the next timer
whenever nothing is ready, and the simulator's clock is the loop's time. Polling 2,000 runs every
simulated second needs 2,000 requests per second, more than a shared 2-CPU machine serves over
loopback, which would make the 1 s baseline look worse than it is; on virtual time every
strategy gets instant, unlimited answers, so the comparison is about *when* each one polls.

Workloads (durations are known, seeded):

* ``single-step``: ``variable-duration`` runs (one step), durations uniform in 0.5-20 s. A run
  says nothing about its end before it ends, so only the batch's finished durations help.
* ``four-step``: a four-step document pipeline whose steps scale with the document's size
  (each step ``pages * cost * U(0.85, 1.15)``), total durations about 2-60 s. ``progress``
  and ``updatedAt`` tell the poller when each step ended.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from plextera_data.client import Client
from plextera_data.clock import ApiClock
from plextera_data.ledger import Ledger, RowState
from plextera_data.models import Run
from plextera_data.pacing import Pacer
from plextera_data.poll import PollSettings, Scheduler
from plextera_data.simulator import SimClock, Simulator, StepSpec, Workflow

#: ``main`` before the scheduler's model was made incremental: the baseline poller.
BASELINE_COMMIT = "f300b1b"
ROOT = Path(__file__).resolve().parent.parent


def baseline_poll_module() -> types.ModuleType:
    """``plextera_data/poll.py`` as it was at ``BASELINE_COMMIT``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:plextera_data/poll.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("bench_poll_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BASELINE_COMMIT}:plextera_data/poll.py", "exec"), module.__dict__)
    return module


@dataclass
class CpuMeter:
    """CPU seconds (``time.process_time()``): deciding, the ledger within that, and the garbage
    collector (all of it, and the part of it that ran within the decisions, ledger excluded)."""

    decide: float = 0.0
    ledger: float = 0.0
    gc: float = 0.0
    gc_in_decide: float = 0.0
    gc_in_ledger: float = 0.0
    _gc_started: float = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: adds up the collector's CPU time."""
        if phase == "start":
            self._gc_started = time.process_time()
        else:
            self.gc += time.process_time() - self._gc_started

    def decide_us(self, gets: int, *, with_gc: bool) -> float:
        """Decision CPU per GET, the ledger's share left out (and the collector's, unless
        ``with_gc``)."""
        seconds = self.decide - self.ledger
        if not with_gc:
            seconds -= self.gc_in_decide - self.gc_in_ledger
        return seconds / gets * 1e6


#: The scheduler's methods that decide (their CPU time is the "decide" column, less the ledger's).
DECIDING = ("pick_up", "deferred_delay", "_answered", "_failed")


def timed(scheduler_cls: type[Scheduler], meter: CpuMeter) -> type[Scheduler]:
    """``scheduler_cls``, adding the CPU time of its decisions to ``meter.decide``."""
    clock = time.process_time

    def clocked(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Scheduler, *args: Any) -> Any:
            t, g = clock(), meter.gc
            try:
                return method(self, *args)
            finally:
                meter.decide += clock() - t
                meter.gc_in_decide += meter.gc - g

        return run

    methods = {name: clocked(getattr(scheduler_cls, name)) for name in DECIDING}
    return type(f"Timed{scheduler_cls.__name__}", (scheduler_cls,), methods)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer when nothing is ready (no real I/O)."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not ready and scheduled:
            self._virtual = max(self._virtual, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]


class LoopClock(SimClock):
    """The simulator's clock, reading the virtual loop's time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(speed=None)
        self._loop = loop

    def elapsed(self) -> float:
        return self._loop.time()


def _pipeline_step(name: str, cost: float) -> StepSpec:
    def duration(rng: random.Random, run_input: dict[str, Any]) -> float:
        return float(run_input["pages"]) * cost * rng.uniform(0.85, 1.15)

    return StepSpec(name=name, type="custom", duration=duration)


PIPELINE = Workflow(
    id="document-pipeline",
    name="Document Pipeline",
    start_delay=0.0,
    steps=(
        _pipeline_step("Upload", 0.2),
        _pipeline_step("Extract", 0.5),
        _pipeline_step("Validate", 0.15),
        _pipeline_step("Route", 0.15),
    ),
)


def workloads(n: int) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    rng = random.Random(2024)
    return {
        "single-step (0.5-20 s)": (
            "variable-duration",
            [{"durationSeconds": round(rng.uniform(0.5, 20.0), 3)} for _ in range(n)],
        ),
        "four-step (2-60 s)": (
            "document-pipeline",
            [{"pages": rng.randint(2, 60)} for _ in range(n)],
        ),
    }


SETTINGS: dict[str, Any] = {}

Strategy = Callable[[Simulator, list[str], dict[str, float]], Any]


async def fixed_interval(
    sim: Simulator, run_ids: list[str], seen: dict[str, float], interval: float
) -> None:
    """Baseline: poll every run every ``interval`` s (first poll ``interval`` s after start)."""
    loop = asyncio.get_running_loop()
    client = Client(
        api_key=sim.api_key, base_url=sim.in_process_base_url, transport=sim.transport()
    )

    async def one(run_id: str) -> None:
        while True:
            await asyncio.sleep(interval)
            run = await client.aclient.get_run(run_id, retry=False)
            if run.is_terminal:
                seen[run_id] = loop.time()
                return

    await asyncio.gather(*(one(r) for r in run_ids))
    await client.aclient.aclose()


async def adaptive(
    sim: Simulator,
    run_ids: list[str],
    seen: dict[str, float],
    scheduler_cls: type[Scheduler] = Scheduler,
    meter: CpuMeter | None = None,
) -> None:
    """The batch poller (default settings, real-time scale)."""
    meter = meter if meter is not None else CpuMeter()
    clock = time.process_time
    loop = asyncio.get_running_loop()
    client = Client(
        api_key=sim.api_key, base_url=sim.in_process_base_url, transport=sim.transport()
    )
    rows = [
        RowState(key=i, position=i, fingerprint=str(i), run_id=run_id, status="PROCESSING")
        for i, run_id in enumerate(run_ids)
    ]

    class TimingLedger(Ledger):
        """Notes when each run was first seen terminal."""

        def record_run(self, row: RowState, run: Run, *, force_save: bool = False) -> bool:
            t, g = clock(), meter.gc
            changed = super().record_run(row, run, force_save=force_save)
            if run.is_terminal and row.run_id not in seen:
                seen[str(row.run_id)] = loop.time()
            meter.ledger += clock() - t
            meter.gc_in_ledger += meter.gc - g
            return changed

    ledger = TimingLedger(rows, pd.RangeIndex(len(rows)), workflow_id=sim_workflow(sim, run_ids[0]))
    scheduler = scheduler_cls(
        ledger,
        client.aclient,
        Pacer(clock=loop.time),
        ApiClock(),
        PollSettings(seed=1, **SETTINGS),
    )
    await scheduler.run()
    await client.aclient.aclose()


def sim_workflow(sim: Simulator, run_id: str) -> str:
    return str(sim.run_model(run_id)["workflow"]["id"])


@dataclass
class Outcome:
    """One poller over one workload: what it decided and what that cost."""

    gets_per_run: float
    median_delay: float
    p90_delay: float
    #: Of every run's GET count and the loop time it was seen terminal, in start order: two
    #: pollers with the same digest decided alike.
    digest: str
    decide_us: float = 0.0  # scheduler CPU per GET, the collector's share left out
    decide_gc_us: float = 0.0  # the same with it
    process_us: float = 0.0  # whole process CPU per GET while polling
    gc_us: float = 0.0  # the garbage collector's CPU per GET (within process_us)


def measure(
    workflow: str,
    inputs: list[dict[str, Any]],
    strategy: str,
    scheduler_cls: type[Scheduler] = Scheduler,
) -> Outcome:
    loop = VirtualTimeLoop()
    asyncio.set_event_loop(loop)
    sim = Simulator(seed=11, clock=LoopClock(loop))
    sim.add_workflow(PIPELINE)
    run_ids = [sim.start_run(workflow, run_input) for run_input in inputs]
    seen: dict[str, float] = {}
    meter = CpuMeter()
    if strategy == "adaptive":
        coro = adaptive(sim, run_ids, seen, timed(scheduler_cls, meter), meter)
    else:
        coro = fixed_interval(sim, run_ids, seen, float(strategy.split()[1]))
    gc.callbacks.append(meter.on_gc)
    cpu = time.process_time()
    try:
        loop.run_until_complete(coro)
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(meter.on_gc)
    loop.close()
    start = sim.clock.start
    delays = []
    for run_id in run_ids:
        finished = sim.finished_at(run_id)
        assert finished is not None
        delays.append(seen[run_id] - (finished - start).total_seconds())
    assert sum(sim.stats.gets_after_terminal.values()) == 0
    quantiles = statistics.quantiles(delays, n=10)
    total = sim.stats.total_gets
    return Outcome(
        gets_per_run=total / len(run_ids),
        median_delay=statistics.median(delays),
        p90_delay=quantiles[-1],
        digest=hashlib.sha256(
            repr([(sim.stats.gets[r], seen[r]) for r in run_ids]).encode()
        ).hexdigest(),
        decide_us=meter.decide_us(total, with_gc=False),
        decide_gc_us=meter.decide_us(total, with_gc=True),
        process_us=cpu / total * 1e6,
        gc_us=meter.gc / total * 1e6,
    )


def strategies_table(runs: int) -> None:
    """The batch poller against fixed-interval polling, on ``runs`` runs per workload."""
    print(f"{runs} runs per workload; delays in simulated seconds; virtual clock\n")
    print("| workload | strategy | GETs per run | median delay (s) | p90 delay (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, (workflow, inputs) in workloads(runs).items():
        for strategy in ("fixed 1", "fixed 5", "adaptive"):
            result = measure(workflow, inputs, strategy)
            label = {"fixed 1": "every 1 s", "fixed 5": "every 5 s"}.get(strategy, "batch poller")
            print(
                f"| {name} | {label} | {result.gets_per_run:.2f} | "
                f"{result.median_delay:.2f} | {result.p90_delay:.2f} |",
                flush=True,
            )
    print()


class Worker:
    """A child process measuring one poller on one workload of ``n`` runs (``--worker``): one
    JSON line per measured batch, once or (``repeat``) until stopped. Started paused."""

    def __init__(self, n: int, workload: str, poller: str, *, repeat: bool) -> None:
        self.n, self.repeat = n, repeat
        command = [sys.executable, __file__, "--worker", str(n), workload, poller]
        self.process = subprocess.Popen(
            [*command, "--repeat"] if repeat else command, stdout=subprocess.PIPE, text=True
        )
        self.pause()
        self.outcomes: list[Outcome] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.outcomes.append(Outcome(**json.loads(line)))

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def needed(self) -> bool:
        """Still to be given time: a batch measured once not finished, or fewer than three
        measured of one repeated."""
        return len(self.outcomes) < 3 if self.repeat else self.running

    def pause(self) -> None:
        if self.running:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)

    def finish(self) -> list[Outcome]:
        """Stop the process if it still runs; the batches it measured."""
        if self.running:
            self.process.kill()
        code = self.process.wait()
        self._reader.join()
        if code not in (0, -signal.SIGKILL) or not self.outcomes:
            raise RuntimeError(f"worker for {self.n} runs failed (exit {code})")
        return self.outcomes


def share_time(workers: list[Worker], time_slice: float) -> None:
    """Run the workers one at a time, in turn, ``time_slice`` s each (SIGSTOP / SIGCONT), until
    the ones measured once have finished and the repeated ones measured three batches: every
    worker sees the machine as it was during the same minutes, and they never compete."""
    while any(w.needed() for w in workers):
        for worker in workers:
            if worker.running:
                worker.resume()
                time.sleep(time_slice)
                worker.pause()


def cpu_table(runs: list[int], rounds: int, time_slice: float) -> None:
    """The baseline poller against the current one, on every workload and size.

    For each poller and workload, one worker per size shares the time (``share_time``): the
    largest batch is measured once per round, the smaller ones repeatedly meanwhile; medians.
    """
    pollers = ("before", "now")
    largest, smallest = max(runs), min(runs)
    results: dict[tuple[int, str, str], list[Outcome]] = {}
    for r in range(rounds):
        for name in workloads(1):
            for poller in pollers if r % 2 == 0 else pollers[::-1]:
                workers = [Worker(n, name, poller, repeat=n != largest) for n in runs]
                try:
                    share_time(workers, time_slice)
                finally:
                    measured = [(w.n, w.finish()) for w in workers]
                for n, outcomes in measured:
                    results.setdefault((n, name, poller), []).extend(outcomes)
                    decide = statistics.median(o.decide_us for o in outcomes)
                    print(
                        f"  round {r + 1}, {name}, {poller}, {n} runs: {len(outcomes)} "
                        f"batch(es), decide {decide:.1f} us/GET",
                        file=sys.stderr,
                        flush=True,
                    )
    print(
        f"CPU per GET (time.process_time()), medians; {rounds} round(s), sizes sharing the time in "
        f"{time_slice} s slices; delays in simulated seconds; GC: the garbage collector's share\n"
    )
    print(
        "| workload | runs | poller | GETs per run | median delay (s) | p90 delay (s) "
        "| decide (us/GET) | decide with GC | process (us/GET) | GC in process "
        "| batches | same GETs and delays |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    decide: dict[tuple[int, str, str], float] = {}
    for name in workloads(1):
        for n in runs:
            digest = results[(n, name, "before")][0].digest
            for poller in pollers:
                outcomes = results[(n, name, poller)]
                first = outcomes[0]
                decide[(n, name, poller)] = statistics.median(o.decide_us for o in outcomes)
                same = all(o.digest == digest for o in outcomes)
                print(
                    f"| {name} | {n} | {poller} | {first.gets_per_run:.2f} | "
                    f"{first.median_delay:.2f} | {first.p90_delay:.2f} | "
                    f"{decide[(n, name, poller)]:.1f} | "
                    f"{statistics.median(o.decide_gc_us for o in outcomes):.1f} | "
                    f"{statistics.median(o.process_us for o in outcomes):.0f} | "
                    f"{statistics.median(o.gc_us for o in outcomes):.0f} | "
                    f"{len(outcomes)} | {'yes' if same else 'NO'} |",
                    flush=True,
                )
    print()
    for name in workloads(1):
        for n in runs:
            if n != smallest:
                ratios = ", ".join(
                    f"{poller} {decide[(n, name, poller)] / decide[(smallest, name, poller)]:.2f}x"
                    for poller in pollers
                )
                print(f"decide at {n} runs / at {smallest}, {name}: {ratios}")


def worker(n: int, name: str, poller: str, *, repeat: bool) -> None:
    """Measure ``poller`` on the workload ``name`` of ``n`` runs; print each outcome as JSON."""
    scheduler_cls = baseline_poll_module().Scheduler if poller == "before" else Scheduler
    workflow, inputs = workloads(n)[name]
    while True:
        print(json.dumps(asdict(measure(workflow, inputs, "adaptive", scheduler_cls))), flush=True)
        if not repeat:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[2000])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the CPU table")
    parser.add_argument(
        "--slice", type=float, default=0.5, help="seconds each size runs in turn (CPU table)"
    )
    parser.add_argument(
        "--worker", nargs=3, metavar=("N", "WORKLOAD", "POLLER"), help=argparse.SUPPRESS
    )
    parser.add_argument("--repeat", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fixed-max", type=int, default=2000, help="largest --runs for fixed baselines"
    )
    args = parser.parse_args()
    if args.worker:
        n, name, poller = args.worker
        worker(int(n), name, poller, repeat=args.repeat)
        return
    for n in args.runs:
        if n <= args.fixed_max:
            strategies_table(n)
    cpu_table(args.runs, args.rounds, args.slice)
    print(f"\n(run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
