"""One process against a Dask cluster: px.submit(df, wait=True) then Tables.to_parquet, against
pxd.submit(ddf, ...) on a LocalCluster of worker processes, for the same rows.

    python bench/bench_dask.py [rows] [partitions] [workers] [rounds] [max_in_flight]

Defaults: 20,000 rows, 8 partitions, 2 worker processes (1 thread each), 3 rounds, a cap of 16
requests in flight (the one process's concurrency is the same 16). Both send JSON starts of a
one-step workflow whose runs last 4 simulated seconds, and poll them to the end, to a simulator
served in a separate process at speed 200 (started afresh for every measurement, so neither
meets a server holding the other's runs). The cluster is started before the clock starts (a
user's cluster is up before the job); its start-up time is printed apart. Reported: wall time,
requests per row and the most in flight (the simulator's accounting), and the CPU per row of
the client side (this process, which holds a LocalCluster's scheduler, and the workers; the
simulator's own CPU is not counted). Rounds alternate which contender goes first; medians
reported, with the ratio of wall times.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import distributed
import pandas as pd

import plextera_data as px
from plextera_data import dask as pxd

SERVER = textwrap.dedent(
    """
    import sys, threading
    from plextera_data.simulator import Simulator, StepSpec, Workflow
    steps = (StepSpec("Echo", "web_function", duration=4.0, output={"ok": True}),)
    sim = Simulator(seed=0, speed=200, workflows=[Workflow("steady", "Steady", steps=steps)])
    with sim.serve() as server:
        print(server.base_url, sim.api_key, flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
        print(sim.stats.max_in_flight, sim.stats.requests, sim.stats.total_posts, flush=True)
    """
)


@contextlib.contextmanager
def served_simulator(report: dict[str, int]) -> Iterator[dict[str, Any]]:
    """A fresh simulator in its own process; yields client options, fills ``report`` with its
    accounting when it stops."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    assert server.stdin is not None
    try:
        base_url, key = server.stdout.readline().split()
        yield {"api_key": key, "base_url": base_url, "clock_rate": 200.0}
    finally:
        server.stdin.close()
        most, requests, posts = (int(v) for v in server.stdout.readline().split())
        report.update(max_in_flight=most, requests=requests, posts=posts)
        server.wait()


def cpu_seconds(cluster: distributed.Client) -> float:
    """CPU time so far of this process (the client, and a LocalCluster's scheduler) and of
    every worker process."""
    workers = cluster.run(time.process_time)
    return time.process_time() + sum(workers.values())


def the_frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(rows), "label": [f"item {i}" for i in range(rows)]})


def one_process(
    frame: pd.DataFrame, options: dict[str, Any], out: Path, cap: int
) -> dict[str, int]:
    client = px.Client(**options)
    batch = px.submit(
        frame,
        "steady",
        client=client,
        journal=out / "journal.plextera.db",
        concurrency=cap,
        progress=False,
        wait=True,
    )
    batch.tables().to_parquet(out / "tables")
    client.close()
    return dict(batch.counts)


def on_dask(
    frame: pd.DataFrame,
    options: dict[str, Any],
    out: Path,
    cap: int,
    partitions: int,
    cluster: distributed.Client,
) -> dict[str, int]:
    job = pxd.submit(
        dd.from_pandas(frame, npartitions=partitions),
        "steady",
        journal_dir=out / "journals",
        out=out / "tables",
        max_in_flight=cap,
        client_options=options,
        progress=False,
        dask_client=cluster,
    )
    leases = sum(r.leases_taken for r in job.results.values())
    return {**job.counts, "leases taken": leases}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    partitions = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    cap = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    frame = the_frame(rows)
    started = time.perf_counter()
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as running,
        distributed.Client(running) as cluster,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(f"cluster of {workers} workers up in {time.perf_counter() - started:.1f} s")
        contenders: dict[str, Callable[[dict[str, Any], Path], dict[str, int]]] = {
            "one process": lambda options, out: one_process(frame, options, out, cap),
            "dask": lambda options, out: on_dask(frame, options, out, cap, partitions, cluster),
        }
        results: dict[str, list[tuple[float, dict[str, int]]]] = {c: [] for c in contenders}
        for round_ in range(rounds):
            order = list(contenders)
            if round_ % 2:
                order.reverse()
            for label in order:
                out = Path(tmp) / f"{label[:3]}-{round_}"
                out.mkdir()
                report: dict[str, int] = {}
                with served_simulator(report) as options:
                    cpu = cpu_seconds(cluster)
                    begin = time.perf_counter()
                    counts = contenders[label](options, out)
                    wall = time.perf_counter() - begin
                    report["cpu_us"] = round((cpu_seconds(cluster) - cpu) / rows * 1e6)
                results[label].append((wall, report))
                print(
                    f"round {round_ + 1} {label:12} {wall:7.2f} s, {report['requests']} "
                    f"requests, at most {report['max_in_flight']} in flight, "
                    f"{report['cpu_us']} us CPU per row; {counts}",
                    flush=True,
                )
    print(f"{rows} rows, {partitions} partitions on {workers} workers, cap {cap}, {rounds} rounds")
    print(
        f"{'':12} {'wall s':>8} {'rows/s':>8} {'requests/row':>13} {'most in flight':>15} "
        f"{'CPU us/row':>11}"
    )
    medians = {}
    for label, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        medians[label] = wall
        per_row = statistics.median(r["requests"] / rows for _, r in runs)
        most = max(r["max_in_flight"] for _, r in runs)
        cpu = statistics.median(r["cpu_us"] for _, r in runs)
        print(f"{label:12} {wall:8.2f} {rows / wall:8.0f} {per_row:13.2f} {most:15d} {cpu:11.0f}")
    print(f"ratio dask / one process (wall): {medians['dask'] / medians['one process']:.3f}")
    per_round = [d[0] / o[0] for d, o in zip(results["dask"], results["one process"], strict=True)]
    print("per round: " + ", ".join(f"{r:.3f}" for r in per_round))


if __name__ == "__main__":
    main()
