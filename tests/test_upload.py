"""Uploads through the File Service, planned (``upload=``) and direct, against the simulator.

The simulator runs in-process with a manual clock; what it counted (requests, stored files,
created runs) is the evidence. Sending the planned requests is done here the way the batch engine
does it: upload each distinct file once (by content hash), then start each row with
``request.start_kwargs(file_ids)``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from plextera_data import errors
from plextera_data.bodies import MissingFileIdError
from plextera_data.client import Client
from plextera_data.models import File
from plextera_data.retry import RetryPolicy
from plextera_data.rows import RowRequest, plan_requests
from plextera_data.simulator import Fault, Simulator, StepSpec, Workflow

ECHO = Workflow("echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),))
PDF = b"%PDF-1.4 a one-page claim"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=0, speed=None, workflows=[ECHO])


@pytest.fixture
def client(sim: Simulator) -> Client:
    async def no_wait(seconds: float) -> None:
        sim.clock.advance(seconds)

    return Client(
        api_key=sim.api_key,
        base_url=sim.in_process_base_url,
        transport=sim.transport(),
        retry=RetryPolicy(jitter=0),
        sleep=no_wait,
    )


def send(client: Client, requests: list[RowRequest]) -> dict[str, str]:
    """Upload every distinct file once, then start every row; the sha256 -> file id map."""
    file_ids: dict[str, str] = {}
    for request in requests:
        for upload in request.uploads:
            if upload.sha256 not in file_ids:
                uploaded = client.upload_file(upload.file)
                assert uploaded.id is not None
                file_ids[upload.sha256] = uploaded.id
    for request in requests:
        client.start_run("echo", **request.start_kwargs(file_ids))
    return file_ids


def big_file(path: Path) -> Path:
    with path.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # 60 MB, sparse: the check must not need to read it
    return path


# --------------------------------------------------------------------------- direct uploads


def test_upload_returns_a_typed_file(sim: Simulator, client: Client, tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(PDF)
    uploaded = client.upload_file(path)
    assert isinstance(uploaded, File)
    assert uploaded.id is not None
    assert uploaded.id.startswith("file_")
    assert (uploaded.name, uploaded.mime_type, uploaded.size) == (
        "claim.pdf",
        "application/pdf",
        len(PDF),
    )
    assert uploaded.created_at is not None  # the simulator answers like the DEV site
    assert sim.files[uploaded.id].data == PDF
    from_bytes = client.upload_file(b"col1,col2\n1,2\n", name="table.csv")
    assert (from_bytes.name, from_bytes.mime_type) == ("table.csv", "text/csv")
    assert sim.stats.requests == 2


@pytest.mark.parametrize(
    "make_file",
    [
        big_file,
        lambda p: (p.with_name("tool.exe").write_bytes(b"anything"), p.with_name("tool.exe"))[1],
        lambda p: (p.write_bytes(b"\x7fELF\x02\x01"), p)[1],
        lambda p: (p.write_bytes(b"#!/bin/sh\nrm -rf /\n"), p)[1],
    ],
    ids=["60MB", "exe-name", "elf-content", "script-content"],
)
def test_oversized_and_executable_files_are_refused_before_any_request(
    sim: Simulator, client: Client, tmp_path: Path, make_file: Any
) -> None:
    path = make_file(tmp_path / "document.pdf")
    with pytest.raises(errors.InvalidInputError):
        client.upload_file(path)
    with pytest.raises(errors.InvalidInputError):
        client.start_run("echo", files={"document": path})
    frame = pd.DataFrame({"claimId": ["ok", "bad"], "document": [None, str(path)]})
    with pytest.raises(errors.InvalidInputError) as info:
        plan_requests(frame, "echo", upload=["document"])
    assert "row 1, column 'document'" in str(info.value)
    assert "nothing was sent" in str(info.value)
    assert sim.stats.requests == 0
    assert sim.files == {}


def test_upload_retries_only_what_cannot_have_created_a_file(
    sim: Simulator, client: Client
) -> None:
    sim.set_faults([Fault("rate_limit", method="POST", path="/files", requests={1})])
    assert client.upload_file(PDF).id is not None
    assert len(sim.files) == 1
    assert sim.stats.by_status[429] == 1
    sim.set_faults([Fault("server_error", method="POST", path="/files", status=503)])
    with pytest.raises(errors.ServerError) as info:
        client.upload_file(PDF)
    assert info.value.may_have_created is True
    assert sim.stats.by_status[503] == 1  # one attempt: never re-sent


# --------------------------------------------------------------------------- planned uploads


def test_planned_uploads_reach_the_workflow_as_file_ids(
    sim: Simulator, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(PDF)
    frame = pd.DataFrame(
        {
            "claimId": ["c1", "c2", "c3"],
            "document": [str(path), io.BytesIO(b"%PDF from a stream"), None],
            "claim.photo": [b"\x89PNG\r\n\x1a\n...", None, b"\x89PNG\r\n\x1a\n..."],
        },
        index=["r1", "r2", "r3"],
    )
    requests = plan_requests(frame, "echo", upload=["document", "claim.photo"])
    assert requests[0].json == {
        "claimId": "c1",
        "document": {"fileId": None},
        "claim": {"photo": {"fileId": None}},
    }
    assert requests[2].json == {
        "claimId": "c3",
        "document": None,
        "claim": {"photo": {"fileId": None}},
    }
    first = requests[0].uploads
    assert [(u.column, u.at, u.file.filename) for u in first] == [
        ("document", ("document",), "claim.pdf"),
        ("claim.photo", ("claim", "photo"), "claim.photo"),
    ]
    assert first[0].sha256 == hashlib.sha256(PDF).hexdigest()
    assert first[0].file.size == len(PDF)

    file_ids = send(client, requests)
    assert len(file_ids) == 3  # the two rows' photos are one file
    assert len(sim.files) == 3
    bodies = [body for _, body in sim.created_runs("echo")]
    pdf_id = file_ids[hashlib.sha256(PDF).hexdigest()]
    photo_id = file_ids[first[1].sha256]
    assert bodies[0] == {
        "claimId": "c1",
        "document": {"fileId": pdf_id},
        "claim": {"photo": {"fileId": photo_id}},
    }
    assert bodies[2] == {
        "claimId": "c3",
        "document": None,
        "claim": {"photo": {"fileId": photo_id}},
    }
    assert sim.files[pdf_id].data == PDF


def test_a_file_used_by_100_rows_is_hashed_once_and_uploaded_once(
    sim: Simulator, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.pdf"
    path.write_bytes(PDF)
    frame = pd.DataFrame({"row": range(100), "document": [str(path)] * 100})
    opened: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    requests = plan_requests(frame, "echo", upload=["document"])
    assert len(opened) == 2  # the first bytes (type check), then the hash: once for 100 rows
    assert len({r.uploads[0].sha256 for r in requests}) == 1
    send(client, requests)
    assert len(sim.files) == 1
    assert sim.stats.posts["echo"] == 100
    assert len(opened) == 3  # and opened once more, to send it


def test_the_fingerprint_follows_the_content_not_the_file_id_or_path(tmp_path: Path) -> None:
    one, two, other = tmp_path / "a.pdf", tmp_path / "copy.pdf", tmp_path / "b.pdf"
    one.write_bytes(PDF)
    two.write_bytes(PDF)
    other.write_bytes(PDF + b" amended")

    def fingerprint(document: Any) -> str:
        frame = pd.DataFrame({"claimId": ["c1"], "document": [document]})
        return plan_requests(frame, "echo", upload=["document"])[0].fingerprint

    assert fingerprint(str(one)) == fingerprint(str(one))  # a rerun: the same request
    assert fingerprint(str(one)) == fingerprint(str(two)) == fingerprint(PDF)
    assert fingerprint(str(one)) != fingerprint(str(other))
    assert fingerprint(str(one)) != fingerprint(None)
    plain = pd.DataFrame({"claimId": ["c1"], "document": [{"fileId": None}]})
    assert plan_requests(plain, "echo")[0].fingerprint != fingerprint(str(one))


def test_a_missing_file_id_is_a_clear_error_and_sends_nothing(sim: Simulator) -> None:
    frame = pd.DataFrame({"document": [PDF], "extra": [b"%PDF other"]})
    (request,) = plan_requests(frame, "echo", upload=["document", "extra"])
    with pytest.raises(MissingFileIdError, match="2 upload"):
        request.start_kwargs()
    known = {request.uploads[0].sha256: "file_1"}
    with pytest.raises(MissingFileIdError, match=r"'extra' .*client\.upload_file"):
        request.start_kwargs(known)
    assert sim.stats.requests == 0


def test_upload_columns_with_body_and_with_files(tmp_path: Path) -> None:
    frame = pd.DataFrame({"claimId": ["c1"], "note": ["hi"], "document": [PDF]}, index=["k"])
    (request,) = plan_requests(
        frame, "echo", upload=["document"], body=lambda row: {"id": row.name, "n": row["note"]}
    )
    assert request.json == {"id": "k", "n": "hi", "document": {"fileId": None}}
    assert set(frame.columns) == {"claimId", "note", "document"}  # the input is not changed

    frame["scan"] = [b"%PDF scan"]
    (multipart,) = plan_requests(frame, "echo", upload=["document"], files=["scan"])
    assert multipart.fields == {"claimId": "c1", "note": "hi", "document": {"fileId": None}}
    body = multipart.start_kwargs({multipart.uploads[0].sha256: "file_9"})["body"]
    assert [(p.name, p.data) for p in body.fields][-1] == ("document", b'{"fileId": "file_9"}')
    assert [name for name, _ in body.files] == ["scan"]


@pytest.mark.parametrize(
    ("frame", "kwargs", "needles"),
    [
        (
            pd.DataFrame({"document": [b"%PDF"], "document.pages": [3]}),
            {"upload": ["document"]},
            ["'document'", "'document.pages'", "conflict"],
        ),
        (
            pd.DataFrame({"document": [b"%PDF"]}),
            {"upload": ["document"], "files": ["document"]},
            ["both files= and upload="],
        ),
        (
            pd.DataFrame({"document": [b"%PDF"]}, index=["k"]),
            {"upload": ["document"], "body": lambda row: {"document": "mine"}},
            ["row 'k', column 'document'", "already holds a value"],
        ),
        (pd.DataFrame({"a": [1]}), {"upload": ["missing"]}, ["column 'missing'"]),
        (
            pd.DataFrame({"document": ["/no/such/file.pdf", 3]}, index=["x", "y"]),
            {"upload": ["document"]},
            ["row 'x', column 'document': no such file", "row 'y'", "type int"],
        ),
    ],
    ids=["nesting-clash", "files-and-upload", "body-clash", "unknown", "bad-cells"],
)
def test_bad_upload_input_names_row_and_column(
    sim: Simulator, frame: pd.DataFrame, kwargs: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(errors.InvalidInputError) as info:
        plan_requests(frame, "echo", **kwargs)
    for needle in needles:
        assert needle in str(info.value)
    assert sim.stats.requests == 0
