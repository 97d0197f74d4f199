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
from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data import cli
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
    rows = [
        {"claimId": "claim-1", "state": "CT", "document": {"fileId": "file_1"}, "tags": ["a"]},
        {"claimId": "claim-2", "state": "NY", "document": {"fileId": "file_2"}, "tags": []},
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
    assert f"plextera-data resume {out / cli.DEFAULT_JOURNAL_NAME}" in stderr
    assert "Traceback" not in stderr


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
    (["run", "wf", "{claims.csv}", "--out", "o", "--index-col", "claimId"], "claim-1"),
    (["run", "wf", "{claims.csv}", "--out", "o", "--files", "document"], "missing.pdf"),
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
    if "--index-col" not in argv and "--files" not in argv[-2:]:
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

    # Run again: the previous demo's journal is replaced, not resumed against a new simulator.
    code, stdout, stderr = run_cli(["demo", "--no-progress", "--out", str(out)], capsys)
    assert code == cli.EXIT_OK, stderr
    assert len(px.Tables.read_parquet(out).runs) == len(tables.runs)


def test_simulator_command_serves_until_interrupted(tmp_path: Path) -> None:
    import httpx

    process = subprocess.Popen(
        [*console_script(), "simulator", "--port", "0", "--seed", "3", "--speed", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the server is up
        assert first.startswith("Plextera simulator serving at http://127.0.0.1:")
        base_url = first.rsplit(" ", 1)[1].strip()
        lines = [process.stdout.readline() for _ in range(5)]
        assert f"  export PLEXTERA_BASE_URL={base_url}\n" in lines
        assert "  export PLEXTERA_API_KEY=sk_sim_local\n" in lines
        client = px.Client(api_key="sk_sim_local", base_url=base_url)
        run = client.start_run("daily-lab-loader", json={"customerId": "customer-1"})
        assert client.get_run(run.id).id == run.id
        client.close()
        assert httpx.get(f"{base_url}/workflow-runs/{run.id}").status_code == 401  # no key
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == cli.EXIT_OK, stderr
    assert "Simulator stopped." in stdout
    assert "Traceback" not in stderr
