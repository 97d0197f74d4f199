"""Benchmark: client memory per row of a batch submitted and polled to the end, with a journal.

    python bench/bench_memory.py [--rows 20000 200000] [--repeat 3] [--no-journal]

Each size runs in a fresh process: it builds the frame, measures the resident set (the
baseline: interpreter, libraries, the frame), then ``px.submit(df, wf, journal=..., wait=True)``
(polling while it submits, as a long batch does) against an instant in-process stand-in of the
API (an ``httpx.MockTransport`` that accepts every start and answers every GET with the run
completed, holding nothing per run, so that only the client's memory grows), and reports the
peak resident set above the baseline, per row. Then ``batch.tables(to=DIR)`` writes the three
tables as parquet datasets, streaming the finished runs from the journal: its own peak (the
peak is reset before it, through ``/proc/self/clear_refs``) above the resident set before it.
With ``--repeat N`` each size runs N times (a fresh process each, sizes interleaved) and the
medians are printed after the rounds.
The target (issue "A million rows"): under 1 KiB per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc, json, resource, shutil, sys, tempfile, time
    from pathlib import Path
    import httpx, pandas as pd
    import plextera_data as px

    rows, use_journal = int(sys.argv[1]), sys.argv[2] == "journal"
    served = 0

    def api(request):
        global served
        if request.method == "POST":
            served += 1
            run_id = f"run-{served:09d}"
            return httpx.Response(202, json={
                "id": run_id, "status": "PROCESSING", "workflow": {"id": "wf", "name": "WF"},
                "createdAt": "2026-12-01T10:00:00Z"})
        run_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={
            "id": run_id, "status": "COMPLETED", "workflow": {"id": "wf", "name": "WF"},
            "createdAt": "2026-12-01T10:00:00Z", "completedAt": "2026-12-01T10:00:02Z",
            "progress": {"stepsCompleted": 1, "stepsTotal": 1},
            "steps": [{"id": "s1", "name": "Extract", "type": "custom", "status": "COMPLETED",
                       "output": {"amount": 12.5, "ok": True},
                       "nestedRuns": {"count": 0, "data": []}}]})

    frame = pd.DataFrame({"customerId": [f"customer-{i:07d}" for i in range(rows)],
                          "amount": range(rows)})
    gc.collect()
    def status_kib(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    def rss_kib():
        return status_kib("VmRSS")
    baseline = rss_kib()
    client = px.Client(api_key="k", base_url="http://127.0.0.1/api/public/v1",
                       transport=httpx.MockTransport(api))
    journal = Path(tempfile.mkdtemp()) / "mem.plextera.db" if use_journal else None
    started = time.perf_counter()
    batch = px.submit(frame, "wf", client=client, journal=journal, progress=False, wait=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the whole life
    assert batch.counts == {"COMPLETED": rows}, batch.counts
    gc.collect()
    before_tables = rss_kib()
    tables_peak = None
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM, the peak resident set, to the current one
    except OSError:
        pass
    else:
        out = Path(tempfile.mkdtemp()) / "tables"
        paths = batch.tables(to=out)
        tables_peak = status_kib("VmHWM")
        assert sum(len(list(p.glob("*.parquet"))) for p in paths.values()) == 3
        shutil.rmtree(out)
    print(json.dumps({"rows": rows, "baseline_kib": baseline, "peak_kib": peak, "wall": wall,
                      "before_tables_kib": before_tables, "tables_peak_kib": tables_peak}))
    """
)


def _child(rows: int, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), mode], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    above = r["peak_kib"] - r["baseline_kib"]
    tables = r["tables_peak_kib"]
    return {
        "rows": rows,
        "baseline": r["baseline_kib"] / 1024,
        "peak": r["peak_kib"] / 1024,
        "above": above / 1024,
        "per_row": above * 1024 / rows,
        "wall": r["wall"],
        "tables": float("nan") if tables is None else (tables - r["before_tables_kib"]) / 1024,
    }


def _line(r: dict[str, float], label: str = "") -> str:
    return (
        f"| {int(r['rows']):,}{label} | {r['baseline']:.0f} MiB | {r['peak']:.0f} MiB | "
        f"{r['above']:.0f} MiB | {r['per_row']:.0f} B | {r['wall']:.1f} s | "
        f"{r['tables']:.0f} MiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-journal", action="store_true")
    args = parser.parse_args()
    mode = "none" if args.no_journal else "journal"
    print(f"journal: {mode}; peak resident set above the baseline (frame built), per row;")
    print("tables(to=): the peak of batch.tables(to=DIR) above the resident set before it\n")
    print("| rows | baseline | peak | above baseline | per row | wall | tables(to=) peak |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    results: dict[int, list[dict[str, float]]] = {rows: [] for rows in args.rows}
    for round_ in range(args.repeat):
        for rows in args.rows:
            r = _child(rows, mode)
            results[rows].append(r)
            label = f" (round {round_ + 1})" if args.repeat > 1 else ""
            print(_line(r, label), flush=True)
    if args.repeat > 1:
        print("\nmedians:\n")
        print("| rows | baseline | peak | above baseline | per row | wall | tables(to=) peak |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for runs in results.values():
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(_line(median), flush=True)


if __name__ == "__main__":
    main()
