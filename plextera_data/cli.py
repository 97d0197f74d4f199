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
import ipaddress
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from plextera_data import errors
from plextera_data._version import __version__
from plextera_data.jobs import (
    DEFAULT_JOURNAL_NAME,
    DTYPES,
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNS_NOT_COMPLETED,
    EXIT_USAGE,
    PROG,
    APIUnavailable,
    JobSpec,
    UsageError,
    job_file_for,
    make_client,
    parse_dtypes,
    print_summary,
    read_input,
    resume_command,
    resume_job,
    run_job,
)

__all__ = [
    "DEFAULT_JOURNAL_NAME",
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNS_NOT_COMPLETED",
    "EXIT_USAGE",
    "JobSpec",
    "UsageError",
    "job_file_for",
    "main",
    "read_input",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line naming the problem and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


class _PipeSafe:
    """Standard output that a closed pipe (``plextera-data run ... | head``) does not break.

    Unix tools stop writing quietly when the reader goes away: the first write that finds the
    pipe closed points the stream at ``/dev/null`` (so that the interpreter's last flush does
    not fail either) and the job goes on to its own exit code.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def _gone(self) -> None:
        self.closed_by_reader = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a real file (a test's buffer)
            pass

    def write(self, text: str) -> int:
        if self.closed_by_reader:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        if self.closed_by_reader:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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
    if not args.workflow.strip():
        raise UsageError("WORKFLOW is empty: give the workflow's id, such as 'incoming-claim'")
    spec = JobSpec(
        workflow_id=args.workflow,
        input=args.input,
        columns=_split_names(args.columns),
        files=_split_names(args.files) or [],
        index_col=args.index_col,
        dtype=parse_dtypes(args.dtype),
        infer_types=args.infer_types,
    )
    out = Path(args.out)
    journal = Path(args.journal) if args.journal else out / DEFAULT_JOURNAL_NAME
    spec.load_frame()  # an unreadable file or a wrong column name fails before any request
    spec.input = str(Path(args.input).resolve())  # recorded for `resume`, from any folder
    client = make_client(args.base_url)
    with _interrupt_note(journal, out):
        outcome = run_job(
            spec,
            out,
            client=client,
            journal=journal,
            concurrency=args.concurrency,
            timeout=args.timeout,
            progress=not args.no_progress,
            events_port=args.events_port,
        )
    print_summary(outcome, out, stdout)
    return outcome.exit_code


def _command_resume(args: argparse.Namespace, stdout: IO[str]) -> int:
    journal = Path(args.journal)
    out = Path(args.out)
    if not journal.is_file():
        raise UsageError(f"journal {str(journal)!r} does not exist")
    client = make_client(args.base_url)
    with _interrupt_note(journal, out):
        outcome = resume_job(
            journal, out, client=client, timeout=args.timeout, progress=not args.no_progress
        )
    print_summary(outcome, out, stdout)
    return outcome.exit_code


def _command_demo(args: argparse.Namespace, stdout: IO[str]) -> int:
    from plextera_data.demo import run_demo

    try:
        return run_demo(
            Path(args.out),
            speed=args.speed,
            seed=args.seed,
            progress=not args.no_progress,
            stdout=stdout,
        )
    except ImportError as exc:  # the demo serves the simulator, an extra
        raise UsageError(
            f'the demo needs the simulator: pip install "plextera-data[simulator]" ({exc})'
        ) from exc


def client_url(server_url: str) -> str:
    """The base URL a client on this machine uses for a server at ``server_url``.

    A server on every interface (``0.0.0.0``, ``::``) is reached through loopback, the one
    place the client speaks plain ``http://`` to; other addresses are kept.
    """
    parts = urlsplit(server_url)
    try:
        address = ipaddress.ip_address(parts.hostname or "")
    except ValueError:  # a name, such as localhost
        return server_url
    if not address.is_unspecified:
        return server_url
    local = "[::1]" if address.version == 6 else "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{local}:{parts.port}"))


def _serving_note(url: str) -> str:
    """What to add when the client cannot use ``url`` as it is (plain http, not loopback)."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return ""
    return (
        "  (the client speaks plain http:// only to loopback: serve on 0.0.0.0 and use "
        "127.0.0.1 here, or put TLS in front for other machines)\n"
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
    # Ctrl-C and SIGTERM both stop it, also where the process started with SIGINT ignored (a
    # background job of a non-interactive shell): "Press Ctrl-C to stop" must hold.
    previous = {
        number: signal.signal(number, lambda *_: stop.set())
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.start()
        url = client_url(server.base_url)
        where = "" if url == server.base_url else f" (listening on {args.host})"
        stdout.write(
            f"Plextera simulator serving at {url}{where}\n"
            f"  seed {args.seed}, speed {args.speed:g}x"
            + (f", faults {args.faults}" if args.faults else "")
            + "\n\nPoint the library (or the command line) at it:\n"
            f"  export PLEXTERA_BASE_URL={url}\n"
            f"  export PLEXTERA_API_KEY={server.api_key}\n"
            + _serving_note(url)
            + "\nPress Ctrl-C to stop.\n"
        )
        stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.stop()
    stdout.write("Simulator stopped.\n")
    return EXIT_OK


class _interrupt_note:
    """On Ctrl-C, say how to continue with this command (the journal keeps what was done)."""

    def __init__(self, journal: Path, out: Path) -> None:
        self.journal = journal
        self.out = out

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            sys.stderr.write(
                f"\n{PROG}: interrupted. The journal {self.journal} keeps every accepted run; "
                f"continue with: {resume_command(self.journal, self.out)}\n"
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
  plextera-data run incoming-claim claims.csv --out out/ --dtype amountClaimed=float

Each row becomes one run: its columns form the JSON body (a dotted name such as
document.fileId nests). Data is sent as written: a CSV's cells are text ("007" stays "007",
"NA" stays "NA"); an empty cell is null. --dtype COLUMN=TYPE,... parses columns (TYPE: {types});
--infer-types lets pandas guess every column's type instead. Parquet and JSON Lines keep
their own types. With --files, those columns hold file paths (relative to the input file's
folder) and each start is a multipart upload. The tables runs, steps and outputs are written
to OUT as parquet; the journal (default OUT/journal.plextera.db) records every accepted run,
so an interrupted job continues with `plextera-data resume`.
""".format(types=", ".join(DTYPES))

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
    for add in (_add_run, _add_resume, _add_demo, _add_simulator):
        add(commands, formatter)
    return parser


def _add_run(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """``plextera-data run``: a workflow over every row of a file."""
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
    run.add_argument(
        "--events-port", type=_port, metavar="PORT",
        help="receive the runs' events on this loopback port (0: any) into OUT/events.db and "
        "subscribe the workflow to it, so runs finish without polling (the simulator accepts "
        "http:// on loopback; see the events guide for a real deployment)",
    )  # fmt: skip
    run.add_argument(
        "--dtype", metavar="COL=TYPE,...",
        help=f"parse CSV columns as a type ({', '.join(DTYPES)}); default: text as written",
    )  # fmt: skip
    run.add_argument(
        "--infer-types", action="store_true",
        help="let pandas guess the CSV's column types (leading zeros and 'NA' are lost)",
    )  # fmt: skip
    _add_common(run)


def _add_resume(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """``plextera-data resume``: an interrupted job, from its journal."""
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


def _add_demo(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """``plextera-data demo``: the shipped sample against the embedded simulator."""
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


def _add_simulator(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """``plextera-data simulator``: serve the simulator until Ctrl-C."""
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
    stdout = _PipeSafe(sys.stdout)
    try:
        return _COMMANDS[args.command](args, stdout)  # type: ignore[arg-type]
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
    finally:
        stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
