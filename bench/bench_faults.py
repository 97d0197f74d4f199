"""Benchmark: what faults cost end to end, against an independent fake of the API on loopback.

    python bench/bench_faults.py [--rows 10000] [--rounds 3] [--baseline main]
                                 [--scenarios clean,faults,bucket] [--bucket-rows 2000]
                                 [--bucket-rate 40] [--bucket-burst 40]
                                 [--bucket-retry-after exact]

Each measurement starts a fresh ``bench/fake_api.py`` (its own process, loopback) and runs, in
another process, ``px.submit(df, "echo", client=..., wait=True, reconcile=True, progress=False)``
for ``--rows`` rows, then ``batch.wait()`` for any row that reconciliation sent again (none
without faults). Scenarios:

* ``clean``: no faults;
* ``faults``: the issue's mix: 5 % of POSTs 429 (``Retry-After: 0``), 1 % of POSTs 500 (no run
  created), 5 % of GETs failing (a third each: 500, dropped connection, malformed body) and 1 %
  of GETs 429 (``Retry-After: 0``);
* ``bucket``: ``--bucket-rows`` rows against a token bucket on every request (``--bucket-rate``
  requests/s, ``--bucket-burst`` deep, a truthful ``Retry-After``; no other faults).

Contenders: the library in this checkout (or, with ``--ref REF``, the ``plextera_data`` of that
git ref) and, with ``--baseline REF``, that of the baseline's git ref (each extracted with ``git
archive`` into a temporary directory and put first on the client's ``PYTHONPATH``). Rounds
interleave: every round runs every scenario for every contender, the contenders' order
alternating; medians are reported with each round's figures.

Reported (the server's clock for the phases: seconds from its first request):
``submit s`` until the last POST of the submission answered (before reconciliation's listing);
``poll s`` from then until the last GET of a run before that listing; ``e2e s`` the client's
wall time for the whole call plus the final ``wait``; ``lost``: rows with no run on the server
that the batch does not flag (uncertain or failed); ``twice``: rows with more than one run on the
server; ``wrong``: rows whose run id is not one the server created for that row; ``not done``:
rows not ``COMPLETED`` at the end; ``429 %``: the share of requests answered 429;
``ok/s``: answers other than 429 per second during submission (the bucket's target: at least
90 % of its rate, with at most 2 % of requests answered 429).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THIRD = 0.05 / 3
FAULT_MIX = [
    "--post-429=0.05",
    "--post-500=0.01",
    f"--get-500={THIRD}",
    f"--get-drop={THIRD}",
    f"--get-malformed={THIRD}",
    "--get-429=0.01",
    "--retry-after=0",
]


# --------------------------------------------------------------------------- the client process


def client_main(args: argparse.Namespace) -> None:
    """Run the submission against ``args.base_url`` and print what the batch says, as JSON."""
    import pandas as pd

    import plextera_data as px

    ids = [f"row-{i}" for i in range(args.rows)]
    frame = pd.DataFrame({"rowId": ids, "value": range(args.rows)}, index=ids)
    client = px.Client(api_key=args.key, base_url=args.base_url)
    wall, cpu = time.perf_counter(), time.process_time()
    batch = px.submit(
        frame, "echo", client=client, wait=True, reconcile=True, progress=False, concurrency=16
    )
    submitted = time.perf_counter() - wall
    batch.wait(progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    status = batch.status
    rows = {
        str(key): [str(s), None if pd.isna(r) else str(r)]
        for key, s, r in zip(status.index, status["status"], status["run_id"], strict=True)
    }
    print(
        json.dumps(
            {
                "wall": wall,
                "submit_call": submitted,
                "cpu": cpu,
                "rows": rows,
                "counts": batch.counts,
                "rate_limited": batch.pacer.rate_limited,
                "library": px.__file__,
            }
        )
    )


# --------------------------------------------------------------------------- one measurement


def serve(flags: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_api.py"), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise RuntimeError("the fake API did not start")
    return proc, line[0], line[1]


def scenario_flags(name: str, args: argparse.Namespace, seed: int) -> tuple[list[str], int]:
    """The fake's flags and the number of rows for scenario ``name``."""
    flags = [f"--seed={seed}"]
    if name == "faults":
        return [*flags, *FAULT_MIX], args.rows
    if name == "bucket":
        bucket = [
            f"--bucket-rate={args.bucket_rate}",
            f"--bucket-burst={args.bucket_burst}",
            f"--bucket-retry-after={args.bucket_retry_after}",
        ]
        return [*flags, *bucket], args.bucket_rows
    return flags, args.rows


