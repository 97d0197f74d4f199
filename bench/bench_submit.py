"""Submission throughput: px.submit (journal on) against a minimal hand-written httpx loop.

    python bench/bench_submit.py [rows] [concurrency] [rounds]

Both send the same rows as JSON starts to one simulator served in a separate process
(bench/serve_simulator.py, started afresh for every measurement), with the same concurrency, in
the same run: one small warm-up each, then `rounds` rounds (default 3) alternating which goes
first; medians reported.
Reported: rows/s, wall time, client CPU per row (time.process_time), and the ratio of wall times.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd

import plextera_data as px


def the_frame(n: int, tag: str) -> pd.DataFrame:
    ids = [f"{tag}-{i}" for i in range(n)]
    return pd.DataFrame(
        {"rowId": ids, "value": range(n), "meta.source": "bench", "meta.score": 0.5}, index=ids
    )


async def hand_written(base_url: str, key: str, frame: pd.DataFrame, concurrency: int) -> None:
    """What a user would write by hand: a semaphore, one POST per row, no checks, no journal."""
    bodies = [
        {"rowId": r, "value": v, "meta": {"source": s, "score": c}}
        for r, v, s, c in frame.itertuples(index=False)
    ]
    headers = {"Authorization": f"api-key {key}"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as client:
        semaphore = asyncio.Semaphore(concurrency)
        run_ids: list[str] = []

        async def one(body: dict) -> None:
            async with semaphore:
                response = await client.post("/workflows/echo/runs", json=body)
                response.raise_for_status()
                run_ids.append(response.json()["id"])

        await asyncio.gather(*(one(b) for b in bodies))
        assert len(run_ids) == len(bodies)


def measure(action: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


@contextlib.contextmanager
def served_simulator() -> Iterator[tuple[str, str]]:
    """A fresh simulator in its own process: (base URL, key). Fresh for every measurement, so
    that no contender meets a server holding the runs of the ones before it."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("serve_simulator.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url, key = server.stdout.readline().split()
        yield base_url, key
    finally:
        server.terminate()
        server.wait()


def run_loop(base_url: str, key: str, frame: pd.DataFrame, concurrency: int, _: Path) -> None:
    asyncio.run(hand_written(base_url, key, frame, concurrency))


def run_library(
    base_url: str,
    key: str,
    frame: pd.DataFrame,
    concurrency: int,
    journal: Path | None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    client = px.Client(api_key=key, base_url=base_url, transport=transport)
    px.submit(
        frame, "echo", client=client, journal=journal, progress=False, concurrency=concurrency
    )
    client.close()


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    contenders = {"httpx loop": run_loop, "px.submit": run_library}
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in contenders}
    with tempfile.TemporaryDirectory() as tmp:

        def once(label: str, tag: str, n: int) -> tuple[float, float]:
            frame = the_frame(n, tag)
            with served_simulator() as (base_url, key):
                send = contenders[label]
                return measure(
                    lambda: send(base_url, key, frame, concurrency, Path(tmp) / f"{tag}.db")
                )

        # One small unmeasured round each: first-call imports, caches.
        for label in contenders:
            once(label, f"warm-{label[:2]}", 200)
        for round_ in range(rounds):
            order = list(contenders)
            if round_ % 2:
                order.reverse()  # neither always goes first
            for label in order:
                wall, cpu = once(label, f"{label[:2]}{round_}", rows)
                results[label].append((wall, cpu))
                print(f"round {round_ + 1} {label:12} {wall:7.2f} s", flush=True)
    print(f"{rows} rows, concurrency {concurrency}, {rounds} rounds, simulator in its own process")
    print(f"{'':12} {'wall s':>8} {'rows/s':>8} {'CPU us/row':>11}")
    medians = {}
    for label, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[label] = wall
        print(f"{label:12} {wall:8.2f} {rows / wall:8.0f} {cpu / rows * 1e6:11.0f}")
    print(
        f"ratio px.submit / httpx loop (wall): {medians['px.submit'] / medians['httpx loop']:.3f}"
    )
    per_round = [
        p[0] / h[0] for p, h in zip(results["px.submit"], results["httpx loop"], strict=True)
    ]
    print("per round: " + ", ".join(f"{r:.3f}" for r in per_round))


if __name__ == "__main__":
    main()
