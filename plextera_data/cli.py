"""The ``plextera-data`` command: run a workflow over a file's rows, resume, demo, simulator.

    plextera-data run incoming-claim claims.csv --out results/
    plextera-data resume results/journal.plextera.db --out results/
    plextera-data demo
    plextera-data simulator --port 8765

Exit codes: 0 every run completed; 1 some runs failed, were closed, are still running (timeout)
or their submission is uncertain or failed; 2 usage or input errors; 3 the API could not be used
(no key, authentication, permission, connection, unexpected answers); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

from plextera_data import errors
from plextera_data._version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from plextera_data.batch import Batch
    from plextera_data.client import Client
    from plextera_data.tables import Tables

__all__ = [
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNS_NOT_COMPLETED",
    "EXIT_USAGE",
    "JobSpec",
    "UsageError",
    "main",
    "read_input",
]

EXIT_OK = 0
EXIT_RUNS_NOT_COMPLETED = 1
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_INTERRUPTED = 130

PROG = "plextera-data"
DEFAULT_JOURNAL_NAME = "journal.plextera.db"
INPUT_FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


# "... (POST /workflows/x/runs, request id pxd_...)": the same reason for every row, grouped.
_REQUEST_SUFFIX = re.compile(r"\s*\((?:GET|POST) [^()]*\)$")


class UsageError(Exception):
    """A bad argument or input file, reported as one line and exit code 2."""


class APIUnavailable(Exception):
    """The API cannot be used at all (wrong key, unreachable): exit code 3."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line naming the problem and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- reading input


def read_input(path: str | Path, *, index_col: str | None = None) -> pd.DataFrame:
    """Read a CSV, parquet or JSON Lines file into a DataFrame, by its extension.

    ``index_col`` makes that column the index (the row key of every table); the column stays in
    the frame, so it is still sent in each request (leave it out with ``columns``).
    Raises :class:`UsageError` with one line naming the problem.
    """
    import pandas as pd

    source = Path(path)
    kind = INPUT_FORMATS.get(source.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(INPUT_FORMATS))
        raise UsageError(f"cannot read {str(source)!r}: unknown extension (use one of {known})")
    if not source.is_file():
        raise UsageError(f"input file {str(source)!r} does not exist")
    try:
        if kind == "csv":
            frame = pd.read_csv(source)
        elif kind == "parquet":
            frame = pd.read_parquet(source)
        else:
            frame = pd.read_json(source, lines=True, dtype=False)
    except Exception as exc:  # pandas/pyarrow raise many types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {str(source)!r} as {kind}: {reason}") from exc
    if frame.empty:
        raise UsageError(f"input file {str(source)!r} has no rows: there is nothing to submit")
    if index_col is not None:
        if index_col not in frame.columns:
            raise UsageError(
                f"--index-col {index_col!r} is not a column of {source.name} "
                f"(columns: {_column_list(frame)})"
            )
        # The column stays (it is sent too); the unnamed index avoids pandas' "both an index
        # level and a column label" ambiguity.
        frame.index = pd.Index(frame[index_col].to_numpy(), dtype=frame[index_col].dtype)
    return frame


def _column_list(frame: pd.DataFrame, limit: int = 12) -> str:
    names = [str(c) for c in frame.columns]
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names


def _resolve_file_columns(frame: pd.DataFrame, columns: Sequence[str], base: Path) -> pd.DataFrame:
    """Relative paths in file columns are read relative to the input file's directory."""
    if not columns:
        return frame
    frame = frame.copy()
    for column in columns:
        frame[column] = [
            str(base / value) if isinstance(value, str) and value and not Path(value).is_absolute()
            else value
            for value in frame[column].tolist()
        ]  # fmt: skip
    return frame


# --------------------------------------------------------------------------- a job


@dataclass
class JobSpec:
    """What ``run`` was asked to do; written beside the journal so ``resume`` can finish it."""

    workflow_id: str
    input: str
    columns: list[str] | None = None
    files: list[str] = field(default_factory=list)
    index_col: str | None = None

    def load_frame(self) -> pd.DataFrame:
        """The input frame, read and prepared exactly as ``run`` did."""
        frame = read_input(self.input, index_col=self.index_col)
        _check_columns(frame, self.columns, "--columns")
        _check_columns(frame, self.files, "--files")
        return _resolve_file_columns(frame, self.files, Path(self.input).resolve().parent)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> JobSpec | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the job file {str(path)!r}: {exc}") from exc


