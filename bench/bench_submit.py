"""Submission throughput: px.submit (journal on) against a minimal hand-written httpx loop.

    python bench/bench_submit.py [rows] [concurrency]

Both send the same rows as JSON starts to one simulator served in a separate process
(bench/serve_simulator.py), with the same concurrency, in the same run, alternating twice.
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


def measure(label: str, action: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
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
            for round_ in range(2):
                frame = the_frame(rows, f"h{round_}")
                results["httpx loop"].append(
                    measure(
                        "httpx",
                        lambda f=frame: asyncio.run(hand_written(base_url, key, f, concurrency)),
                    )
                )
                frame = the_frame(rows, f"p{round_}")
                journal = Path(tmp) / f"bench{round_}.db"
                results["px.submit"].append(
                    measure(
                        "px",
                        lambda f=frame, j=journal: px.submit(
                            f,
                            "echo",
                            client=client,
                            journal=j,
                            progress=False,
                            concurrency=concurrency,
                        ),
                    )
                )
    finally:
        server.terminate()
        server.wait()
    print(f"{rows} rows, concurrency {concurrency}, simulator in a separate process")
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
