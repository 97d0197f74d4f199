"""px.submit(..., upload=[...]): row documents go through the File Service, once per content,
remembered by the journal; bad files are refused before any request; failed uploads are
retried, and a row whose file cannot be uploaded is never started."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import plextera_data as px
from plextera_data.errors import InvalidInputError
from plextera_data.ledger import SUBMISSION_FAILED
from plextera_data.retry import RetryPolicy
from plextera_data.simulator import Fault, Simulator

# ``sim`` (manual clock, with the ``echo`` workflow) comes from conftest.py.


@pytest.fixture
def client(sim: Simulator) -> px.Client:
    # The retries' count matters here, not their waits.
    return px.Client(**sim.client_options(retry=RetryPolicy(initial_backoff=0.01)))


def documents(tmp_path: Path, n: int = 3) -> list[Path]:
    paths = []
    for i in range(n):
        path = tmp_path / f"claim-{i}.pdf"
        path.write_bytes(b"%PDF-1.4\n" + f"claim {i}\n".encode() * 50)
        paths.append(path)
    return paths


def frame(paths: list[Path], rows: int) -> pd.DataFrame:
    ids = [f"claim-{i}" for i in range(rows)]
    # The first file is shared by most rows; the others by one row each.
    cells = [paths[0]] * (rows - len(paths) + 1) + paths[1:]
    return pd.DataFrame({"claimId": ids, "document": [str(p) for p in cells]}, index=ids)


def test_a_file_used_by_100_rows_is_uploaded_once(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    paths = documents(tmp_path)
    df = frame(paths, 102)
    before = len(sim.files)
    batch = px.submit(df, "echo", client=client, upload=["document"], progress=False)
    assert len(sim.files) - before == 3  # three distinct contents, three uploads
    assert batch.counts == {"PROCESSING": 102}
    file_ids = {body["document"]["fileId"] for _, body in sim.created_runs("echo")}
    assert file_ids <= set(sim.files)
    assert len(file_ids) == 3
    shared = {body["document"]["fileId"] for _, body in sim.created_runs("echo")[:100]}
    assert len(shared) == 1
    for _, body in sim.created_runs("echo"):
        assert set(body) == {"claimId", "document"}


def test_a_rerun_with_the_journal_uploads_nothing_already_uploaded(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    paths = documents(tmp_path, 4)
    journal = tmp_path / "j.db"
    df = frame(paths, 10)
    before = len(sim.files)
    px.submit(
        df.iloc[:7], "echo", client=client, upload=["document"], journal=journal, progress=False
    )
    assert len(sim.files) - before == 1  # the first 7 rows share one file
    px.submit(df, "echo", client=client, upload=["document"], journal=journal, progress=False)
    assert len(sim.files) - before == 4
    again = px.submit(
        df, "echo", client=client, upload=["document"], journal=journal, progress=False
    )
    assert len(sim.files) - before == 4
    assert sim.stats.post_attempts["echo"] == 10
    assert again.status["run_id"].notna().all()


def test_oversized_and_executable_files_are_refused_before_any_request(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    big = tmp_path / "scan.pdf"
    with big.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # 60 MB, sparse
    tool = tmp_path / "tool.pdf"
    tool.write_bytes(b"MZ\x90\x00" + b"\x00" * 100)  # a Windows executable, whatever its name
    df = pd.DataFrame({"document": [str(documents(tmp_path, 1)[0]), str(big), str(tool)]})
    with pytest.raises(InvalidInputError) as caught:
        px.submit(df, "echo", client=client, upload=["document"], progress=False)
    text = str(caught.value)
    assert "nothing was sent" in text
    problems = {(key, column) for key, column, _ in caught.value.problems}
    assert problems == {(1, "document"), (2, "document")}
    assert sim.stats.requests == 0


def test_failed_uploads_are_retried(tmp_path: Path, sim: Simulator, client: px.Client) -> None:
    sim.set_faults([Fault("server_error", method="POST", path="/files", requests={1, 2})])
    df = frame(documents(tmp_path, 2), 5)
    batch = px.submit(df, "echo", client=client, upload=["document"], progress=False)
    assert batch.counts == {"PROCESSING": 5}
    assert sim.stats.post_attempts["echo"] == 5


def test_a_row_whose_file_cannot_be_uploaded_is_never_started(
    tmp_path: Path, sim: Simulator, client: px.Client
) -> None:
    sim.set_faults([Fault("server_error", method="POST", path="/files")])
    df = frame(documents(tmp_path, 2), 4)
    batch = px.submit(df, "echo", client=client, upload=["document"], progress=False)
    assert batch.counts == {SUBMISSION_FAILED: 4}
    assert sim.stats.post_attempts["echo"] == 0
    assert batch.status["error"].str.startswith("Uploading 'claim-").all()