def job_file_for(journal: Path) -> Path:
    """Where ``run`` records its job: ``x.plextera.db`` -> ``x.plextera.job.json``."""
    return journal.with_suffix(".job.json")


def _check_requests(spec: JobSpec) -> None:
    """Read the input and map every row to its request, raising on the first bad one."""
    from plextera_data.rows import plan_requests

    frame = spec.load_frame()
    plan_requests(frame, spec.workflow_id, columns=spec.columns, files=spec.files or None)


def _check_columns(frame: pd.DataFrame, names: Sequence[str] | None, option: str) -> None:
    missing = [name for name in names or () if name not in frame.columns]
    if missing:
        raise UsageError(
            f"{option}: no column {', '.join(repr(m) for m in missing)} in the input "
            f"(columns: {_column_list(frame)})"
        )


@dataclass
class Outcome:
    """A finished (or given up) job: the batch, its tables and where they were written."""

    batch: Batch
    tables: Tables
    written: dict[str, Path]
    journal: Path | None
    timed_out: bool = False

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.batch.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (item[0] != "COMPLETED", item[0])))

    @property
    def unfinished(self) -> int:
        """Rows that ``resume`` can still move on: not sent yet, or with a run still going."""
        done = {"COMPLETED", "FAILED", "CLOSED", "SUBMISSION_FAILED", "SUBMISSION_UNCERTAIN"}
        return sum(1 for row in self.batch.rows if row.status not in done)

    @property
    def refused_by_api(self) -> bool:
        """No row was accepted: the API refused every start (or could not be reached)."""
        return all(row.status == "SUBMISSION_FAILED" for row in self.batch.rows)

    @property
    def exit_code(self) -> int:
        if self.refused_by_api:
            return EXIT_API_ERROR
        every_row_completed = all(row.status == "COMPLETED" for row in self.batch.rows)
        return EXIT_OK if every_row_completed and not self.timed_out else EXIT_RUNS_NOT_COMPLETED


def _make_client(base_url: str | None, api_key: str | None = None) -> Client:
    """The client for a job, after one cheap request proving the key and the URL work.

    A wrong key or an unreachable API fails here (exit code 3) instead of failing every row.
    The check lists one recent run; an answer other than 401 (say 403 for a key that may start
    runs but not list them) lets the job go on.
    """
    import os

    from plextera_data.client import API_KEY_ENV, Client
    from plextera_data.retry import RetryPolicy

    if api_key is None and not os.environ.get(API_KEY_ENV):
        raise errors.MissingAPIKeyError(API_KEY_ENV)
    check = Client(
        api_key=api_key, base_url=base_url, retry=RetryPolicy(max_retries=2, initial_backoff=0.25)
    )
    try:
        check.list_runs(size=1)
    except errors.AuthenticationError as exc:
        raise APIUnavailable(
            f"the API at {check.base_url} refused the key: {exc}. Check PLEXTERA_API_KEY"
        ) from exc
    except errors.APIConnectionError as exc:
        raise APIUnavailable(
            f"cannot reach the API at {check.base_url}: {exc}. "
            "Check --base-url / PLEXTERA_BASE_URL and the network"
        ) from exc
    except errors.APIError:
        pass
    finally:
        check.close()
    return Client(api_key=api_key, base_url=base_url)


def run_job(
    spec: JobSpec,
    out: Path,
    *,
    client: Client,
    journal: Path,
    concurrency: int,
    timeout: float | None,
    progress: bool,
) -> Outcome:
    """Submit ``spec``'s rows with a journal, wait, write the tables to ``out``.

    With an existing journal of the same job, rows already sent are not sent again: only the
    rest is submitted, and every run is polled to the end.
    """
    import plextera_data as px

    frame = spec.load_frame()
    out.mkdir(parents=True, exist_ok=True)
    journal.parent.mkdir(parents=True, exist_ok=True)
    spec.save(job_file_for(journal))
    batch = px.submit(
        frame,
        spec.workflow_id,
        client=client,
        columns=spec.columns,
        files=spec.files or None,
        journal=str(journal),
        concurrency=concurrency,
        progress=progress,
    )
    return _finish(batch, out, journal=journal, timeout=timeout, progress=progress)


