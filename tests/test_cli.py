"""The ``plextera-data`` command line, against a simulator served on loopback.

Most tests call ``main([...])`` in-process; a few run the installed console script as a real
process (one of them is killed mid-job and finished with ``resume``). The simulator's request
accounting proves that no row ever created two runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data import cli, jobs
from plextera_data.demo import load_sample, sample_path
from plextera_data.simulator import Fault, Simulator, SimulatorServer

SPEED = 500.0  # simulated seconds per wall second: a lab run (4-16 s) takes a few ms
DEADLINE = 60.0  # upper bound for waiting on a condition (never reached when things work)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(seed=11, speed=SPEED)


@pytest.fixture
def served(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    with simulator.serve() as server:
        monkeypatch.setenv("PLEXTERA_BASE_URL", server.base_url)
        monkeypatch.setenv("PLEXTERA_API_KEY", server.api_key)
        yield server


@pytest.fixture
def labs_csv(tmp_path: Path) -> Path:
    """20 lab results (daily-lab-loader completes every run)."""
    path = tmp_path / "labs.csv"
    frame = pd.read_csv(sample_path("lab-results.csv")).head(20)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def claims_csv(tmp_path: Path) -> Path:
    """10 claims, of which one has no document and one an unserved state (two runs fail)."""
    frame = pd.read_csv(sample_path("claims.csv"))
    no_document = frame[frame["document.fileId"].isna()].head(1)
    unserved = frame[frame["state"].isin(["ON", "PR", "QC", "GU"])].head(1)
    fine = frame[frame["document.fileId"].notna() & frame["state"].isin(["CT", "NY"])].head(8)
    path = tmp_path / "claims.csv"
    pd.concat([fine, no_document, unserved]).to_csv(path, index=False)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def created_inputs(simulator: Simulator, workflow_id: str) -> list[dict[str, object]]:
    return [run_input for _, run_input in simulator.created_runs(workflow_id)]


def sent_by(simulator: Simulator, column: str) -> list[dict[str, object]]:
    """The bodies daily-lab-loader received, in the order of their ``column``."""
    return sorted(created_inputs(simulator, "daily-lab-loader"), key=lambda i: str(i[column]))


def console_script() -> list[str]:
    """The installed ``plextera-data`` script (beside this interpreter), as a real process."""
    script = shutil.which("plextera-data", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is not installed: pip install -e ."
    return [script]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait for ``condition`` with a deadline (checking every few milliseconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# --------------------------------------------------------------------------- full runs


def test_run_csv_submits_every_row_and_writes_three_tables(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        ["run", "daily-lab-loader", str(labs_csv), "--out", str(out), "--no-progress"], capsys
    )
    assert code == cli.EXIT_OK, stderr
    tables = px.Tables.read_parquet(out)
    assert len(tables.runs) == 20
    assert set(tables.runs["status"]) == {"COMPLETED"}
    assert sorted(tables.runs["row_key"].astype(int)) == list(range(20))  # the CSV's row numbers
    assert len(tables.outputs) > 0
    assert simulator.stats.posts["daily-lab-loader"] == 20
    sent = created_inputs(simulator, "daily-lab-loader")
    assert sorted(i["sampleId"] for i in sent) == [f"S-{n:05d}" for n in range(1, 21)]
    assert sent[0]["document"] == {"fileId": sent[0]["document"]["fileId"]}  # dotted name nests
    assert "COMPLETED" in stdout
    for name in ("runs.parquet", "steps.parquet", "outputs.parquet"):
        assert name in stdout
    assert (out / cli.DEFAULT_JOURNAL_NAME).is_file()


def test_run_parquet_input_with_index_and_columns(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "labs.parquet"
    pd.read_csv(labs_csv).head(8).to_parquet(source)
    out = tmp_path / "out"
    argv = ["run", "daily-lab-loader", str(source), "--out", str(out), "--no-progress"]
    argv += ["--index-col", "sampleId", "--columns", "customerId,document.fileId"]
    code, _, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_OK, stderr
    sent = created_inputs(simulator, "daily-lab-loader")
    assert len(sent) == 8
    assert all(set(i) == {"customerId", "document"} for i in sent)  # only the chosen columns
    tables = px.Tables.read_parquet(out)
    assert sorted(tables.runs["row_key"]) == [f"S-{n:05d}" for n in range(1, 9)]


def test_run_jsonl_input(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "claims.jsonl"
    first, second = load_sample("claims")["document.fileId"][:2]  # files the workspace holds
    rows = [
        {"claimId": "claim-1", "state": "CT", "document": {"fileId": first}, "tags": ["a"]},
        {"claimId": "claim-2", "state": "NY", "document": {"fileId": second}, "tags": []},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = ["run", "incoming-claim", str(source), "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, stderr = run_cli([*argv, "--index-col", "claimId"], capsys)
    assert code == cli.EXIT_OK, stderr
    assert sorted(created_inputs(simulator, "incoming-claim"), key=str) == rows  # JSON as is


def test_failed_runs_exit_1_and_the_summary_says_why(
    served: SimulatorServer,
    simulator: Simulator,
    claims_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = ["run", "incoming-claim", str(claims_csv), "--out", str(out), "--no-progress"]
    code, stdout, _ = run_cli([*argv, "--index-col", "claimId"], capsys)
    assert code == cli.EXIT_RUNS_NOT_COMPLETED
    runs = px.Tables.read_parquet(out).runs
    assert Counter(runs.loc[runs["depth"] == 0, "status"]) == {"COMPLETED": 8, "FAILED": 2}
    assert "FAILED" in stdout
    assert "The document could not be processed by Document Insights." in stdout
    assert "Client endpoint rejected the request." in stdout
    assert "continue with" not in stdout  # failed runs are final: nothing to resume
    assert simulator.stats.total_posts == 10


def test_files_columns_upload_multipart_relative_to_the_input(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "intake"
    folder.mkdir()
    shutil.copy(sample_path("claims-with-documents.csv"), folder / "claims.csv")
    shutil.copytree(sample_path("claim-documents"), folder / "claim-documents")
    argv = ["run", "incoming-claim", str(folder / "claims.csv"), "--files", "document"]
    argv += ["--out", str(tmp_path / "out"), "--index-col", "claimId", "--no-progress"]
    code, _, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_RUNS_NOT_COMPLETED, stderr  # the Ontario claim is not routed
    sent = created_inputs(simulator, "incoming-claim")
    assert len(sent) == 6
    documents = [i["document"] for i in sent]
    assert all(isinstance(d, list) and len(d) == 1 for d in documents)  # file-node arrays
    runs = px.Tables.read_parquet(tmp_path / "out").runs
    statuses = dict(zip(runs["row_key"], runs["status"], strict=True))
    assert statuses.pop("claim-9006") == "FAILED"
    assert set(statuses.values()) == {"COMPLETED"}


def test_console_script_runs_in_a_real_process(
    served: SimulatorServer, simulator: Simulator, labs_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [*console_script(), "run", "daily-lab-loader", str(labs_csv), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert "Tables written to" in result.stdout
    assert simulator.stats.posts["daily-lab-loader"] == 20
    assert len(px.Tables.read_parquet(out).runs) == 20


# --------------------------------------------------------------------------- interrupted jobs


def _start_slow_job(
    served: SimulatorServer, simulator: Simulator, tmp_path: Path, rows: int = 40
) -> tuple[subprocess.Popen[str], Path, Path]:
    """A job in a real process whose starts each take a moment (a slow-answer fault)."""
    source = tmp_path / "labs.csv"
    pd.read_csv(sample_path("lab-results.csv")).head(rows).to_csv(source, index=False)
    simulator.set_faults([Fault("slow", method="POST", delay=0.05)])
    out = tmp_path / "out"
    argv = [*console_script(), "run", "daily-lab-loader", str(source), "--out", str(out)]
    argv += ["--index-col", "sampleId", "--concurrency", "2", "--no-progress"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    return process, source, out


def test_killed_job_finishes_with_resume_and_no_duplicate_runs(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, _, out = _start_slow_job(served, simulator, tmp_path)
    try:
        wait_until(lambda: simulator.stats.total_posts >= 10, "10 runs created by the job")
    finally:
        process.kill()  # SIGKILL: no cleanup, no final commit
        process.communicate(timeout=30)
    created_before = simulator.stats.total_posts
    assert 10 <= created_before < 40

    simulator.set_faults([])
    journal = out / cli.DEFAULT_JOURNAL_NAME
    code, _, stderr = run_cli(["resume", str(journal), "--out", str(out), "--no-progress"], capsys)

    sent = Counter(i["sampleId"] for i in created_inputs(simulator, "daily-lab-loader"))
    assert max(sent.values()) == 1, "a row created two runs"
    batch = px.resume(str(journal))
    statuses = Counter(row.status for row in batch.rows)
    # A start in flight at the kill is "uncertain" (its run may exist): never re-sent.
    uncertain = statuses.pop("SUBMISSION_UNCERTAIN", 0)
    assert uncertain <= 2  # at most the two starts in flight (--concurrency 2)
    assert statuses == {"COMPLETED": 40 - uncertain}
    completed = {row.key for row in batch.rows if row.status == "COMPLETED"}
    assert completed <= set(sent) <= {f"S-{n:05d}" for n in range(1, 41)}
    # Each uncertain start may or may not have created its run before the kill.
    assert 40 - uncertain <= len(sent) <= 40
    assert code == (cli.EXIT_OK if uncertain == 0 else cli.EXIT_RUNS_NOT_COMPLETED), stderr
    assert len(px.Tables.read_parquet(out).runs) == 40 - uncertain


def test_interrupt_exits_130_and_says_how_to_resume(
    served: SimulatorServer, simulator: Simulator, tmp_path: Path
) -> None:
    process, _, out = _start_slow_job(served, simulator, tmp_path)
    try:
        wait_until(lambda: simulator.stats.total_posts >= 4, "4 runs created by the job")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert "interrupted" in stderr
    assert f"plextera-data resume {out / cli.DEFAULT_JOURNAL_NAME} --out {out}" in stderr
    assert "batch.wait()" not in stderr  # the CLI's advice only, not the library's
    assert "px.resume(" not in stderr
    assert "Traceback" not in stderr
    # The command line's own way on, not the library's Python instructions.
    for python in ("batch.wait()", "px.resume(", "px.submit("):
        assert python not in stderr


# --------------------------------------------------------------------------- API errors: 3


def test_missing_key_exits_3(
    labs_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("PLEXTERA_API_KEY", raising=False)
    code, _, stderr = run_cli(
        ["run", "daily-lab-loader", str(labs_csv), "--out", str(tmp_path / "o")], capsys
    )
    assert code == cli.EXIT_API_ERROR
    assert "PLEXTERA_API_KEY" in stderr
    assert not (tmp_path / "o").exists()  # nothing was created


def test_wrong_key_exits_3(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PLEXTERA_API_KEY", "sk_wrong_key")
    argv = ["run", "daily-lab-loader", str(labs_csv), "--out", str(tmp_path / "o")]
    code, stdout, stderr = run_cli([*argv, "--no-progress"], capsys)
    assert code == cli.EXIT_API_ERROR, stdout + stderr
    assert "401" in stderr
    assert "sk_wrong_key" not in stderr + stdout
    assert simulator.stats.total_posts == 0
    assert ".." not in stderr  # was "in this workspace.. Check"
    assert stderr.count("PLEXTERA_API_KEY") == 1  # was said twice


def test_unreachable_api_exits_3(
    labs_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    closed = Simulator().serve()  # bound, never started: nothing answers on this port
    port = closed.port
    closed.stop()
    monkeypatch.setenv("PLEXTERA_API_KEY", "sk_sim_local")
    argv = ["run", "daily-lab-loader", str(labs_csv), "--out", str(tmp_path / "o")]
    argv += ["--base-url", f"http://127.0.0.1:{port}/api/public/v1", "--no-progress"]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_API_ERROR, stdout + stderr
    assert "127.0.0.1" in stderr


# --------------------------------------------------------------------------- bad arguments: 2


def _bad_input_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "garbage.parquet": b"this is not parquet",
        "empty.csv": b"claimId,state\n",
        "broken.jsonl": b'{"claimId": "claim-1"}\n{not json\n',
        "claims.csv": b"claimId,state,document\nclaim-1,CT,missing.pdf\nclaim-1,NY,\n",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    return paths


BAD_ARGUMENTS = [
    (["run"], "the following arguments are required: WORKFLOW, INPUT, --out"),
    (["run", "wf", "{claims.csv}"], "the following arguments are required: --out"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "wf", "{tmp}/nope.csv", "--out", "{tmp}/o"], "input file '{tmp}/nope.csv' does not"),
    (["run", "wf", "{tmp}/in.xlsx", "--out", "{tmp}/o"], "unknown extension (use one of .csv"),
    (["run", "wf", "{garbage.parquet}", "--out", "{tmp}/o"], "as parquet:"),
    (["run", "wf", "{empty.csv}", "--out", "{tmp}/o"], "has no rows"),
    (["run", "wf", "{broken.jsonl}", "--out", "{tmp}/o"], "as jsonl:"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--concurrency", "0"], "must be at least 1"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--concurrency", "x"], "expected a whole number"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--timeout", "-5"], "must be more than 0"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--columns", "nope"], "--columns: no column 'no"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--files", "doc"], "--files: no column 'doc'"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--index-col", "id"], "--index-col 'id' is not"),
    (["run", " ", "{claims.csv}", "--out", "o"], "WORKFLOW is empty"),
    (
        ["run", "wf", "{claims.csv}", "--out", "o", "--index-col", "claimId"],
        "'claim-1' is on rows 1",
    ),
    (["run", "wf", "{claims.csv}", "--out", "o", "--dtype", "state"], "--dtype: 'state' is not C"),
    (
        ["run", "wf", "{claims.csv}", "--out", "o", "--dtype", "nope=int"],
        "--dtype: no column 'nope",
    ),
    (["run", "wf", "{claims.csv}", "--out", "o", "--dtype", "state=int"], "row 0, column 'state'"),
    (["run", "wf", "{broken.jsonl}", "--out", "o", "--infer-types"], "are for CSV input"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--base-url", "http://example.com/v1"], "http"),
    (["resume", "{tmp}/nope.plextera.db", "--out", "o"], "journal '{tmp}/nope.plextera.db' does"),
    (["simulator", "--port", "99999"], "must be between 0 and 65535"),
    (["simulator", "--faults", "bogus"], "--faults: bad fault 'bogus'"),
    (["demo", "--speed", "0"], "must be more than 0"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLEXTERA_API_KEY", "sk_sim_local")
    monkeypatch.setenv("PLEXTERA_BASE_URL", "http://127.0.0.1:9/api/public/v1")  # never reached
    names = {f"{{{name}}}": str(path) for name, path in _bad_input_files(tmp_path).items()}
    names["{tmp}"] = str(tmp_path)

    def fill(text: str) -> str:
        for placeholder, value in names.items():
            text = text.replace(placeholder, value)
        return text

    code, stdout, stderr = run_cli([fill(a) for a in argv], capsys)
    assert code == cli.EXIT_USAGE
    assert fill(message) in stderr
    assert stderr.startswith("plextera-data")
    assert "Traceback" not in stderr
    assert stdout == ""
    if "=int" not in argv[-1]:  # a bad cell's error lists the cells, one per line
        assert stderr.count("\n") == 1, f"not one line: {stderr!r}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run_cli([], capsys)
    assert code == cli.EXIT_USAGE
    assert "usage: plextera-data" in stderr


@pytest.mark.parametrize("command", [[], ["run"], ["resume"], ["demo"], ["simulator"]])
def test_every_help_shows_an_example(command: list[str], capsys) -> None:
    code, stdout, _ = run_cli([*command, "--help"], capsys)
    assert code == cli.EXIT_OK
    assert "example" in stdout
    assert "plextera-data " + (command[0] if command else "") in stdout.split("example", 1)[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run_cli(["--version"], capsys)
    assert code == cli.EXIT_OK
    assert stdout.strip() == f"plextera-data {px.__version__}"


# --------------------------------------------------------------------------- demo, simulator


def test_demo_runs_the_sample_and_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLEXTERA_API_KEY", raising=False)
    monkeypatch.setenv("PLEXTERA_BASE_URL", "https://api.plextera.com/api/public/v1")  # ignored
    code, stdout, stderr = run_cli(["demo", "--no-progress"], capsys)
    assert code == cli.EXIT_OK, stderr
    out = tmp_path / "plextera-demo-output"
    assert f"Tables written to {out.name}/" in stdout
    tables = px.Tables.read_parquet(out)
    claims = load_sample("claims")
    assert sorted(tables.runs.loc[tables.runs["depth"] == 0, "row_key"]) == sorted(claims.index)
    failed = tables.runs[tables.runs["status"] == "FAILED"]
    assert 0 < len(failed) < len(claims) // 5  # the few bad claims of the sample
    assert "A peek at the outputs" in stdout
    assert "claims-ct" in stdout or "claims-ny" in stdout  # routed queues shown in the peek
    # The closing hint names a file that exists, and the options the demo used.
    hint = stdout.split("Same job against the real API:\n", 1)[1].split()
    assert hint[hint.index("run") + 1] == "incoming-claim"
    assert Path(hint[hint.index("run") + 2]).is_file()
    assert hint[hint.index("--index-col") + 1] == "claimId"
    assert "--dtype" in hint

    # Run again: the previous demo's journal is replaced, not resumed against a new simulator.
    code, stdout, stderr = run_cli(["demo", "--no-progress", "--out", str(out)], capsys)
    assert code == cli.EXIT_OK, stderr
    assert len(px.Tables.read_parquet(out).runs) == len(tables.runs)


@contextmanager
def simulator_command(*options: str) -> Iterator[tuple[str, list[str], str]]:
    """``plextera-data simulator OPTIONS`` in a real process: its first line, the next five and
    the base URL it exports; stopped with Ctrl-C at the end (which must exit 0, quietly)."""
    process = subprocess.Popen(
        [*console_script(), "simulator", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the server is up
        lines = [process.stdout.readline() for _ in range(5)]
        (export,) = [line for line in lines if "PLEXTERA_BASE_URL=" in line]
        yield first, lines, export.split("=", 1)[1].strip()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == cli.EXIT_OK, stderr
    assert "Simulator stopped." in stdout
    assert "Traceback" not in stderr


def assert_the_client_works_with(base_url: str) -> str:
    client = px.Client(api_key="sk_sim_local", base_url=base_url)
    run = client.start_run("daily-lab-loader", json={"customerId": "customer-1"})
    assert client.get_run(run.id).id == run.id
    client.close()
    return run.id


def test_simulator_command_serves_until_interrupted() -> None:
    import httpx

    with simulator_command("--seed", "3", "--speed", "50") as (first, lines, base_url):
        assert first == f"Plextera simulator serving at {base_url}\n"
        assert base_url.startswith("http://127.0.0.1:")
        assert "  export PLEXTERA_API_KEY=sk_sim_local\n" in lines
        run_id = assert_the_client_works_with(base_url)
        assert httpx.get(f"{base_url}/workflow-runs/{run_id}").status_code == 401  # no key


def test_simulator_on_every_interface_prints_a_url_the_client_accepts() -> None:
    with simulator_command("--host", "0.0.0.0", "--speed", "50") as (first, _, base_url):
        assert "(listening on 0.0.0.0)" in first
        assert base_url.startswith("http://127.0.0.1:")  # not http://0.0.0.0:..., refused
        assert_the_client_works_with(base_url)


@pytest.mark.parametrize(
    ("server_url", "wanted"),
    [
        ("http://0.0.0.0:8765/api/public/v1", "http://127.0.0.1:8765/api/public/v1"),
        ("http://[::]:8765/api/public/v1", "http://[::1]:8765/api/public/v1"),
        ("http://127.0.0.1:8765/api/public/v1", "http://127.0.0.1:8765/api/public/v1"),
        ("http://localhost:8765/api/public/v1", "http://localhost:8765/api/public/v1"),
    ],
)
def test_client_url_of_a_server(server_url: str, wanted: str) -> None:
    assert cli.client_url(server_url) == wanted
    px.Client(api_key="sk_sim_local", base_url=wanted).close()  # the client takes it


# --------------------------------------------------------------------------- data as given


def test_csv_cells_arrive_as_written(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "patients.csv"
    source.write_text(
        "patientId,zip,result,note,amount\n007,02134,NA,,1.50\n012,10001,positive,seen twice,2\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    argv = ["run", "daily-lab-loader", str(source), "--out", str(out), "--no-progress"]
    code, _, stderr = run_cli([*argv, "--index-col", "patientId"], capsys)
    assert code == cli.EXIT_OK, stderr
    sent = sent_by(simulator, "patientId")
    assert sent == [
        # 007 is not 7, 02134 not 2134, "NA" not null; the empty cell is the one null.
        {"patientId": "007", "zip": "02134", "result": "NA", "note": None, "amount": "1.50"},
        {"patientId": "012", "zip": "10001", "result": "positive", "note": "seen twice",
         "amount": "2"},
    ]  # fmt: skip
    runs = px.Tables.read_parquet(out).runs
    assert sorted(runs["row_key"]) == ["007", "012"]  # the keys join back to the file's text


def test_dtype_parses_the_named_columns_only(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "patients.csv"
    source.write_text(
        'patientId,zip,visits,amount,insured,tags\n007,02134,3,1.50,yes,"[""a""]"\n'
        "012,10001,,2,false,\n",
        encoding="utf-8",
    )
    argv = ["run", "daily-lab-loader", str(source), "--out", str(tmp_path / "out")]
    argv += ["--no-progress", "--dtype", "visits=int,amount=float,insured=bool,tags=json"]
    code, _, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_OK, stderr
    sent = sent_by(simulator, "patientId")
    assert sent == [
        {"patientId": "007", "zip": "02134", "visits": 3, "amount": 1.5, "insured": True,
         "tags": ["a"]},
        {"patientId": "012", "zip": "10001", "visits": None, "amount": 2.0, "insured": False,
         "tags": None},
    ]  # fmt: skip


def test_a_cell_not_of_its_type_names_row_and_column_before_any_request(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "claims.csv"
    source.write_text("claimId,amount\nc-1,12.5\nc-2,twelve\nc-3,3\n", encoding="utf-8")
    argv = ["run", "daily-lab-loader", str(source), "--out", str(tmp_path / "out")]
    argv += ["--index-col", "claimId", "--dtype", "amount=float", "--no-progress"]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_USAGE
    assert "row 'c-2', column 'amount': 'twelve' is not" in stderr
    assert simulator.stats.total_posts == 0
    assert not (tmp_path / "out").exists()
    assert stdout == ""


def test_infer_types_lets_pandas_guess(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "patients.csv"
    source.write_text("patientId,zip,result\n007,02134,NA\n", encoding="utf-8")
    argv = ["run", "daily-lab-loader", str(source), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli([*argv, "--infer-types", "--no-progress"], capsys)
    assert code == cli.EXIT_OK, stderr
    (sent,) = created_inputs(simulator, "daily-lab-loader")
    assert sent == {"patientId": 7, "zip": 2134, "result": None}  # what was asked for


def test_parquet_keeps_its_types(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "rows.parquet"
    table = pa.table(
        {
            "id": pa.array(["007", "012"]),
            "visits": pa.array([3, None], type=pa.int64()),  # pandas' default: 3.0 and NaN
            "big": pa.array([2**60 + 1, 5], type=pa.int64()),
            "insured": pa.array([True, None]),
            "amount": pa.array([1.5, 2.0]),
        }
    )
    pq.write_table(table, source)
    argv = ["run", "daily-lab-loader", str(source), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli([*argv, "--index-col", "id", "--no-progress"], capsys)
    assert code == cli.EXIT_OK, stderr
    sent = sent_by(simulator, "id")
    assert sent == [
        {"id": "007", "visits": 3, "big": 2**60 + 1, "insured": True, "amount": 1.5},
        {"id": "012", "visits": None, "big": 5, "insured": None, "amount": 2.0},
    ]
    assert isinstance(sent[0]["visits"], int)


def test_a_missing_file_is_a_bad_row_found_by_the_pre_flight(
    served: SimulatorServer,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The command line does not plan the rows itself (hashing every file) before px.submit
    # plans them again: px.submit's pre-flight names the bad row, exit code 2.
    import importlib

    from plextera_data import rows

    batch = importlib.import_module("plextera_data.batch")  # PlanOptions.requests plans
    plans: list[int] = []
    real = rows.plan_requests

    def counted(*args: object, **kwargs: object) -> object:
        plans.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rows, "plan_requests", counted)
    monkeypatch.setattr(batch, "plan_requests", counted)
    source = tmp_path / "claims.csv"
    source.write_text("claimId,state,document\nclaim-1,CT,missing.pdf\n", encoding="utf-8")
    argv = ["run", "incoming-claim", str(source), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli([*argv, "--files", "document", "--index-col", "claimId"], capsys)
    assert code == cli.EXIT_USAGE
    assert "row 'claim-1', column 'document'" in stderr
    assert "missing.pdf" in stderr
    assert plans == [1]
    assert simulator.stats.total_posts == 0
    assert not (tmp_path / "out").exists()  # nothing written for a job that did not start


def test_a_column_clash_names_the_columns_not_row_none(
    served: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "claims.csv"
    source.write_text("claimId,document,document.fileId\nc-1,x,file_1\n", encoding="utf-8")
    argv = ["run", "incoming-claim", str(source), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli([*argv, "--no-progress"], capsys)
    assert code == cli.EXIT_USAGE
    assert "Column names clash" in stderr
    assert "column 'document" in stderr
    assert "row None" not in stderr


# --------------------------------------------------------------------------- the job file


def test_a_refused_rerun_keeps_the_job_file_and_resume_works(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    claims_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    journal = out / cli.DEFAULT_JOURNAL_NAME
    first = ["run", "daily-lab-loader", str(labs_csv), "--out", str(out), "--no-progress"]
    code, _, stderr = run_cli(first, capsys)
    assert code == cli.EXIT_OK, stderr
    job_file = cli.job_file_for(journal)
    written = job_file.read_text()
    # Another workflow into the same folder: the journal refuses it before anything is sent.
    other = ["run", "incoming-claim", str(claims_csv), "--out", str(out), "--no-progress"]
    code, _, stderr = run_cli(other, capsys)
    assert code == cli.EXIT_USAGE
    assert "daily-lab-loader" in stderr
    assert job_file.read_text() == written  # the job file still describes the journal's job
    assert simulator.stats.posts.get("incoming-claim", 0) == 0
    code, stdout, stderr = run_cli(["resume", str(journal), "--out", str(out)], capsys)
    assert code == cli.EXIT_OK, stderr
    assert "20 rows of workflow 'daily-lab-loader'" in stdout
    assert simulator.stats.posts["daily-lab-loader"] == 20  # nothing sent twice


def test_the_summary_says_runs_were_still_running_after_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "labs.csv"
    pd.read_csv(sample_path("lab-results.csv"), dtype=str).head(5).to_csv(source, index=False)
    with Simulator(seed=1, speed=0.01).serve() as server:  # runs take hours of wall time
        monkeypatch.setenv("PLEXTERA_BASE_URL", server.base_url)
        monkeypatch.setenv("PLEXTERA_API_KEY", server.api_key)
        argv = ["run", "daily-lab-loader", str(source), "--out", str(tmp_path / "out")]
        code, stdout, _ = run_cli([*argv, "--timeout", "0.5", "--no-progress"], capsys)
    assert code == cli.EXIT_RUNS_NOT_COMPLETED
    assert "5 x still running: not finished when the job stopped waiting" in stdout
    assert "PROCESSING: no error message" not in stdout
    assert "continue with: plextera-data resume" in stdout


def test_outcome_counts_are_the_batchs(
    served: SimulatorServer, claims_csv: Path, tmp_path: Path
) -> None:
    spec = cli.JobSpec(workflow_id="incoming-claim", input=str(claims_csv), index_col="claimId")
    out = tmp_path / "out"
    outcome = jobs.run_job(
        spec,
        out,
        client=jobs.make_client(None),
        journal=out / cli.DEFAULT_JOURNAL_NAME,
        concurrency=4,
        timeout=None,
        progress=False,
    )
    assert outcome.counts == {"COMPLETED": 8, "FAILED": 2}
    assert list(outcome.counts) == ["COMPLETED", "FAILED"]  # completed first, for the summary
    assert dict(outcome.counts) == dict(outcome.batch.counts)


# --------------------------------------------------------------------------- pipes, modules


def test_a_closed_pipe_is_quiet_and_keeps_the_exit_code(
    served: SimulatorServer, simulator: Simulator, labs_csv: Path, tmp_path: Path
) -> None:
    # `plextera-data run ... | head`: the reader went away; the job still did its work.
    process = subprocess.Popen(
        [*console_script(), "run", "daily-lab-loader", str(labs_csv), "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert process.stdout is not None
    process.stdout.close()  # before the summary is written: every write finds the pipe closed
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_OK, stderr
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    assert simulator.stats.posts["daily-lab-loader"] == 20
    assert len(px.Tables.read_parquet(tmp_path).runs) == 20


def test_the_job_runner_imports_neither_the_command_line_nor_the_demo() -> None:
    import ast

    def imported(module: object) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    from plextera_data import demo

    assert not imported(jobs) & {"plextera_data.cli", "plextera_data.demo"}
    assert "plextera_data.cli" not in imported(demo)  # demo and cli share jobs, not each other
    assert "plextera_data.jobs" in imported(demo) & imported(cli)


def test_a_wrong_base_path_is_caught_before_any_start(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = served.base_url.replace("/api/public/v1", "/api/v1")
    argv = ["run", "daily-lab-loader", str(labs_csv), "--out", str(tmp_path / "o")]
    code, _, stderr = run_cli([*argv, "--no-progress", "--base-url", wrong], capsys)
    assert code == cli.EXIT_API_ERROR
    assert "does not answer as the Plextera API does" in stderr
    assert "/api/public/v1" in stderr
    assert simulator.stats.post_attempts["daily-lab-loader"] == 0


def test_a_wrong_workflow_id_is_sent_once(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", "daily-lab-loadr", str(labs_csv), "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, stderr = run_cli(argv, capsys)
    assert code == cli.EXIT_API_ERROR
    assert "was not found" in stderr
    assert simulator.stats.post_attempts["daily-lab-loadr"] == 1


def test_events_port_finishes_runs_from_their_events(
    served: SimulatorServer,
    simulator: Simulator,
    labs_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o"
    argv = ["run", "daily-lab-loader", str(labs_csv), "--out", str(out), "--no-progress"]
    code, _, stderr = run_cli([*argv, "--events-port", "0"], capsys)
    assert code == cli.EXIT_OK, stderr
    store = px.events.EventStore(out / "events.db")
    assert len(store) == 20  # one event per run, received on loopback
    assert {run.status for run in store.runs()} == {"COMPLETED"}
    assert simulator.subscriptions == {}  # the job's subscription was removed at the end
