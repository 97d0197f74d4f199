"""The shipped sample data and ``plextera-data demo``.

The sample lives in ``plextera_data/data/`` (written by ``scripts/make_sample_data.py``):

- ``claims.csv``: 300 insurance claims for the ``incoming-claim`` workflow (JSON starts; a few
  have no document or a state the router does not serve, so some runs fail, as in real intake).
- ``lab-results.csv``: 200 lab results for ``daily-lab-loader``.
- ``claims-with-documents.csv`` and ``claim-documents/*.pdf``: 6 claims whose PDF is uploaded as a
  multipart file part.

    from plextera_data.demo import sample_path, load_sample
    claims = load_sample("claims")           # a DataFrame indexed by claimId
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING

from plextera_data.jobs import (
    DEFAULT_JOURNAL_NAME,
    EXIT_OK,
    PROG,
    JobSpec,
    Outcome,
    job_file_for,
    make_client,
    print_summary,
    read_input,
    run_job,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SAMPLES", "SAMPLE_TYPES", "load_sample", "run_demo", "sample_path"]

#: name -> (file in plextera_data/data, index column, workflow it is meant for, file columns)
SAMPLES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "claims": ("claims.csv", "claimId", "incoming-claim", ()),
    "lab-results": ("lab-results.csv", "sampleId", "daily-lab-loader", ()),
    "claims-with-documents": (
        "claims-with-documents.csv",
        "claimId",
        "incoming-claim",
        ("document",),
    ),
}

#: name -> the columns that are not text, as ``--dtype`` names them (the rest is sent as written).
SAMPLE_TYPES: dict[str, dict[str, str]] = {
    "claims": {"amountClaimed": "float"},
    "lab-results": {"value": "float"},
    "claims-with-documents": {},
}

DEMO_SAMPLE = "claims"
_OUTPUT_FILES = ("runs.parquet", "steps.parquet", "outputs.parquet")


def sample_path(name: str = "claims.csv") -> Path:
    """The path of a shipped sample file, e.g. ``sample_path("claims.csv")``."""
    path = Path(str(resources.files("plextera_data").joinpath("data", name)))
    if not path.exists():
        raise FileNotFoundError(f"no sample file {name!r} in {path.parent}")
    return path


def load_sample(name: str = "claims") -> pd.DataFrame:
    """A shipped sample as a DataFrame indexed by its id column (kept as a column too).

    ``name``: ``"claims"``, ``"lab-results"`` or ``"claims-with-documents"`` (whose
    ``document`` column holds absolute paths of the shipped PDFs). Read as ``plextera-data
    run`` reads it: text as written, the amounts (:data:`SAMPLE_TYPES`) as numbers.
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    file_name, index_col, _, file_columns = SAMPLES[name]
    path = sample_path(file_name)
    frame = read_input(path, index_col=index_col, dtype=SAMPLE_TYPES[name])
    for column in file_columns:
        frame[column] = [str(path.parent / value) for value in frame[column]]
    return frame


def _clear_previous(out: Path, journal: Path) -> None:
    """Remove what an earlier demo wrote there (its runs lived in a simulator that is gone)."""
    for name in _OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    job_file_for(journal).unlink(missing_ok=True)


def run_demo(
    out: Path,
    *,
    speed: float = 200.0,
    seed: int = 0,
    progress: bool = True,
    stdout: IO[str],
) -> int:
    """Serve the simulator, run the sample claims through ``plextera-data run``'s code path,
    print a summary and a peek at the outputs; return the exit code (0: the demo worked).

    The sample is copied into ``out`` first, so that the closing hint names a file that exists.
    Raises :class:`ImportError` without the simulator's extra.
    """
    from plextera_data.simulator import Simulator

    file_name, index_col, workflow_id, _ = SAMPLES[DEMO_SAMPLE]
    journal = out / DEFAULT_JOURNAL_NAME
    _clear_previous(out, journal)
    out.mkdir(parents=True, exist_ok=True)
    source = out / file_name
    shutil.copyfile(sample_path(file_name), source)
    spec = JobSpec(
        workflow_id=workflow_id,
        input=str(source.resolve()),
        index_col=index_col,
        dtype=SAMPLE_TYPES[DEMO_SAMPLE],
    )
    simulator = Simulator(seed=seed, speed=speed)
    write = stdout.write
    started = time.monotonic()
    with simulator.serve() as server:
        write(
            f"plextera-data demo: {_count_rows(spec)} insurance claims through the "
            f"{workflow_id!r} workflow\n"
            f"  the embedded simulator is serving the API at {server.base_url}\n"
            f"  (seed {seed}, {speed:g} simulated seconds per second; no key, no network)\n"
        )
        stdout.flush()
        client = make_client(**server.client_options())  # with the simulator's clock rate
        try:
            outcome = run_job(
                spec,
                out,
                client=client,
                journal=journal,
                concurrency=16,
                timeout=120.0,
                progress=progress,
            )
        finally:
            client.close()
    print_summary(outcome, out, stdout)
    _print_peek(outcome, stdout)
    write(
        f"\nDone in {time.monotonic() - started:.1f} s. Open the tables:\n"
        f"  import plextera_data as px\n"
        f"  tables = px.Tables.read_parquet({str(out)!r})\n"
        f"  tables.runs, tables.steps, tables.outputs\n"
        f"Same job against the real API:\n  {run_hint(spec, source)}\n"
    )
    return EXIT_OK if not outcome.timed_out else outcome.exit_code


def _count_rows(spec: JobSpec) -> int:
    with Path(spec.input).open(encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


def run_hint(spec: JobSpec, source: Path) -> str:
    """The ``plextera-data run`` command of ``spec``, with ``source`` as its input."""
    parts = [f"PLEXTERA_API_KEY=... {PROG} run {spec.workflow_id} {source} --out results/"]
    if spec.index_col:
        parts.append(f"--index-col {spec.index_col}")
    if spec.dtype:
        parts.append("--dtype " + ",".join(f"{c}={t}" for c, t in spec.dtype.items()))
    return " ".join(parts)


def _print_peek(outcome: Outcome, stdout: IO[str]) -> None:
    """A few completed claims with what the workflow extracted and where it routed them."""
    import pandas as pd

    wide = outcome.tables.outputs_wide(by="row_key")
    wanted = {
        "Extracted Document / fields[2].value": "amount",
        "Extracted Document / fields[2].confidence": "confidence",
        "Route Result / queue": "routed to",
    }
    present = [column for column in wanted if column in wide.columns]
    if not present:
        return
    peek = wide[present].rename(columns=wanted).dropna().sort_index().head(6)
    statuses = pd.Series({row.key: row.status for row in outcome.batch.rows}, dtype="string")
    peek.insert(0, "status", statuses.reindex(peek.index).to_numpy())
    peek.index.name = "claim"
    stdout.write("\nA peek at the outputs (first completed claims)\n")
    text = peek.to_string(float_format=lambda value: f"{value:,.2f}")
    stdout.write("  " + text.replace("\n", "\n  ") + "\n")
