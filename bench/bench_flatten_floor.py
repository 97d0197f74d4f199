"""Where px.flatten's time goes, beside json_normalize and the floor of any walk in Python.

    python bench/bench_flatten_floor.py                  # 100,000 runs, 5 rounds
    python bench/bench_flatten_floor.py --runs 20000 --rounds 3

The workload of ``bench_flatten.py`` (the same runs, kept in the temporary directory). Per round,
interleaved in one process (medians of CPU seconds, user and kernel apart, from ``getrusage``):

- ``json_normalize``: ``pd.json_normalize(runs, record_path="steps", meta=[...])``, the baseline
  of issue 14's target (0.15x);
- ``px.flatten`` in its three stages: the walk over the dicts into flat lists (the collector of
  ``plextera_data.flatten``), the arrow columns made from them, the pandas frames;
- ``visit every value``: a recursive loop that touches every value of every run and does nothing
  else: no table, no path, no type. No walker written in Python can cost less than this.

The kernel's share is shown apart: on this VM, memory touched for the first time after another
contender gave its memory back costs page faults that land in the stage that allocates (the arrow
stage, mostly).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import resource
import statistics
from collections.abc import Callable
from typing import Any

from bench_flatten import load_runs, run_json_normalize  # this folder is on sys.path as a script

import plextera_data as px

# The module, not the function that plextera_data exports under the same name.
flatten_module = importlib.import_module("plextera_data.flatten")


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _visit(node: Any) -> int:
    count = 0
    for value in node.values() if type(node) is dict else node:
        if type(value) is dict or type(value) is list:
            count += _visit(value)
        else:
            count += 1
    return count


def visit_every_value(runs: list[dict[str, Any]]) -> int:
    """Touch every value of every run (the floor of a walk in Python); the number of scalars."""
    return sum(_visit(run) for run in runs)


def flatten_in_stages(
    runs: list[dict[str, Any]], keys: dict[str, int]
) -> dict[str, tuple[float, float]]:
    """px.flatten's work, stage by stage (what ``px.flatten(runs, row_keys=keys)`` does)."""
    stages: dict[str, tuple[float, float]] = {}
    start = _cpu()
    collector = flatten_module._Collector(None)
    for run in runs:
        collector.add(run, keys)
    walked = _cpu()
    tables = collector.arrow_tables(None)
    built = _cpu()
    frames = px.Tables._of_own(tables)
    rows = len(frames.runs) + len(frames.steps) + len(frames.outputs)
    done = _cpu()
    assert rows > 0
    for name, (before, after) in {
        "walk": (start, walked),
        "arrow": (walked, built),
        "pandas": (built, done),
    }.items():
        stages[name] = (after[0] - before[0], after[1] - before[1])
    return stages


def _timed(action: Callable[[], object]) -> tuple[float, float]:
    before = _cpu()
    action()
    after = _cpu()
    return after[0] - before[0], after[1] - before[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = load_runs(args.runs)
    keys = {run["id"]: i for i, run in enumerate(runs)}
    flatten_in_stages(runs[:100], keys)
    run_json_normalize(runs[:100])
    figures: dict[str, list[tuple[float, float]]] = {}
    for round_number in range(args.rounds):
        measured: dict[str, tuple[float, float]] = {}
        gc.collect()
        measured["json_normalize"] = _timed(lambda: run_json_normalize(runs))
        gc.collect()
        stages = flatten_in_stages(runs, keys)
        measured.update({f"px.flatten: {name}": cpu for name, cpu in stages.items()})
        measured["px.flatten (all)"] = (
            sum(user for user, _ in stages.values()),
            sum(kernel for _, kernel in stages.values()),
        )
        gc.collect()
        measured["visit every value"] = _timed(lambda: visit_every_value(runs))
        for name, cpu in measured.items():
            figures.setdefault(name, []).append(cpu)
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{name} {sum(cpu):.2f}" for name, cpu in measured.items()),
            flush=True,
        )
    baseline = statistics.median(sum(cpu) for cpu in figures["json_normalize"])
    print(f"\n{args.runs:,} runs, {args.rounds} rounds, CPU seconds (medians)")
    print(f"{'':24} {'user+sys':>9} {'of which sys':>13} {'/ json_normalize':>17}")
    for name, values in figures.items():
        total = statistics.median(sum(cpu) for cpu in values)
        kernel = statistics.median(cpu[1] for cpu in values)
        print(f"{name:24} {total:9.2f} {kernel:13.2f} {total / baseline:17.3f}")


if __name__ == "__main__":
    main()
