"""Submission throughput: px.submit (journal on) against a minimal hand-written httpx loop.

    python bench/bench_submit.py [rows] [concurrency] [rounds]

Both send the same rows as JSON starts to one simulator served in a separate process
(bench/serve_simulator.py), with the same concurrency, in the same run: one small warm-up each,
then `rounds` rounds (default 3) alternating which goes first; medians reported.
Reported: rows/s, wall time, client CPU per row (time.process_time), and the ratio of wall times.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("serve_simulator.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url, key = server.stdout.readline().split()
        client = px.Client(api_key=key, base_url=base_url)
        results: dict[str, list[tuple[float, float]]] = {"httpx loop": [], "px.submit": []}
        with tempfile.TemporaryDirectory() as tmp:

            def loop(tag: str, n: int) -> Callable[[], object]:
                frame = the_frame(n, tag)
                return lambda: asyncio.run(hand_written(base_url, key, frame, concurrency))

            def library(tag: str, n: int) -> Callable[[], object]:
                frame = the_frame(n, tag)
                journal = Path(tmp) / f"{tag}.db"
                return lambda: px.submit(
                    frame,
                    "echo",
                    client=client,
                    journal=journal,
                    progress=False,
                    concurrency=concurrency,
                )

            # One small unmeasured round each: connections, first-call imports, caches.
            measure(loop("warm-h", 200))
            measure(library("warm-p", 200))
            for round_ in range(rounds):
                contenders = [("httpx loop", loop), ("px.submit", library)]
                if round_ % 2:
                    contenders.reverse()  # neither always goes first
                for label, make in contenders:
                    wall, cpu = measure(make(f"{label[:2]}{round_}", rows))
                    results[label].append((wall, cpu))
                    print(f"round {round_ + 1} {label:12} {wall:7.2f} s", flush=True)
    finally:
        server.terminate()
        server.wait()
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


if __name__ == "__main__":
    main()
