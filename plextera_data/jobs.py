"""Jobs of the ``plextera-data`` command: a file's rows submitted with a journal, waited for, and
written as tables.

The command line (:mod:`plextera_data.cli`) and the demo (:mod:`plextera_data.demo`) both run
jobs through this module, which imports neither of them.

A file is read as it is written: a CSV's cells are text (an empty cell is null, nothing else is
guessed: ``007`` stays ``"007"``, ``NA`` stays ``"NA"``) unless ``dtype`` names a column's type
or ``infer_types`` asks for pandas' guessing; parquet and JSON Lines keep their own types.

Exit codes (:class:`Outcome.exit_code`): 0 every run completed; 1 some runs failed, were closed,
are still running (timeout) or their submission is uncertain or failed; 2 usage or input
errors; 3 the API could not be used; 130 interrupted.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plextera_data import errors
from plextera_data.events import EventStore
from plextera_data.events import serve as serve_events
from plextera_data.progress import ProgressReporter, Snapshot, open_progress

if TYPE_CHECKING:
    import pandas as pd

    from plextera_data.batch import Batch
    from plextera_data.client import Client
    from plextera_data.tables import Tables

__all__ = [
    "DEFAULT_JOURNAL_NAME",
    "DTYPES",
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNS_NOT_COMPLETED",
    "EXIT_USAGE",
    "APIUnavailable",
    "JobSpec",
    "Outcome",
    "UsageError",
    "job_file_for",
    "make_client",
    "parse_dtypes",
    "print_summary",
    "read_input",
    "resume_job",
    "run_job",
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
TERMINAL = frozenset({"COMPLETED", "FAILED", "CLOSED"})
#: Statuses ``resume`` cannot move on: terminal runs, and starts that failed or may have run.
SETTLED = TERMINAL | {"SUBMISSION_FAILED", "SUBMISSION_UNCERTAIN"}

# "... (POST /workflows/x/runs, request id pxd_...)": the same reason for every row, grouped.
_REQUEST_SUFFIX = re.compile(r"\s*\((?:GET|POST) [^()]*\)$")


class UsageError(Exception):
    """A bad argument or input file, reported as one line and exit code 2."""


class APIUnavailable(Exception):
    """The API cannot be used at all (wrong key, unreachable): exit code 3."""


def sentence(text: object) -> str:
    """``text`` without its closing full stop, so that it can be followed by ``". Next"``."""
    return str(text).strip().rstrip(".")


# --------------------------------------------------------------------------- column types


def _to_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise ValueError("not a whole number")
    return int(text)


def _to_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number (JSON cannot hold it)")
    return value


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _to_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("not true/false (nor yes/no, 1/0)")


def _to_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None


#: ``--dtype`` types: name -> (parser of one cell's text, pandas dtype of the column).
DTYPES: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "object"),
    "int": (_to_int, "Int64"),
    "float": (_to_float, "float64"),
    "bool": (_to_bool, "boolean"),
    "json": (_to_json, "object"),
}


def parse_dtypes(text: str | None) -> dict[str, str]:
    """``"zip=str,amount=float"`` -> ``{"zip": "str", "amount": "float"}``; bad text raises
    :class:`UsageError`."""
    wanted: dict[str, str] = {}
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        column, sep, kind = (piece.strip() for piece in item.rpartition("="))
        if not sep or not column or kind not in DTYPES:
            raise UsageError(
                f"--dtype: {item!r} is not COLUMN=TYPE with TYPE one of {', '.join(DTYPES)} "
                "(e.g. --dtype amount=float,zip=str)"
            )
        wanted[column] = kind
    return wanted


def _apply_dtypes(frame: pd.DataFrame, dtype: dict[str, str], key: Callable[[int], Any]) -> None:
    """Parse the text of the ``dtype`` columns in place; a bad cell names its row and column."""
    import pandas as pd

    problems: list[tuple[Any, str | None, str]] = []
    for column, kind in dtype.items():
        parse, pandas_dtype = DTYPES[kind]
        values: list[Any] = []
        for position, cell in enumerate(frame[column].tolist()):
            if cell is None or (isinstance(cell, float) and math.isnan(cell)):
                values.append(None)  # an empty cell: null, whatever the type
                continue
            try:
                values.append(parse(str(cell)))
            except ValueError as exc:
                problems.append((key(position), column, f"{str(cell)!r} is {exc} ({kind})"))
                values.append(None)
        frame[column] = pd.Series(values, index=frame.index, dtype=pandas_dtype)
    if problems:
        raise errors.InvalidInputError(
            f"--dtype: {len(problems)} cells are not of their column's type; nothing was sent",
            problems,
        )


# --------------------------------------------------------------------------- reading input


def read_input(
    path: str | Path,
    *,
    index_col: str | None = None,
    dtype: dict[str, str] | None = None,
    infer_types: bool = False,
) -> pd.DataFrame:
    """Read a CSV, parquet or JSON Lines file into a DataFrame, by its extension, as written.

    A CSV's cells are read as text; an empty cell is null (the one rule); ``dtype`` parses
    named columns (``{"amount": "float"}``, types in :data:`DTYPES`); ``infer_types=True``
    lets pandas guess the other columns' types (``007`` becomes 7, ``NA`` null). Parquet and
    JSON Lines keep their types (parquet's nullable integers stay integers).

    ``index_col`` makes that column the index (the row key of every table); its values must be
    unique and present. The column stays in the frame, so it is still sent in each request.
    Raises :class:`UsageError` with one line naming the problem.
    """
    source = Path(path)
    kind = INPUT_FORMATS.get(source.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(INPUT_FORMATS))
        raise UsageError(f"cannot read {str(source)!r}: unknown extension (use one of {known})")
    if not source.is_file():
        raise UsageError(f"input file {str(source)!r} does not exist")
    dtype = dict(dtype or {})
    if kind != "csv" and (dtype or infer_types):
        raise UsageError(
            f"--dtype and --infer-types are for CSV input; {source.name} keeps its own types"
        )
    frame = _read(source, kind, dtype, infer_types)
    if frame.empty:
        raise UsageError(f"input file {str(source)!r} has no rows: there is nothing to submit")
    check_columns(frame, list(dtype), "--dtype")
    if index_col is not None and index_col not in frame.columns:
        raise UsageError(
            f"--index-col {index_col!r} is not a column of {source.name} "
            f"(columns: {column_list(frame)})"
        )
    if dtype:
        keys = frame[index_col].tolist() if index_col is not None else list(range(len(frame)))
        _apply_dtypes(frame, dtype, key=keys.__getitem__)  # a bad cell's row: by its key
    if index_col is not None:
        _set_index(frame, index_col, source)
    return frame


def _read(source: Path, kind: str, dtype: dict[str, str], infer_types: bool) -> pd.DataFrame:
    import pandas as pd

    try:
        if kind == "csv" and infer_types:
            # The dtype columns come as text, to be parsed like in a text read.
            return pd.read_csv(source, dtype={column: str for column in dtype})
        if kind == "csv":
            return pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
        if kind == "parquet":
            return pd.read_parquet(source, dtype_backend="numpy_nullable")
        return pd.read_json(source, lines=True, dtype=False)
    except Exception as exc:  # pandas/pyarrow raise many types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {str(source)!r} as {kind}: {reason}") from exc


def _set_index(frame: pd.DataFrame, index_col: str, source: Path) -> None:
    """Key the rows by ``index_col`` (kept as a column), after checking it can key them."""
    import pandas as pd

    column = frame[index_col]
    empty = [position + 1 for position in range(len(column)) if pd.isna(column.iloc[position])]
    if empty:
        raise UsageError(
            f"--index-col {index_col!r} is empty on row {empty[0]} of {source.name}"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
            + ": every row needs a key"
        )
    repeated = column[column.duplicated(keep=False)]
    if len(repeated):
        value = repeated.iloc[0]
        rows = [position + 1 for position in range(len(column)) if column.iloc[position] == value]
        others = repeated.nunique() - 1
        raise UsageError(
            f"--index-col {index_col!r} must be unique to key the rows: {value!r} is on rows "
            f"{', '.join(map(str, rows))} of {source.name}"
            + (f" ({others} more values repeat)" if others else "")
        )
    # The column stays (it is sent too); the unnamed index avoids pandas' "both an index level
    # and a column label" ambiguity.
    frame.index = pd.Index(column.to_numpy(), dtype=column.dtype)


def column_list(frame: pd.DataFrame, limit: int = 12) -> str:
    """The frame's column names, the first ``limit`` of them."""
    names = [str(c) for c in frame.columns]
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_columns(frame: pd.DataFrame, names: Sequence[str] | None, option: str) -> None:
    """Every name in ``names`` is a column of ``frame``, or a :class:`UsageError` for ``option``."""
    missing = [name for name in names or () if name not in frame.columns]
    if missing:
        raise UsageError(
            f"{option}: no column {', '.join(repr(m) for m in missing)} in the input "
            f"(columns: {column_list(frame)})"
        )


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
    dtype: dict[str, str] = field(default_factory=dict)
    infer_types: bool = False

    def load_frame(self) -> pd.DataFrame:
        """The input frame, read and prepared exactly as ``run`` did."""
        frame = read_input(
            self.input, index_col=self.index_col, dtype=self.dtype, infer_types=self.infer_types
        )
        check_columns(frame, self.columns, "--columns")
        check_columns(frame, self.files, "--files")
        return _resolve_file_columns(frame, self.files, Path(self.input).resolve().parent)

    def save(self, path: Path) -> None:
        """Write the spec to ``path`` (replaced whole, never half-written)."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> JobSpec | None:
        """The spec written at ``path`` (``None`` if there is none)."""
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
        """``batch.counts``, ``COMPLETED`` first."""
        counts = self.batch.counts
        return dict(sorted(counts.items(), key=lambda item: item[0] != "COMPLETED"))

    @property
    def total(self) -> int:
        return sum(self.batch.counts.values())

    @property
    def unfinished(self) -> int:
        """Rows that ``resume`` can still move on: not sent yet, or with a run still going."""
        return sum(n for status, n in self.batch.counts.items() if status not in SETTLED)

    @property
    def refused_by_api(self) -> bool:
        """No row was accepted: the API refused every start (or could not be reached)."""
        return set(self.batch.counts) == {"SUBMISSION_FAILED"}

    @property
    def exit_code(self) -> int:
        if self.refused_by_api:
            return EXIT_API_ERROR
        every_row_completed = set(self.batch.counts) == {"COMPLETED"}
        return EXIT_OK if every_row_completed and not self.timed_out else EXIT_RUNS_NOT_COMPLETED


def make_client(base_url: str | None, api_key: str | None = None, **options: Any) -> Client:
    """The client for a job, after one cheap request proving the key and the URL work.

    A wrong key, a wrong base URL or an unreachable API fails here (exit code 3) instead of
    failing every row. The check lists one recent run: a 401, a 404 (no such path: the base URL
    is wrong) or an answer that is not the API's JSON stops the job; another answer (say 403 for
    a key that may start runs but not list them) lets it go on. ``options``: more
    :class:`Client` arguments.
    """
    from plextera_data.client import API_KEY_ENV, Client
    from plextera_data.retry import RetryPolicy

    if api_key is None and not os.environ.get(API_KEY_ENV):
        raise errors.MissingAPIKeyError(API_KEY_ENV)
    check = Client(
        api_key=api_key,
        base_url=base_url,
        retry=RetryPolicy(max_retries=2, initial_backoff=0.25),
        **options,
    )
    try:
        check.list_runs(size=1)
    except errors.AuthenticationError as exc:
        hint = "" if API_KEY_ENV in str(exc) else f". Check {API_KEY_ENV}"
        raise APIUnavailable(
            f"the API at {check.base_url} refused the key: {sentence(exc)}{hint}"
        ) from exc
    except errors.APIConnectionError as exc:
        raise APIUnavailable(
            f"cannot reach the API at {check.base_url}: {sentence(exc)}. "
            "Check --base-url / PLEXTERA_BASE_URL and the network"
        ) from exc
    except (errors.NotFoundError, errors.MalformedResponseError) as exc:
        raise APIUnavailable(
            f"{check.base_url} does not answer as the Plextera API does ({sentence(exc)}). "
            "Check --base-url / PLEXTERA_BASE_URL: it ends in /api/public/v1, as in "
            "https://api.plextera.com/api/public/v1"
        ) from exc
    except errors.APIError:
        pass
    finally:
        check.close()
    return Client(api_key=api_key, base_url=base_url, **options)


class _OnFirstSnapshot:
    """A progress reporter that calls ``started()`` at the batch's first snapshot, then shows
    snapshots with ``reporter``.

    The first snapshot comes once ``px.submit``'s pre-flight is over: the rows are planned and
    the journal has taken the job. That is when the job file may be written; a rerun that the
    journal refuses (another workflow in the same folder) leaves the previous one in place.
    """

    def __init__(self, reporter: ProgressReporter, started: Callable[[], None]) -> None:
        self.reporter = reporter
        self._started: Callable[[], None] | None = started

    def _start(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            started()

    def update(self, snapshot: Snapshot) -> None:
        self._start()
        self.reporter.update(snapshot)

    def close(self, snapshot: Snapshot) -> None:
        self._start()
        self.reporter.close(snapshot)


@contextmanager
def _removed_if_unused(*folders: Path) -> Iterator[None]:
    """Make ``folders``; if the block fails, remove those of them it made and left empty."""
    made = [folder for folder in folders if not folder.exists()]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in reversed(made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def run_job(
    spec: JobSpec,
    out: Path,
    *,
    client: Client,
    journal: Path,
    concurrency: int,
    timeout: float | None,
    progress: bool | str | ProgressReporter,
    events_port: int | None = None,
) -> Outcome:
    """Submit ``spec``'s rows with a journal, wait, write the tables to ``out``.

    With an existing journal of the same job, rows already sent are not sent again: only the
    rest is submitted, and every run is polled to the end. Bad rows fail in ``px.submit``'s
    pre-flight (:class:`~plextera_data.errors.InvalidInputError`), before anything is sent or
    written. Without ``timeout`` one display follows submission and polling together.
    ``events_port``: receive the runs' events on that loopback port (0: any free one) while the
    job runs, into ``out/events.db``, so that runs finish without polling.
    """
    if events_port is not None:
        with _receiving_events(client, spec.workflow_id, out, events_port) as store:
            return _run_job(spec, out, client, journal, concurrency, timeout, progress, store)
    return _run_job(spec, out, client, journal, concurrency, timeout, progress, None)


@contextmanager
def _receiving_events(
    client: Client, workflow_id: str, out: Path, port: int
) -> Iterator[EventStore]:
    """An event receiver on loopback ``port`` and a subscription of the job's workflow to it,
    for the length of the job (the vendor needs an ``https://`` endpoint: see the events guide
    for a real deployment)."""
    out.mkdir(parents=True, exist_ok=True)
    store = EventStore(out / "events.db")
    secret = secrets.token_urlsafe(24)
    with serve_events(secret, store=store, port=port) as hook:
        subscription = client.create_subscription(
            hook.url + "plextera",
            signing_secret=secret,
            filters={"workflowId": workflow_id},
        )
        try:
            yield store
        finally:
            with suppress(errors.PlexteraError):
                client.delete_subscription(str(subscription.get("id")))


def _run_job(
    spec: JobSpec,
    out: Path,
    client: Client,
    journal: Path,
    concurrency: int,
    timeout: float | None,
    progress: bool | str | ProgressReporter,
    events: EventStore | None,
) -> Outcome:
    import plextera_data as px

    frame = spec.load_frame()
    job_file = job_file_for(journal)
    reporter = _OnFirstSnapshot(
        open_progress(progress, total=len(frame)), lambda: spec.save(job_file)
    )
    with _removed_if_unused(out, journal.parent):
        batch = px.submit(
            frame,
            spec.workflow_id,
            client=client,
            columns=spec.columns,
            files=spec.files or None,
            journal=str(journal),
            concurrency=concurrency,
            progress=reporter,
            wait=timeout is None,
            events=events,
        )
    spec.save(job_file)  # (already written at the first snapshot; a batch may have shown none)
    return _finish(batch, out, journal=journal, timeout=timeout, progress=progress, events=events)


def resume_job(
    journal: Path,
    out: Path,
    *,
    client: Client,
    timeout: float | None,
    progress: bool | str | ProgressReporter,
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
    if timeout is None:
        batch.wait(progress=progress)
    return _finish(batch, out, journal=journal, timeout=timeout, progress=progress)


def _finish(
    batch: Batch,
    out: Path,
    *,
    journal: Path | None,
    timeout: float | None,
    progress: bool | str | ProgressReporter,
    events: EventStore | None = None,
) -> Outcome:
    """Wait out ``timeout`` (if any), then write the tables: what finished, even after a
    timeout."""
    timed_out = False
    if timeout is not None:
        try:
            batch.wait(timeout=timeout, progress=progress, events=events)
        except errors.BatchTimeoutError:
            timed_out = True
    tables = batch.tables()
    out.mkdir(parents=True, exist_ok=True)
    written = tables.to_parquet(out)
    return Outcome(batch, tables, written, journal, timed_out=timed_out)


# --------------------------------------------------------------------------- printing


def _bar(share: float, width: int = 24) -> str:
    filled = round(share * width)
    return "█" * filled + "·" * (width - filled)


def print_summary(outcome: Outcome, out: Path, stream: IO[str]) -> None:
    """Counts per status, why rows did not complete, and where the files went."""
    total = outcome.total
    write = stream.write
    write(f"\n{total} rows of workflow {outcome.batch.workflow_id!r}\n")
    for status, count in outcome.counts.items():
        share = count / total if total else 0.0
        write(f"  {status:<22}{count:>6}  {_bar(share)} {share:6.1%}\n")
    reasons = _failure_reasons(outcome)
    if reasons:
        write("\nWhy rows did not complete\n")
        for (what, reason), count in reasons[:5]:
            write(f"  {count:>5} x {what}: {reason}\n")
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
            write(f"  continue with: {resume_command(outcome.journal, out)}\n")


def resume_command(journal: Path, out: Path) -> str:
    """The command that continues the job recorded in ``journal``."""
    return f"{PROG} resume {journal} --out {out}"


def _failure_reasons(outcome: Outcome) -> list[tuple[tuple[str, str], int]]:
    """``((what, reason), rows)`` for the rows that did not complete, most common first."""
    counts: dict[tuple[str, str], int] = {}
    for row in outcome.batch.rows:
        status = row.status
        if status == "COMPLETED":
            continue
        if status == "NOT_SUBMITTED":
            key = ("not sent", "the job stopped before these rows were sent")
        elif status not in SETTLED:
            key = ("still running", "not finished when the job stopped waiting")
        else:
            reason = row.error
            run = row.run
            if run is not None and run.error is not None:
                reason = run.error.message or run.error.code
            text = _REQUEST_SUFFIX.sub("", (reason or "no error message").splitlines()[0])
            key = (status, text)
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