def measure(lib: Path, scenario: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    flags, rows = scenario_flags(scenario, args, seed)
    proc, base_url, key = serve(flags)
    try:
        env = {**os.environ, "PYTHONPATH": str(lib)}
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--client", base_url, key, str(rows)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"client failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        origin = base_url.split("/api/")[0]
        stats = httpx.get(f"{origin}/__fake__/stats", timeout=60).json()
        if args.dump:
            name = f"{scenario}-{lib.name or 'lib'}-{seed}-{time.time():.0f}.json"
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            (Path(args.dump) / name).write_text(json.dumps({"client": result, "server": stats}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return summarize(result, stats, rows, args)


def summarize(
    result: dict[str, Any], stats: dict[str, Any], rows: int, args: argparse.Namespace
) -> dict[str, Any]:
    timeline = stats["timeline"]
    listed = [t for t, _, route, _ in timeline if route == "list"]
    before = listed[0] if listed else float("inf")
    posts = [t for t, m, _, _ in timeline if m == "POST" and t < before]
    gets = [t for t, _, route, _ in timeline if route == "get" and t < before]
    submit_end = max(posts) if posts else 0.0
    poll_end = max(gets) if gets else submit_end
    on_server = stats["runs_per_row"]
    flagged = ("SUBMISSION_UNCERTAIN", "SUBMISSION_FAILED")
    lost = twice = wrong = not_done = 0
    for key, (status, run_id) in result["rows"].items():
        runs = on_server.get(key, [])
        lost += not runs and status not in flagged
        twice += len(runs) > 1
        wrong += run_id is not None and run_id not in runs
        not_done += status != "COMPLETED"
    statuses = Counter(status for _, _, _, status in timeline)
    requests = len(timeline)
    in_submission = [s for t, _, _, s in timeline if t <= submit_end]
    ok = sum(1 for s in in_submission if s != 429)
    return {
        "submit": submit_end,
        "poll": poll_end - submit_end,
        "e2e": result["wall"],
        "cpu": result["cpu"],
        "lost": lost,
        "twice": twice,
        "wrong": wrong,
        "not_done": not_done,
        "requests": requests,
        "429s": statuses[429],
        "429_share": statuses[429] / requests if requests else 0.0,
        "ok_per_s": ok / submit_end if submit_end else 0.0,
        "rows": rows,
        "counts": result["counts"],
    }


# --------------------------------------------------------------------------- the report


def extract(ref: str, into: Path) -> Path:
    """``plextera_data`` as of git ``ref``, extracted under ``into``; returns the directory."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "plextera_data"],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


COLUMNS = [
    ("submit", "submit s", "{:.1f}"),
    ("poll", "poll s", "{:.1f}"),
    ("e2e", "e2e s", "{:.1f}"),
    ("cpu", "client CPU s", "{:.1f}"),
    ("requests", "requests", "{:.0f}"),
    ("429_share", "429 %", "{:.2%}"),
    ("ok_per_s", "ok/s", "{:.1f}"),
    ("lost", "lost", "{:.0f}"),
    ("twice", "twice", "{:.0f}"),
    ("wrong", "wrong", "{:.0f}"),
    ("not_done", "not done", "{:.0f}"),
]


def report(results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    print("\n| scenario | library | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " |")
    for (scenario, name), runs in results.items():
        cells = []
        for key, _, fmt in COLUMNS:
            values = [r[key] for r in runs]
            median = statistics.median(values)
            cells.append(
                fmt.format(max(values)) if key in ("lost", "twice", "wrong") else fmt.format(median)
            )
        print(f"| {scenario} | {name} | " + " | ".join(cells) + " |")
    print("\nMedians of the rounds (lost, twice, wrong: the worst round). Per round, e2e s:")
    for (scenario, name), runs in results.items():
        shown = ", ".join(f"{r['e2e']:.1f}" for r in runs)
        extra = ""
        if scenario == "bucket":
            extra = "; ok/s " + ", ".join(f"{r['ok_per_s']:.1f}" for r in runs)
            extra += "; 429 % " + ", ".join(f"{r['429_share']:.2%}" for r in runs)
        print(f"- {scenario}, {name}: {shown}{extra}")
    names = sorted({name for _, name in results})
    for name in names:
        clean = results.get(("clean", name))
        faults = results.get(("faults", name))
        if clean and faults:
            ratio = statistics.median(r["e2e"] for r in faults) / statistics.median(
                r["e2e"] for r in clean
            )
            print(f"- {name}: e2e under faults / fault-free = {ratio:.2f} (target: at most 2)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        ns = argparse.Namespace(base_url=sys.argv[2], key=sys.argv[3], rows=int(sys.argv[4]))
        client_main(ns)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="a git ref to compare with (e.g. main)")
    parser.add_argument("--ref", help="measure this git ref instead of the working tree")
    parser.add_argument("--scenarios", default="clean,faults,bucket")
    parser.add_argument("--bucket-rows", type=int, default=2000)
    parser.add_argument("--bucket-rate", type=float, default=40.0)
    parser.add_argument("--bucket-burst", type=float, default=40.0)
    parser.add_argument("--bucket-retry-after", choices=("exact", "ceil"), default="exact")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dump", help="a directory to keep each measurement's raw figures in")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        contenders = {"this checkout": ROOT}
        if args.ref:
            contenders = {args.ref: extract(args.ref, Path(tmp) / "ref")}
        if args.baseline:
            baseline = extract(args.baseline, Path(tmp) / "baseline")
            contenders = {args.baseline: baseline, **contenders}
        print(
            f"{args.rows} rows ({args.bucket_rows} against the bucket: {args.bucket_rate:g}/s, "
            f"burst {args.bucket_burst:g}, Retry-After {args.bucket_retry_after}), "
            f"{args.rounds} rounds, contenders: {', '.join(contenders)}",
            flush=True,
        )
        results: dict[tuple[str, str], list[dict[str, Any]]] = {
            (s, n): [] for s in scenarios for n in contenders
        }
        for round_no in range(args.rounds):
            order = list(contenders.items())
            if round_no % 2:
                order.reverse()
            for scenario in scenarios:
                for name, lib in order:
                    r = measure(lib, scenario, args, seed=args.seed + round_no)
                    results[(scenario, name)].append(r)
                    print(
                        f"round {round_no + 1} {scenario:6} {name:14} "
                        + " ".join(f"{c[1]}={c[2].format(r[c[0]])}" for c in COLUMNS)
                        + f" counts={r['counts']}",
                        flush=True,
                    )
        report(results)


if __name__ == "__main__":
    main()
