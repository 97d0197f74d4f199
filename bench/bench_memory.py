"""Benchmark: client memory per row of a batch submitted and polled to the end, with a journal.

    python bench/bench_memory.py [--rows 20000 200000] [--no-journal]

Each size runs in a fresh process: it builds the frame, measures the resident set (the
baseline: interpreter, libraries, the frame), then ``px.submit(df, wf, journal=..., wait=True)``
(polling while it submits, as a long batch does) against an instant in-process stand-in of the
API (an ``httpx.MockTransport`` that accepts every start and answers every GET with the run
completed, holding nothing per run, so that only the client's memory grows), and reports the
peak resident set above the baseline, per row.
The target (issue "A million rows"): under 1 KiB per row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys, tempfile, time
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
    def rss_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    baseline = rss_kib()
    client = px.Client(api_key="k", base_url="http://127.0.0.1/api/public/v1",
                       transport=httpx.MockTransport(api))
    journal = Path(tempfile.mkdtemp()) / "mem.plextera.db" if use_journal else None
    started = time.perf_counter()
    batch = px.submit(frame, "wf", client=client, journal=journal, progress=False, wait=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the whole life
    assert batch.counts == {"COMPLETED": rows}, batch.counts
    print(json.dumps({"rows": rows, "baseline_kib": baseline, "peak_kib": peak, "wall": wall}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--no-journal", action="store_true")
    args = parser.parse_args()
    mode = "none" if args.no_journal else "journal"
    print(f"journal: {mode}; peak resident set above the baseline (frame built), per row\n")
    print("| rows | baseline | peak | above baseline | per row | wall |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows in args.rows:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(rows), mode], capture_output=True, text=True
        )
        if out.returncode:
            raise SystemExit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        above = r["peak_kib"] - r["baseline_kib"]
        print(
            f"| {rows:,} | {r['baseline_kib'] / 1024:.0f} MiB | {r['peak_kib'] / 1024:.0f} MiB | "
            f"{above / 1024:.0f} MiB | {above * 1024 / rows:.0f} B | {r['wall']:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