def resume_job(
    journal: Path, out: Path, *, client: Client, timeout: float | None, progress: bool
) -> Outcome:
    """Finish the job recorded in ``journal``: send the rows not yet sent, poll every run."""
    import plextera_data as px

    if not journal.is_file():
        raise UsageError(f"journal {str(journal)!r} does not exist")
    spec = JobSpec.load(job_file_for(journal))
    if spec is not None and Path(spec.input).is_file():
        return run_job(
            spec,
            out,
            client=client,
            journal=journal,
            concurrency=16,
            timeout=timeout,
            progress=progress,
        )
    batch = px.resume(str(journal), client=client)
    return _finish(batch, out, journal=journal, timeout=timeout, progress=progress)


def _finish(
    batch: Batch, out: Path, *, journal: Path | None, timeout: float | None, progress: bool
) -> Outcome:
    timed_out = False
    try:
        batch.wait(timeout=timeout, progress=progress)
    except errors.BatchTimeoutError:
        timed_out = True
    tables = batch.tables()
    written = tables.to_parquet(out)
    return Outcome(batch, tables, written, journal, timed_out=timed_out)


# --------------------------------------------------------------------------- printing


def _bar(share: float, width: int = 24) -> str:
    filled = round(share * width)
    return "█" * filled + "·" * (width - filled)


def print_summary(outcome: Outcome, out: Path, stream: IO[str]) -> None:
    """Counts per status, the most common failure reasons, and where the files went."""
    total = len(outcome.batch.rows)
    write = stream.write
    write(f"\n{total} rows of workflow {outcome.batch.workflow_id!r}\n")
    for status, count in outcome.counts.items():
        share = count / total if total else 0.0
        write(f"  {status:<22}{count:>6}  {_bar(share)} {share:6.1%}\n")
    reasons = _failure_reasons(outcome)
    if reasons:
        write("\nWhy rows did not complete\n")
        for (status, reason), count in reasons[:5]:
            write(f"  {count:>5} x {status}: {reason}\n")
        if len(reasons) > 5:
            write(f"  ... {len(reasons) - 5} other reasons: see runs.parquet (error_message)\n")
    if outcome.timed_out:
        write("\nThe timeout passed before every run finished; the runs go on on the server.\n")
    write(f"\nTables written to {out}{'' if str(out).endswith('/') else '/'}\n")
    for name, path in outcome.written.items():
        rows = len(getattr(outcome.tables, name))
        write(f"  {path.name:<18}{rows:>7} rows\n")
    if outcome.journal is not None:
        write(f"  journal: {outcome.journal}\n")
        if outcome.unfinished:
            write(f"  continue with: {PROG} resume {outcome.journal} --out {out}\n")


def _failure_reasons(outcome: Outcome) -> list[tuple[tuple[str, str], int]]:
    counts: dict[tuple[str, str], int] = {}
    for row in outcome.batch.rows:
        if row.status == "COMPLETED":
            continue
        reason = row.error
        run = row.run
        if run is not None and run.error is not None:
            reason = run.error.message or run.error.code
        reason = _REQUEST_SUFFIX.sub("", (reason or "no error message").splitlines()[0])
        key = (row.status, reason)
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


# --------------------------------------------------------------------------- commands


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _command_run(args: argparse.Namespace, stdout: IO[str]) -> int:
    spec = JobSpec(
        workflow_id=args.workflow,
        input=args.input,
        columns=_split_names(args.columns),
        files=_split_names(args.files) or [],
        index_col=args.index_col,
    )
    out = Path(args.out)
    journal = Path(args.journal) if args.journal else out / DEFAULT_JOURNAL_NAME
    if not args.workflow.strip():
        raise UsageError("WORKFLOW is empty: give the workflow's id, such as 'incoming-claim'")
    _check_requests(spec)  # bad input fails before anything is created or sent
    spec.input = str(Path(args.input).resolve())  # recorded for `resume`, from any folder
    client = _make_client(args.base_url)
    with _interrupt_note(journal, out):
        outcome = run_job(
            spec,
            out,
            client=client,
            journal=journal,
            concurrency=args.concurrency,
            timeout=args.timeout,
            progress=not args.no_progress,
        )
    print_summary(outcome, out, stdout)
    return outcome.exit_code


