"""The File Service and documents: limits, refused types, unknown file ids, what is extracted."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plextera_data.simulator import Simulator
from plextera_data.simulator.files import MAX_FILE_BYTES

DATA = Path(__file__).resolve().parents[1] / "plextera_data" / "data"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=2, speed=None)


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with (
        sim.serve() as server,
        httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"api-key {sim.api_key}"},
            timeout=30,
        ) as client,
    ):
        yield client


def _upload(http: httpx.Client, name: str, data: bytes, media: str | None = None) -> httpx.Response:
    part = (name, data) if media is None else (name, data, media)
    return http.post("/files", files={"file": part})


def _finish(sim: Simulator, http: httpx.Client, body: dict[str, object]) -> dict[str, object]:
    answer = http.post("/workflows/incoming-claim/runs", json=body)
    assert answer.status_code == 202, answer.text
    sim.clock.advance(3600)
    model: dict[str, object] = http.get(f"/workflow-runs/{answer.json()['id']}").json()
    return model


def test_upload_answers_the_documented_fields(http: httpx.Client) -> None:
    answer = _upload(http, "claim.pdf", b"%PDF-1.4\n%%EOF\n")
    assert answer.status_code == 201
    meta = answer.json()
    assert set(meta) == {"id", "name", "mimeType", "sizeBytes", "createdAt"}
    assert (meta["name"], meta["mimeType"], meta["sizeBytes"]) == (
        "claim.pdf",
        "application/pdf",
        15,
    )
    assert http.get(f"/files/{meta['id']}").json() == meta


def test_the_50_mb_limit_is_50_000_000_bytes(sim: Simulator, http: httpx.Client) -> None:
    assert MAX_FILE_BYTES == 50_000_000
    at_limit = _upload(http, "scan.tif", b"\0" * MAX_FILE_BYTES, "image/tiff")
    assert at_limit.status_code == 201
    over = _upload(http, "scan.tif", b"\0" * (MAX_FILE_BYTES + 1), "image/tiff")
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert len(sim.files) == 1


@pytest.mark.parametrize(
    ("name", "data", "media"),
    [
        ("setup.exe", b"MZ\x90\x00", None),
        ("tool", b"\x7fELF\x02\x01", None),
        ("app", b"\xcf\xfa\xed\xfe", None),
        ("run.sh", b"echo hi\n", "text/plain"),
        ("notes.txt", b"#!/usr/bin/env python\nprint(1)\n", "text/plain"),
        ("job.py", b"print(1)\n", None),
        ("macro.vbs", b"MsgBox 1", None),
        ("page.js", b"alert(1)", None),
        ("data.bin", b"x = 1", "application/x-sh"),
        ("lib.jar", b"PK\x03\x04", None),
    ],
)
def test_executables_and_scripts_are_refused(
    sim: Simulator, http: httpx.Client, name: str, data: bytes, media: str | None
) -> None:
    answer = _upload(http, name, data, media)
    assert answer.status_code == 415, name
    assert answer.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert sim.files == {}


@pytest.mark.parametrize(
    ("name", "data", "media"),
    [
        ("claim.pdf", b"%PDF-1.7\n", None),
        ("photo.png", b"\x89PNG\r\n\x1a\n", None),
        ("table.csv", b"a,b\n1,2\n", "text/csv"),
        ("page.html", b"<html><script>1</script></html>", "text/html"),
        ("archive.zip", b"PK\x03\x04", None),
    ],
)
def test_supported_types_are_stored(
    http: httpx.Client, name: str, data: bytes, media: str | None
) -> None:
    assert _upload(http, name, data, media).status_code == 201, name


def test_an_unknown_file_id_fails_the_run_at_the_step_that_opens_it(
    sim: Simulator, http: httpx.Client
) -> None:
    model = _finish(sim, http, {"claimId": "c", "state": "CT", "document": {"fileId": "file_nope"}})
    assert model["status"] == "FAILED"
    assert model["error"] == {
        "code": "FILE_NOT_FOUND",
        "message": "File 'file_nope' was not found in this workspace.",
    }
    steps = model["steps"]
    assert isinstance(steps, list)
    assert [(step["name"], step["status"]) for step in steps] == [("Extracted Document", "FAILED")]
    assert sim.stats.posts == {"incoming-claim": 1}  # accepted: the API does not read the input


def test_no_document_is_unsupported_and_a_known_id_is_read(
    sim: Simulator, http: httpx.Client
) -> None:
    missing = _finish(sim, http, {"claimId": "c", "state": "CT", "document": "claim.pdf"})
    assert missing["error"] == {
        "code": "UNSUPPORTED_DOCUMENT",
        "message": "The document could not be processed by Document Insights.",
    }
    file_id = _upload(http, "f.txt", b"Claim: c-7\nState: NY\nAmount claimed: USD 2,500.75\n")
    body = {"claimId": "c-7", "state": "NY", "document": {"fileId": file_id.json()["id"]}}
    read = _finish(sim, http, body)
    assert read["status"] == "COMPLETED"
    fields = read["steps"][0]["output"]["fields"]  # type: ignore[index]
    assert [(f["name"], f["value"]) for f in fields] == [
        ("claimId", "c-7"),
        ("state", "NY"),
        ("amount", 2500.75),
    ]


def test_multipart_documents_are_read_too(sim: Simulator, http: httpx.Client) -> None:
    pdf = (DATA / "claim-documents" / "claim-9002.pdf").read_bytes()
    answer = http.post(
        "/workflows/incoming-claim/runs",
        data={"claimId": "claim-9002", "state": "NY"},
        files={"document": ("claim-9002.pdf", pdf, "application/pdf")},
    )
    sim.clock.advance(3600)
    output = sim.run_model(answer.json()["id"])["steps"][0]["output"]
    with (DATA / "claims-with-documents.csv").open(encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["claimId"] == "claim-9002")
    assert output["pageCount"] == 1
    assert [f["value"] for f in output["fields"]] == [
        "claim-9002",
        "NY",
        float(row["amountClaimed"]),
    ]


def test_sample_claims_extract_the_amount_they_claim_except_the_documented_cases(
    sim: Simulator, http: httpx.Client
) -> None:
    with (DATA / "claims.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    started = []
    for row in rows:
        body: dict[str, object] = {k: v for k, v in row.items() if k != "document.fileId"}
        if row["document.fileId"]:
            body["document"] = {"fileId": row["document.fileId"]}
        started.append(http.post("/workflows/incoming-claim/runs", json=body).json()["id"])
    sim.clock.advance(3600)
    differ, unread, failed = [], [], []
    for row, run_id in zip(rows, started, strict=True):
        model = sim.run_model(run_id)
        extraction = model["steps"][0]
        if extraction["status"] != "COMPLETED":
            failed.append(row["claimId"])
            continue
        claim_id, _, amount = (field["value"] for field in extraction["output"]["fields"])
        if amount is None:
            unread.append(row["claimId"])
        elif amount != float(row["amountClaimed"]):
            differ.append(row["claimId"])
        else:
            assert claim_id == row["claimId"]
    assert len(differ) == 5
    assert len(unread) == 3
    assert len(failed) == sum(1 for row in rows if not row["document.fileId"])
    for claim_id in differ + unread + failed:
        assert f"`{claim_id}`" in readme  # the data's README names every case meant to differ
    assert len(sim.sample_files) == len(rows) - len(failed)
    assert sim.files == {}  # sample files are not uploads
    assert http.get(f"/files/{rows[0]['document.fileId']}").status_code == 200
    assert Simulator(with_sample_files=False).sample_files == {}
