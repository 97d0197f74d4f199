"""Benchmark: px.flatten (runs + steps + outputs tables) against pandas.json_normalize (steps only).

    /work/venv/bin/python bench/bench_flatten.py            # 100,000 runs, 3 rounds
    /work/venv/bin/python bench/bench_flatten.py --runs 20000 --rounds 1

The data: ``--runs`` runs of 4 steps each; a quarter of them have 2 nested runs of 3 steps under
their second step; every step's output holds 5 to 10 leaves of mixed JSON types (strings,
integers, floats, booleans, nulls, a nested object, an array of objects, now and then an empty
object). The same list of dicts feeds both contenders, in the same process for the timings.

Each contender also runs once in a fresh subprocess, so its peak resident memory is measured on its
own: the kernel's peak mark (``VmHWM``) is reset after the data is built, and the figure is that
peak minus the RSS at the start. tracemalloc's peak is given too (Python allocations only: it does
not see arrow's buffers).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import pandas as pd

import plextera_data as px

META = ["id", "status", ["workflow", "id"], ["workflow", "name"], "createdAt", "completedAt"]


def _output(rng: random.Random, serial: int) -> dict[str, Any]:
    """A step output of 5 to 10 leaves of mixed types."""
    candidates: list[tuple[str, Any]] = [
        ("extractionId", f"ext_{serial:08d}"),
        ("fieldCount", rng.randint(0, 50)),
        ("confidence", rng.random()),
        ("valid", rng.random() < 0.8),
        ("note", None if rng.random() < 0.5 else "checked"),
        ("patient", {"name": f"P{serial}", "age": rng.randint(1, 99)}),
        ("fields", [{"name": "glucose", "value": round(rng.uniform(3, 9), 2)}]),
        ("tags", {} if rng.random() < 0.3 else {"source": "lab"}),
        ("score", rng.randint(0, 1000)),
        ("unit", "mmol/L"),
    ]
    # Leaves per candidate: 1 except patient (2), fields (2), tags (1 either way).
    wanted = rng.randint(5, 10)
    chosen: dict[str, Any] = {}
    leaves = 0
    for key, value in candidates:
        if leaves >= wanted:
            break
        chosen[key] = value
        leaves += 2 if key in ("patient", "fields") else 1
    return chosen


def _run(rng: random.Random, serial: int, steps: int, nested: bool, depth: int) -> dict[str, Any]:
    run_id = f"run_{depth}_{serial:09d}"
    step_list = []
    for index in range(steps):
        children: list[dict[str, Any]] = []
        if nested and index == 1:
            children = [_run(rng, serial * 10 + k, 3, False, depth + 1) for k in range(2)]
        step_list.append(
            {
                "id": f"step_{index + 1:02d}",
                "name": f"Step {index + 1}",
                "type": "document_insights" if index % 2 == 0 else "web_function",
                "status": "COMPLETED",
                "output": _output(rng, serial * 10 + index),
                "nestedRuns": {"count": len(children), "data": children},
            }
        )
    return {
        "id": run_id,
        "status": "COMPLETED",
        "createdAt": "2024-01-15T09:30:00Z",
        "updatedAt": "2024-01-15T09:31:00Z",
        "startedAt": "2024-01-15T09:30:01Z",
        "completedAt": "2024-01-15T09:31:00Z",
        "workflow": {"id": "daily-lab-loader", "name": "Daily Lab Loader"},
        "progress": {"stepsCompleted": steps, "stepsTotal": steps},
        "durationMs": 59000,
        "computedDurationMs": 59000,
        "steps": step_list,
    }


def make_runs(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """``count`` run dicts as json.loads would give them (a quarter with 2 nested runs)."""
    rng = random.Random(seed)
    runs = [_run(rng, serial, 4, serial % 4 == 0, 0) for serial in range(count)]
    # Round-trip through JSON so the objects are exactly what a client would hold.
    return json.loads(json.dumps(runs))


def run_flatten(runs: list[dict[str, Any]]) -> str:
    tables = px.flatten(runs, row_keys={run["id"]: i for i, run in enumerate(runs)})
    return (
        f"runs {len(tables.runs):,}, steps {len(tables.steps):,}, outputs {len(tables.outputs):,}"
    )


def run_json_normalize(runs: list[dict[str, Any]]) -> str:
    steps = pd.json_normalize(runs, record_path="steps", meta=META, meta_prefix="run.")
    return f"steps {len(steps):,} x {len(steps.columns)} columns"


CONTENDERS = {"flatten": run_flatten, "json_normalize": run_json_normalize}


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` figure of this process from /proc (Linux), in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``), so the next peak is ours alone."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _peak_mib() -> float:
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one(name: str, count: int) -> None:
    """Child process: build the data, run one contender, print timings and memory as JSON."""
    runs = make_runs(count)
    gc.collect()
    if not _reset_peak():
        print("warning: cannot reset the peak RSS mark; the figure includes building the data")
    before = _status_mib("VmRSS") or _peak_mib()
    started = time.perf_counter()
    shape = CONTENDERS[name](runs)
    elapsed = time.perf_counter() - started
    peak = _peak_mib()
    tracemalloc.start()
    CONTENDERS[name](runs)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "rss_growth_mib": peak - before,
                "traced_mib": traced,
                "shape": shape,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.runs)
        return

    started = time.perf_counter()
    runs = make_runs(args.runs)
    print(f"data: {args.runs:,} runs built in {time.perf_counter() - started:.1f} s")
    best: dict[str, float] = {}
    for round_number in range(args.rounds):
        for name, contender in CONTENDERS.items():
            gc.collect()
            started = time.perf_counter()
            shape = contender(runs)
            elapsed = time.perf_counter() - started
            best[name] = min(best.get(name, elapsed), elapsed)
            print(f"round {round_number + 1}: {name:15s} {elapsed:6.2f} s   {shape}")
    del runs
    print()
    print(f"best of {args.rounds}: " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))
    print(f"flatten / json_normalize: {best['flatten'] / best['json_normalize']:.2f}")
    for name in CONTENDERS:
        result = subprocess.run(
            [sys.executable, __file__, "--one", name, "--runs", str(args.runs)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(result.stdout)
        print(
            f"memory {name:15s} peak RSS growth {figures['rss_growth_mib']:7.0f} MiB, "
            f"tracemalloc peak {figures['traced_mib']:7.0f} MiB"
        )


if __name__ == "__main__":
    main()