def _command_resume(args: argparse.Namespace, stdout: IO[str]) -> int:
    journal = Path(args.journal)
    out = Path(args.out)
    if not journal.is_file():
        raise UsageError(f"journal {str(journal)!r} does not exist")
    client = _make_client(args.base_url)
    with _interrupt_note(journal, out):
        outcome = resume_job(
            journal, out, client=client, timeout=args.timeout, progress=not args.no_progress
        )
    print_summary(outcome, out, stdout)
    return outcome.exit_code


def _command_demo(args: argparse.Namespace, stdout: IO[str]) -> int:
    from plextera_data.demo import run_demo

    return run_demo(
        Path(args.out),
        speed=args.speed,
        seed=args.seed,
        progress=not args.no_progress,
        stdout=stdout,
    )


def _command_simulator(args: argparse.Namespace, stdout: IO[str]) -> int:
    try:
        from plextera_data.simulator import Simulator, parse_faults
    except ImportError as exc:
        raise UsageError(
            f'the simulator needs its extra: pip install "plextera-data[simulator]" ({exc})'
        ) from exc
    try:
        faults = parse_faults(args.faults) if args.faults else []
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from exc
    simulator = Simulator(seed=args.seed, speed=args.speed, faults=faults)
    try:
        server = simulator.serve(host=args.host, port=args.port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
        stdout.write(
            f"Plextera simulator serving at {server.base_url}\n"
            f"  seed {args.seed}, speed {args.speed:g}x"
            + (f", faults {args.faults}" if args.faults else "")
            + "\n\nPoint the library (or the command line) at it:\n"
            f"  export PLEXTERA_BASE_URL={server.base_url}\n"
            f"  export PLEXTERA_API_KEY={server.api_key}\n\n"
            "Press Ctrl-C to stop.\n"
        )
        stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    stdout.write("Simulator stopped.\n")
    return EXIT_OK


class _interrupt_note:
    """On Ctrl-C, tell how to continue (the journal keeps what was done), then re-raise."""

    def __init__(self, journal: Path, out: Path) -> None:
        self.journal = journal
        self.out = out

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            sys.stderr.write(
                f"\n{PROG}: interrupted. The journal {self.journal} keeps every accepted run; "
                f"continue with: {PROG} resume {self.journal} --out {self.out}\n"
            )


# --------------------------------------------------------------------------- the parser

_MAIN_EPILOG = """\
examples:
  plextera-data demo                                   # no key needed: the embedded simulator
  plextera-data run incoming-claim claims.csv --out results/
  plextera-data resume results/journal.plextera.db --out results/
  plextera-data simulator --port 8765                  # for notebooks without a key

exit codes:
  0    every run completed
  1    some runs failed, were closed, are still running, or their submission is uncertain
  2    bad arguments or input file
  3    the API could not be used (no key, authentication, permission, connection)
  130  interrupted (Ctrl-C); the journal keeps what was done: use `resume`

environment: PLEXTERA_API_KEY (the key), PLEXTERA_BASE_URL (default: the Plextera API)
"""

_RUN_EPILOG = """\
examples:
  plextera-data run incoming-claim claims.csv --out results/
  plextera-data run daily-lab-loader labs.parquet --out labs/ --index-col sampleId \\
      --columns customerId,document.fileId --concurrency 8 --timeout 600
  plextera-data run incoming-claim claims.jsonl --out out/ --files document

Each row becomes one run: its columns form the JSON body (a dotted name such as
document.fileId nests). With --files, those columns hold file paths (relative to the input
file's folder) and each start is a multipart upload. The tables runs, steps and outputs are
written to OUT as parquet; the journal (default OUT/journal.plextera.db) records every
accepted run, so an interrupted job continues with `plextera-data resume`.
"""

_RESUME_EPILOG = """\
example:
  plextera-data resume results/journal.plextera.db --out results/

Rows already sent are never sent again. Rows not yet sent are sent if the input file recorded
beside the journal still exists; a row whose start was in flight when the job stopped is
reported as SUBMISSION_UNCERTAIN (its run may exist) and is not re-sent.
"""

_DEMO_EPILOG = """\
example:
  plextera-data demo --out demo-output/

Starts the embedded simulator (no key, no network), runs 300 sample insurance claims through
the incoming-claim workflow exactly as `plextera-data run` would, and writes the tables.
"""

_SIMULATOR_EPILOG = """\
examples:
  plextera-data simulator --port 8765
  plextera-data simulator --port 8765 --seed 7 --speed 10 --faults rate_limit:0.05,server_error:0.01

--faults: comma-separated kind:rate or kind:#n+m (request numbers), optionally :GET or :POST;
kinds: rate_limit, server_error (server_error=503 sets the status), slow (slow=2.5 the delay),
drop, malformed. Serves until Ctrl-C.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``plextera-data`` and its commands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Run Plextera workflows over the rows of a file and get tidy tables back.",
        epilog=_MAIN_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run a workflow over every row of a CSV, parquet or JSON Lines file",
        description="Run WORKFLOW once per row of INPUT, wait, and write the tables to OUT.",
        epilog=_RUN_EPILOG,
        formatter_class=formatter,
    )
    run.add_argument("workflow", metavar="WORKFLOW", help="the workflow id, e.g. incoming-claim")
    run.add_argument(
        "input", metavar="INPUT", help="a .csv, .parquet or .jsonl file, one row a run"
    )
    run.add_argument("--out", required=True, metavar="DIR", help="folder for the parquet tables")
    run.add_argument("--columns", metavar="A,B,...", help="columns to send (default: all)")
    run.add_argument("--files", metavar="A,B,...", help="columns holding file paths (multipart)")
    run.add_argument(
        "--journal", metavar="PATH", help=f"the journal (default: OUT/{DEFAULT_JOURNAL_NAME})"
    )
    run.add_argument(
        "--concurrency", type=_positive_int, default=16, metavar="N",
        help="starts in flight at most (default: 16; adapts down on 429)",
    )  # fmt: skip
    run.add_argument("--index-col", metavar="COLUMN", help="column that keys the rows")
    _add_common(run)

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted job from its journal",
        description="Continue the job recorded in JOURNAL and write the tables to OUT.",
        epilog=_RESUME_EPILOG,
        formatter_class=formatter,
    )
    resume.add_argument("journal", metavar="JOURNAL", help="the journal of the job")
    resume.add_argument("--out", required=True, metavar="DIR", help="folder for the parquet tables")
    _add_common(resume)

    demo = commands.add_parser(
        "demo",
        help="run the shipped sample against the embedded simulator (no key needed)",
        description="Run 300 sample claims against the embedded simulator and write the tables.",
        epilog=_DEMO_EPILOG,
        formatter_class=formatter,
    )
    demo.add_argument(
        "--out", default="plextera-demo-output", metavar="DIR",
        help="folder for the tables (default: ./plextera-demo-output)",
    )  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    demo.add_argument(
        "--speed", type=_positive_float, default=200.0, metavar="X",
        help="simulated seconds per second (default: 200)",
    )  # fmt: skip
    demo.add_argument("--no-progress", action="store_true", help="no progress display")

    simulator = commands.add_parser(
        "simulator",
        help="serve the local simulator of the API until Ctrl-C",
        description="Serve the Plextera simulator on loopback, for notebooks and scripts.",
        epilog=_SIMULATOR_EPILOG,
        formatter_class=formatter,
    )
    simulator.add_argument("--port", type=_port, default=8765, help="port (default: 8765; 0: any)")
    simulator.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    simulator.add_argument("--seed", type=int, default=0, help="seed of runs and faults")
    simulator.add_argument(
        "--speed", type=_positive_float, default=1.0, metavar="X",
        help="simulated seconds per second (default: 1, real time)",
    )  # fmt: skip
    simulator.add_argument("--faults", metavar="SPEC", help="faults to inject, see below")
    return parser


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--timeout", type=_positive_float, metavar="SECONDS",
        help="stop waiting after this long (default: wait until every run finished)",
    )  # fmt: skip
    command.add_argument("--base-url", metavar="URL", help="API base URL (PLEXTERA_BASE_URL)")
    command.add_argument("--no-progress", action="store_true", help="no progress display")


_COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
    "run": _command_run,
    "resume": _command_resume,
    "demo": _command_demo,
    "simulator": _command_simulator,
}


def _error(message: str) -> None:
    lines = str(message).strip().splitlines() or ["unknown error"]
    sys.stderr.write(f"{PROG}: error: {lines[0]}\n")
    for line in lines[1:]:
        sys.stderr.write(f"  {line.strip()}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except (errors.MissingAPIKeyError, APIUnavailable) as exc:
        _error(str(exc))
        return EXIT_API_ERROR
    except (errors.InvalidInputError, errors.JournalError, errors.ConfigurationError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except errors.PlexteraError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_API_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
