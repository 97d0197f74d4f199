"""Benchmark: flattening runs from a journal to parquet as they come, in bounded memory.

    python bench/bench_flatten_stream.py                      # 100,000, 300,000, 1,000,000 runs
    python bench/bench_flatten_stream.py --runs 100000 --in-memory-up-to 100000

The source: a journal-like SQLite file, one row per finished run (row key, run id, the run's
final JSON as text), read with a cursor 1,000 rows at a time, each run ``json.loads``-ed: what a
batch's journal holds once its runs are finished. The runs are those of ``bench_flatten.py``
(4 steps, a quarter with 2 nested runs, 5 to 10 output leaves per step): 10,000 distinct ones,
repeated with fresh run ids. The file is made once per size in the temporary directory.

Contenders, each in a fresh process, one after the other, per size:

- ``read_only``: the cursor and ``json.loads`` alone (the floor: what reading the journal costs);
- ``stream``: the same runs fed chunk by chunk to ``TableWriter(out, row_key_type="int64")``,
  which writes ``out/runs/``, ``out/steps/``, ``out/outputs/`` as parquet datasets;
- ``in_memory`` (up to ``--in-memory-up-to`` runs): every run read into a list, then
  ``px.flatten(runs, row_keys=...).to_parquet(out)``, as a whole batch was turned into tables
  before.

Each reports its wall time and its peak resident memory above the process's RSS once its
imports are done (the kernel's peak mark, ``VmHWM``, reset at that point).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SIZES = (100_000, 300_000, 1_000_000)
DISTINCT = 10_000
CHUNK = 1_000
# Bump when the file's layout or content changes, so that kept files are made again.
DATA_VERSION = 1


def journal_path(count: int) -> Path:
    return Path(tempfile.gettempdir()) / f"plextera-bench-stream-v{DATA_VERSION}-{count}.sqlite"


def make_journal(count: int) -> Path:
    """The journal-like file of ``count`` finished runs (made once, then kept)."""
    path = journal_path(count)
    if path.exists():
        return path
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_flatten import make_runs

    texts = [json.dumps(run) for run in make_runs(DISTINCT)]
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(partial) as db:
        db.execute("CREATE TABLE runs (row_key INTEGER PRIMARY KEY, run_id TEXT, final_json TEXT)")
        for start in range(0, count, DISTINCT):
            block = f"b{start // DISTINCT}_"
            rows = []
            for offset in range(min(DISTINCT, count - start)):
                text = texts[offset].replace('"run_', f'"{block}run_')
                rows.append((start + offset, json.loads(text)["id"], text))
            db.executemany("INSERT INTO runs VALUES (?, ?, ?)", rows)
    partial.replace(path)
    return path


def journal_chunks(path: Path) -> Iterator[tuple[list[dict[str, Any]], dict[str, int]]]:
    """The finished runs, ``CHUNK`` at a time, with the row key of each run id."""
    with sqlite3.connect(path) as db:
        cursor = db.execute("SELECT row_key, run_id, final_json FROM runs ORDER BY row_key")
        while rows := cursor.fetchmany(CHUNK):
            yield (
                [json.loads(text) for _, _, text in rows],
                {run_id: key for key, run_id, _ in rows},
            )


def run_read_only(path: Path, out: Path) -> str:
    count = sum(len(runs) for runs, _ in journal_chunks(path))
    return f"{count:,} runs read"


def run_stream(path: Path, out: Path, rows_per_group: int | None = None) -> str:
    from plextera_data.flatten import TableWriter

    options = {} if rows_per_group is None else {"rows_per_group": rows_per_group}
    with TableWriter(out, row_key_type="int64", **options) as writer:
        for runs, keys in journal_chunks(path):
            writer.add(runs, row_keys=keys)
    return ", ".join(f"{name} {rows:,}" for name, rows in writer.rows_written.items())


def run_in_memory(path: Path, out: Path) -> str:
    import plextera_data as px

    runs: list[dict[str, Any]] = []
    keys: dict[str, int] = {}
    for chunk, chunk_keys in journal_chunks(path):
        runs.extend(chunk)
        keys.update(chunk_keys)
    tables = px.flatten(runs, row_keys=keys)
    tables.to_parquet(out)
    return (
        f"runs {len(tables.runs):,}, steps {len(tables.steps):,}, outputs {len(tables.outputs):,}"
    )


CONTENDERS = {"read_only": run_read_only, "stream": run_stream, "in_memory": run_in_memory}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _one(name: str, count: int, rows_per_group: int | None) -> None:
    """Child process: run one contender on the journal of ``count`` runs, print its figures."""
    import plextera_data as px  # imported before the baseline, as a notebook has it
    from plextera_data.flatten import TableWriter

    path = journal_path(count)
    out = Path(tempfile.mkdtemp(prefix="plextera-bench-stream-"))
    try:
        with TableWriter(out / "warm-up") as writer:  # lazily loaded parts of pyarrow
            writer.add(next(journal_chunks(path))[0][:10])
        px.flatten([]).to_parquet(out / "warm-up-files")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        before = _status_mib("VmRSS")
        started = time.perf_counter()
        if name == "stream":
            shape = run_stream(path, out / "tables", rows_per_group)
        else:
            shape = CONTENDERS[name](path, out / "tables")
        elapsed = time.perf_counter() - started
        peak = _status_mib("VmHWM") - before
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"seconds": elapsed, "peak_mib": peak, "shape": shape}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--in-memory-up-to", type=int, default=300_000)
    parser.add_argument("--rows-per-group", type=int, help="TableWriter's (default: its own)")
    parser.add_argument("--only", choices=sorted(CONTENDERS), nargs="+", default=list(CONTENDERS))
    parser.add_argument("--one", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.runs[0], args.rows_per_group)
        return
    figures: dict[int, dict[str, dict[str, Any]]] = {}
    for count in args.runs:
        started = time.perf_counter()
        path = make_journal(count)
        size, ready = path.stat().st_size / 2**30, time.perf_counter() - started
        print(f"{count:,} runs: {path} ({size:.1f} GiB, ready in {ready:.0f} s)")
        figures[count] = {}
        for name in args.only:
            if name == "in_memory" and count > args.in_memory_up_to:
                continue
            group = (
                []
                if args.rows_per_group is None
                else ["--rows-per-group", str(args.rows_per_group)]
            )
            result = subprocess.run(
                [sys.executable, __file__, "--one", name, "--runs", str(count), *group],
                capture_output=True,
                text=True,
            )
            if result.returncode:
                raise SystemExit(f"{name} at {count:,} runs failed:\n{result.stderr}")
            one = figures[count][name] = json.loads(result.stdout.splitlines()[-1])
            print(
                f"  {name:10s} {one['seconds']:7.1f} s  peak RSS growth {one['peak_mib']:7.0f} MiB"
                f"  ({one['seconds'] / count * 1e6:.0f} us/run)  {one['shape']}"
            )
    print()
    print("runs        read_only   stream    in_memory   (peak RSS growth, MiB)")
    for count, by_name in figures.items():
        cells = [
            f"{by_name[name]['peak_mib']:9.0f}" if name in by_name else f"{'-':>9s}"
            for name in CONTENDERS
        ]
        print(f"{count:>9,}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
