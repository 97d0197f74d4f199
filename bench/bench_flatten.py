"""Benchmark: px.flatten (runs + steps + outputs tables) against pandas.json_normalize (steps only).

    python bench/bench_flatten.py                            # 10,000, 100,000 and 400,000 runs
    python bench/bench_flatten.py --runs 20000 --rounds 1    # one size, one round

The data: ``--runs`` runs of 4 steps each; a quarter of them have 2 nested runs of 3 steps under
their second step; every step's output holds 5 to 10 leaves of mixed JSON types (strings,
integers, floats, booleans, nulls, a nested object, an array of objects, now and then an empty
object). The same list of dicts (as ``json.loads`` gives them) feeds every contender. It is made
once per size and kept in the temporary directory (``--fresh`` makes it again).

Contenders: ``flatten`` is ``px.flatten(runs, row_keys=...)`` and its three pandas frames (what a
notebook user looks at); ``flatten_arrow`` the same tables as arrow only (``tables.to_arrow()``,
what ``to_parquet`` needs); ``json_normalize`` is ``pd.json_normalize(runs, record_path="steps",
meta=[...])``, a steps table only. Per size: rounds interleaved in this process (wall and CPU
seconds, medians), then each contender once in a fresh subprocess for its peak resident memory
(the kernel's peak mark, ``VmHWM``, reset once the data is loaded; the figure is that peak minus
the RSS at the reset). Every contender runs once on 100 runs first, in every process, so that no
figure includes importing a library's lazily loaded parts.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

import plextera_data as px

META = ["id", "status", ["workflow", "id"], ["workflow", "name"], "createdAt", "completedAt"]
SIZES = (10_000, 100_000, 400_000)
# Bump when make_runs changes, so that kept data is made again.
DATA_VERSION = 1


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


def data_path(count: int) -> Path:
    return Path(tempfile.gettempdir()) / f"plextera-bench-flatten-v{DATA_VERSION}-{count}.json"


def load_runs(count: int, fresh: bool = False) -> list[dict[str, Any]]:
    """The ``count`` runs of :func:`make_runs`, kept as JSON between benchmark runs."""
    path = data_path(count)
    if fresh or not path.exists():
        runs = make_runs(count)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(runs))
        partial.replace(path)
        return runs
    with path.open() as source:
        kept: list[dict[str, Any]] = json.load(source)
    return kept


def run_flatten(runs: list[dict[str, Any]]) -> str:
    tables = px.flatten(runs, row_keys={run["id"]: i for i, run in enumerate(runs)})
    return (
        f"runs {len(tables.runs):,}, steps {len(tables.steps):,}, outputs {len(tables.outputs):,}"
    )


def run_flatten_arrow(runs: list[dict[str, Any]]) -> str:
    tables = px.flatten(runs, row_keys={run["id"]: i for i, run in enumerate(runs)}).to_arrow()
    return ", ".join(f"{name} {table.num_rows:,}" for name, table in tables.items())


def run_json_normalize(runs: list[dict[str, Any]]) -> str:
    steps = pd.json_normalize(runs, record_path="steps", meta=META, meta_prefix="run.")
    return f"steps {len(steps):,} x {len(steps.columns)} columns"


CONTENDERS = {
    "flatten": run_flatten,
    "flatten_arrow": run_flatten_arrow,
    "json_normalize": run_json_normalize,
}


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


def _warm_up(runs: list[dict[str, Any]]) -> None:
    for contender in CONTENDERS.values():
        contender(runs[:100])


def _one(name: str, count: int) -> None:
    """Child process: load the data, run one contender once, print its figures as JSON."""
    runs = load_runs(count)
    _warm_up(runs)
    gc.collect()
    if not _reset_peak():
        print("warning: cannot reset the peak RSS mark; the figure includes loading the data")
    before = _status_mib("VmRSS") or _peak_mib()
    started = time.perf_counter()
    shape = CONTENDERS[name](runs)
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "rss_growth_mib": _peak_mib() - before, "shape": shape}))


def _time_rounds(runs: list[dict[str, Any]], rounds: int) -> dict[str, dict[str, list[float]]]:
    figures: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in CONTENDERS
    }
    for round_number in range(rounds):
        for name, contender in CONTENDERS.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            shape = contender(runs)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            figures[name]["wall"].append(wall)
            figures[name]["cpu"].append(cpu)
            print(f"  round {round_number + 1}: {name:15s} {wall:7.2f} s ({cpu:.2f} s CPU) {shape}")
    return figures


def _memory(count: int) -> dict[str, float]:
    peaks = {}
    for name in CONTENDERS:
        result = subprocess.run(
            [sys.executable, __file__, "--one", name, "--runs", str(count)],
            check=True,
            capture_output=True,
            text=True,
        )
        peaks[name] = json.loads(result.stdout.splitlines()[-1])["rss_growth_mib"]
    return peaks


def bench_size(count: int, rounds: int, fresh: bool) -> dict[str, Any]:
    started = time.perf_counter()
    runs = load_runs(count, fresh)
    print(f"{count:,} runs (data ready in {time.perf_counter() - started:.1f} s)")
    _warm_up(runs)
    figures = _time_rounds(runs, rounds)
    del runs
    gc.collect()
    peaks = _memory(count)
    median = {
        name: {kind: statistics.median(values) for kind, values in kinds.items()}
        for name, kinds in figures.items()
    }
    baseline = median["json_normalize"]
    for name in CONTENDERS:
        wall, cpu = median[name]["wall"], median[name]["cpu"]
        print(
            f"  {name:15s} median {wall:7.2f} s wall ({wall / baseline['wall']:.3f}x), "
            f"{cpu:6.2f} s CPU ({cpu / baseline['cpu']:.3f}x), "
            f"{wall / count * 1e6:5.1f} us/run; peak RSS growth {peaks[name]:6.0f} MiB "
            f"({peaks[name] / peaks['json_normalize']:.2f}x)"
        )
    return {"count": count, "median": median, "peaks": peaks, "rounds": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="make the data again")
    parser.add_argument("--one", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.runs[0])
        return
    results = [bench_size(count, args.rounds, args.fresh) for count in args.runs]
    print()
    print("size      flatten/json_normalize: wall    CPU  peak RSS | flatten us/run  arrow only")
    for result in results:
        median, peaks = result["median"], result["peaks"]
        base = median["json_normalize"]
        print(
            f"{result['count']:>9,}  {median['flatten']['wall'] / base['wall']:27.3f} "
            f"{median['flatten']['cpu'] / base['cpu']:6.3f} "
            f"{peaks['flatten'] / peaks['json_normalize']:9.2f} | "
            f"{median['flatten']['wall'] / result['count'] * 1e6:14.1f} "
            f"{median['flatten_arrow']['wall'] / result['count'] * 1e6:11.1f}"
        )


if __name__ == "__main__":
    main()
