"""Client CPU per row of px.submit against the hand-written httpx loop, with no server at all.

    python bench/bench_submit_cpu.py [rows] [rounds]

Both contenders send to an ``httpx.MockTransport`` that answers every start at once, in this
process, so only client work is measured (``time.process_time``): what the library adds per row
(pre-flight, fingerprint, pacer, run parsing) with and without its journal, beside what httpx
itself costs. Complements bench_submit.py, whose wall times include a real loopback server.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from bench_submit import run_library, the_frame  # this folder is on sys.path as a script

_served = 0


def answer(request: httpx.Request) -> httpx.Response:
    """A start accepted at once, as the API would describe it."""
    global _served
    _served += 1
    run: dict[str, Any] = {
        "id": f"run-{_served}",
        "status": "PROCESSING",
        "workflow": {"id": "echo", "name": "Echo"},
        "createdAt": "2026-11-29T04:00:00Z",
        "updatedAt": "2026-11-29T04:00:00Z",
        "progress": {"stepsCompleted": 0, "stepsTotal": 1},
        "steps": [],
    }
    return httpx.Response(201, json=run)


async def hand_written(frame: pd.DataFrame, concurrency: int) -> None:
    bodies = [
        {"rowId": r, "value": v, "meta": {"source": s, "score": c}}
        for r, v, s, c in frame.itertuples(index=False)
    ]
    async with httpx.AsyncClient(
        base_url="http://127.0.0.1/api/public/v1",
        transport=httpx.MockTransport(answer),
        headers={"Authorization": "api-key k"},
    ) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(body: dict[str, Any]) -> None:
            async with semaphore:
                response = await client.post("/workflows/echo/runs", json=body)
                response.raise_for_status()
                response.json()["id"]

        await asyncio.gather(*(one(b) for b in bodies))


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    cpu: dict[str, list[float]] = {"httpx loop": [], "px.submit, no journal": [], "px.submit": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for label in cpu:
                frame = the_frame(rows, f"{label[:4]}{round_}")
                journal = Path(tmp) / f"{round_}.db" if label == "px.submit" else None
                start = time.process_time()
                if label == "httpx loop":
                    asyncio.run(hand_written(frame, 16))
                else:
                    url = "http://127.0.0.1/api/public/v1"
                    run_library(url, "k", frame, 16, journal, httpx.MockTransport(answer))
                cpu[label].append((time.process_time() - start) / rows * 1e6)
    print(f"{rows} rows, {rounds} rounds, no server (httpx.MockTransport); CPU µs per row")
    for label, values in cpu.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{label:24} median {statistics.median(values):6.0f}   rounds: {shown}")


if __name__ == "__main__":
    main()
