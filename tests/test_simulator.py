"""The simulator's API, served on loopback (uvicorn) and in-process: shapes, lifecycle, errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plextera_data.simulator import NestedSpec, Simulator, StepSpec, Workflow
from plextera_data.simulator.server import SimulatorServer

KEY = "sk_sim_test_SECRET"
AUTH = {"Authorization": f"api-key {KEY}"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
REQUEST_ID = re.compile(r"^req_[0-9A-F]{26}$")


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=7, speed=None, api_key=KEY)


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as served:
        yield served


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=10) as http:
        yield http


def start(client: httpx.Client, workflow_id: str, body: dict[str, Any] | None = None) -> str:
    response = client.post(f"/workflows/{workflow_id}/runs", json=body or {})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


# --------------------------------------------------------------------------- the vendor page


def _call(command: list[str], url: str, files_dir: Path) -> tuple[int, Any]:
    """Run a vendor-page curl command (with real curl if present, else the same through httpx)."""
    if shutil.which("curl"):
        done = subprocess.run(
            [*command, "-sS", "-w", "\n%{http_code}", url],
            capture_output=True,
            text=True,
            cwd=files_dir,
            timeout=30,
            check=True,
        )
        body, _, status = done.stdout.rpartition("\n")
        return int(status), json.loads(body)
    headers: dict[str, str] = {}
    data: dict[str, str] = {}
    files: dict[str, Any] = {}
    payload: str | None = None
    method = "GET"
    args = iter(command[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(": ")
            headers[name] = value
        elif arg == "-d":
            payload = next(args)
        elif arg == "-F":
            name, _, value = next(args).partition("=")
            if value.startswith("@"):
                files[name] = (value[1:], (files_dir / value[1:]).read_bytes())
            else:
                data[name] = value
    if files or data:
        method = "POST"
    response = httpx.request(
        method, url, headers=headers, content=payload, data=data or None, files=files or None
    )
    return response.status_code, response.json()


def test_vendor_page_curl_commands_get_documented_shapes(
    sim: Simulator, server: SimulatorServer, tmp_path: Path
) -> None:
    (tmp_path / "claim.pdf").write_bytes(b"%PDF-1.7\n% a claim\n")
    key = f"Authorization: api-key {KEY}"
    status, started = _call(
        [
            "curl",
            "-X",
            "POST",
            "-H",
            key,
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"customerId": "customer-42", '
            '"document": {"fileId": "file_01JY7M4ZVX5R1P3M3Q0TA1S7ZM"}}',
        ],
        f"{server.base_url}/workflows/daily-lab-loader/runs",
        tmp_path,
    )
    assert status == 202
    assert re.fullmatch(r"[0-9a-f]{24}", started["id"])
    assert started["status"] == "PROCESSING"
    assert started["workflow"] == {"id": "daily-lab-loader", "name": "Daily Lab Loader"}

    status, claim = _call(
        [
            "curl",
            "-X",
            "POST",
            "-H",
            key,
            "-F",
            "claimId=claim-42",
            "-F",
            "state=CT",
            "-F",
            "document=@claim.pdf",
        ],
        f"{server.base_url}/workflows/incoming-claim/runs",
        tmp_path,
    )
    assert status == 202
    assert claim["status"] == "PROCESSING"
    assert claim["workflow"] == {"id": "incoming-claim", "name": "Incoming Claim"}
    claim_input = sim.runs[claim["id"]].input
    assert claim_input["claimId"] == "claim-42"
    assert claim_input["state"] == "CT"
    assert claim_input["document"][0]["name"] == "claim.pdf"

    sim.clock.advance(120)
    status, polled = _call(
        ["curl", "-H", key], f"{server.base_url}/workflow-runs/{started['id']}", tmp_path
    )
    assert status == 200
    assert polled["id"] == started["id"]
    assert polled["status"] == "COMPLETED"
    assert polled["workflow"] == {"id": "daily-lab-loader", "name": "Daily Lab Loader"}
    [step] = polled["steps"]
    assert {k: step[k] for k in ("id", "name", "type", "status")} == {
        "id": "step_01",
        "name": "Extract Lab Result",
        "type": "document_insights",
        "status": "COMPLETED",
    }
    assert set(step["output"]) == {"extractionId", "fieldCount"}
    assert re.fullmatch(r"[0-9a-f]{24}", step["output"]["extractionId"])
    assert isinstance(step["output"]["fieldCount"], int)
    assert step["nestedRuns"] == {"count": 0, "data": []}


# --------------------------------------------------------------------------- starts


def test_json_start_keeps_the_body_as_input_and_counts_one_post(
    sim: Simulator, client: httpx.Client
) -> None:
    body = {"customerId": "customer-42", "nested": {"list": [1, 2.5, None, True]}}
    run_id = start(client, "daily-lab-loader", body)
    assert sim.created_runs() == [(run_id, body)]
    assert sim.stats.posts == {"daily-lab-loader": 1}
    assert sim.stats.post_attempts == {"daily-lab-loader": 1}


def test_multipart_start_text_json_and_file_parts(sim: Simulator, client: httpx.Client) -> None:
    pdf = b"%PDF-1.4\n" + b"x" * 1000
    response = client.post(
        "/workflows/incoming-claim/runs",
        data={"claimId": "claim-7", "state": "NY", "tags": ["a", "b"]},
        files=[
            ("document", ("claim.pdf", pdf, "application/pdf")),
            ("payload", (None, json.dumps({"priority": 2, "flags": [True]}), "application/json")),
            ("attachments", ("a.txt", b"first", "text/plain")),
            ("attachments", ("b.csv", b"x,y\n1,2\n", "text/csv")),
        ],
    )
    assert response.status_code == 202, response.text
    run_input = sim.runs[response.json()["id"]].input
    assert run_input["claimId"] == "claim-7"
    assert run_input["tags"] == ["a", "b"]  # repeated text parts become a list
    assert run_input["payload"] == {"priority": 2, "flags": [True]}  # JSON part parsed
    [document] = run_input["document"]  # a file part is a file-node array
    assert set(document) == {"id", "name", "mimeType", "sizeBytes"}
    assert document["name"] == "claim.pdf"
    assert document["mimeType"] == "application/pdf"
    assert document["sizeBytes"] == len(pdf)
    assert [node["name"] for node in run_input["attachments"]] == ["a.txt", "b.csv"]
    assert run_input["attachments"][1]["mimeType"] == "text/csv"

    meta = client.get(f"/files/{document['id']}")
    assert meta.status_code == 200
    assert meta.json() == {**document, "createdAt": meta.json()["createdAt"]}
    download = client.get(f"/files/{document['id']}/download")
    assert download.status_code == 200
    assert download.content == pdf
    assert download.headers["content-type"] == "application/pdf"


def test_file_upload_and_limits(client: httpx.Client, sim: Simulator) -> None:
    uploaded = client.post("/files", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert uploaded.status_code == 201
    assert uploaded.json()["sizeBytes"] == 5
    assert re.fullmatch(r"file_[0-9A-Z]{26}", uploaded.json()["id"])
    assert TIMESTAMP.match(uploaded.json()["createdAt"])

    sim.max_file_bytes = 1000
    too_big = client.post("/files", files={"file": ("big.bin", b"\0" * 1001)})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    big_start = client.post(
        "/workflows/incoming-claim/runs", files={"document": ("big.pdf", b"%PDF" + b"0" * 1000)}
    )
    assert big_start.status_code == 413
    assert sim.stats.posts == {}

    script = client.post("/files", files={"file": ("run.sh", b"#!/bin/sh\necho hi\n")})
    assert script.status_code == 415
    no_file = client.post("/files", files={"other": ("a.txt", b"a")})
    assert no_file.status_code == 400
    assert client.get("/files/file_UNKNOWN").status_code == 404


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "INVALID_REQUEST"),
        (b"[1, 2]", "application/json", 400, "INVALID_REQUEST"),
        (b'"text"', "application/json", 400, "INVALID_REQUEST"),
        (b"customerId=1", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\n1",
            "multipart/form-data",
            400,
            "INVALID_REQUEST",
        ),
        (
            b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\n1",
            "multipart/form-data; boundary=xyz",
            400,
            "INVALID_REQUEST",
        ),
    ],
)
def test_bad_start_bodies_are_rejected_without_creating_a_run(
    sim: Simulator,
    client: httpx.Client,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    response = client.post(
        "/workflows/daily-lab-loader/runs", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["retryable"] is False
    assert sim.stats.posts == {}
    assert sim.stats.post_attempts == {"daily-lab-loader": 1}


# --------------------------------------------------------------------------- run lifecycle


def upload(
    client: httpx.Client, text: str = "Claim: c1\nState: CT\nAmount claimed: USD 12.50"
) -> str:
    """Upload a claim form as a text file; its File Service id."""
    answer = client.post("/files", files={"file": ("claim.txt", text.encode(), "text/plain")})
    assert answer.status_code == 201, answer.text
    file_id: str = answer.json()["id"]
    return file_id


def test_run_moves_from_queued_steps_to_completed(sim: Simulator, client: httpx.Client) -> None:
    document = {"fileId": upload(client)}
    run_id = start(client, "incoming-claim", {"claimId": "c1", "state": "CT", "document": document})
    record = sim.runs[run_id]
    first, second = record.steps

    model = client.get(f"/workflow-runs/{run_id}").json()
    assert model["status"] == "PROCESSING"
    assert "startedAt" not in model
    assert "completedAt" not in model
    assert [s["status"] for s in model["steps"]] == ["QUEUED", "QUEUED"]
    assert model["progress"] == {"stepsCompleted": 0, "stepsTotal": 2}

    sim.clock.advance((first.start - record.created_at).total_seconds())  # type: ignore[operator]
    model = client.get(f"/workflow-runs/{run_id}").json()
    assert [s["status"] for s in model["steps"]] == ["PROCESSING", "QUEUED"]
    assert model["steps"][0]["output"] is None
    assert TIMESTAMP.match(model["startedAt"])
    assert "computedDurationMs" not in model

    sim.clock.advance((second.start - first.start).total_seconds())  # type: ignore[operator]
    model = client.get(f"/workflow-runs/{run_id}").json()
    assert [s["status"] for s in model["steps"]] == ["COMPLETED", "PROCESSING"]
    assert model["steps"][0]["output"]["fields"][0] == {
        "name": "claimId",
        "value": "c1",
        "confidence": 0.99,
    }
    assert model["progress"]["stepsCompleted"] == 1
    assert sim.finished_at(run_id) is None

    sim.clock.advance(3600)
    model = client.get(f"/workflow-runs/{run_id}").json()
    assert model["status"] == "COMPLETED"
    assert model["progress"] == {"stepsCompleted": 2, "stepsTotal": 2}
    for name in ("createdAt", "updatedAt", "startedAt", "completedAt"):
        assert TIMESTAMP.match(model[name]), name
    assert model["updatedAt"] == model["completedAt"]
    assert "error" not in model
    started = record.started_at
    assert model["computedDurationMs"] == round(
        (record.finished_at - started).total_seconds() * 1000
    )
    assert isinstance(model["durationMs"], int)
    assert model["steps"][1]["output"] == {
        "queue": "claims-ct",
        "accepted": True,
        "statusCode": 200,
    }
    assert sim.finished_at(run_id) == record.finished_at


def test_failed_run_has_error_failed_step_message_and_lists_executed_steps(
    sim: Simulator, client: httpx.Client
) -> None:
    bad_state = start(
        client, "incoming-claim", {"state": "ZZ", "document": {"fileId": upload(client)}}
    )
    no_document = start(client, "incoming-claim", {"state": "CT"})
    sim.clock.advance(3600)

    model = client.get(f"/workflow-runs/{bad_state}").json()
    assert model["status"] == "FAILED"
    assert model["error"] == {
        "code": "WORKFLOW_RUN_FAILED",
        "message": "Client endpoint rejected the request.",
    }
    assert [s["status"] for s in model["steps"]] == ["COMPLETED", "FAILED"]
    assert "message" not in model["steps"][0]
    assert model["steps"][1]["message"] == "Client endpoint rejected the request."
    assert model["steps"][1]["output"] is None
    assert model["progress"] == {"stepsCompleted": 1, "stepsTotal": 2}

    model = client.get(f"/workflow-runs/{no_document}").json()
    assert model["status"] == "FAILED"
    assert model["error"]["code"] == "UNSUPPORTED_DOCUMENT"
    assert [s["name"] for s in model["steps"]] == ["Extracted Document"]  # step 2 never ran
    assert model["progress"] == {"stepsCompleted": 0, "stepsTotal": 2}


def test_input_flags_force_failure_closing_and_duration(
    sim: Simulator, client: httpx.Client
) -> None:
    document = {"fileId": upload(client)}
    failed = start(client, "daily-lab-loader", {"simulate": {"fail": True, "failMessage": "boom"}})
    closed = start(
        client,
        "incoming-claim",
        {"state": "CT", "document": document, "simulate": {"close": True}},
    )
    timed = start(client, "variable-duration", {"durationSeconds": 42})
    scaled = start(
        client,
        "incoming-claim",
        {"state": "CT", "document": document, "simulate": {"durationSeconds": 10}},
    )
    sim.clock.advance(41)
    assert client.get(f"/workflow-runs/{timed}").json()["status"] == "PROCESSING"
    sim.clock.advance(1)
    assert client.get(f"/workflow-runs/{timed}").json()["status"] == "COMPLETED"

    model = client.get(f"/workflow-runs/{failed}").json()
    assert model["status"] == "FAILED"
    assert model["error"]["message"] == "boom"
    assert model["steps"][0]["status"] == "FAILED"

    model = client.get(f"/workflow-runs/{closed}").json()
    assert model["status"] == "CLOSED"
    assert [s["status"] for s in model["steps"]] == ["COMPLETED"]
    assert "error" not in model
    assert TIMESTAMP.match(model["completedAt"])

    record = sim.runs[scaled]
    steps_time = (record.finished_at - record.started_at).total_seconds()
    assert steps_time == pytest.approx(10, abs=0.01)


def test_nested_runs_two_levels_deep(sim: Simulator, client: httpx.Client) -> None:
    claims = [{"claimId": "a", "state": "CT"}, {"claimId": "b", "state": "NY"}]
    batch = start(client, "claims-batch", {"claims": claims})
    model = client.get(f"/workflow-runs/{batch}").json()
    assert model["steps"][1]["nestedRuns"] == {"count": 0, "data": []}  # not started yet

    sim.clock.advance(3600)
    model = client.get(f"/workflow-runs/{batch}").json()
    assert model["status"] == "COMPLETED"
    review = model["steps"][1]
    assert review["nestedRuns"]["count"] == 2
    children = review["nestedRuns"]["data"]
    assert [c["workflow"]["id"] for c in children] == ["claim-review", "claim-review"]
    assert [c["steps"][0]["output"]["claimId"] for c in children] == ["a", "b"]
    grandchild = children[0]["steps"][1]["nestedRuns"]["data"][0]
    assert grandchild["workflow"]["id"] == "policy-lookup"
    assert grandchild["status"] == "COMPLETED"
    assert set(grandchild["steps"][0]["output"]) == {"policyNumber", "active"}
    # nested runs are runs: they can be fetched by id, but are not listed or counted as starts
    assert client.get(f"/workflow-runs/{grandchild['id']}").json() == grandchild
    assert [run_id for run_id, _ in sim.created_runs()] == [batch]
    assert sim.runs[grandchild["id"]].depth == 2


def test_a_failing_nested_run_fails_its_parent(sim: Simulator, client: httpx.Client) -> None:
    claims = [{"claimId": "a"}, {"claimId": "b", "simulate": {"fail": True, "failStep": 1}}]
    batch = start(client, "claims-batch", {"claims": claims})
    sim.clock.advance(3600)
    model = client.get(f"/workflow-runs/{batch}").json()
    assert model["status"] == "FAILED"
    assert model["steps"][1]["message"] == "1 of 2 nested runs did not complete."
    assert [c["status"] for c in model["steps"][1]["nestedRuns"]["data"]] == [
        "COMPLETED",
        "FAILED",
    ]


def test_custom_workflow_with_callables(client: httpx.Client, sim: Simulator) -> None:
    sim.add_workflow(
        Workflow("leaf", "Leaf", [StepSpec("Leaf", "custom", duration=1.0, output={"ok": True})])
    )
    sim.add_workflow(
        Workflow(
            "custom",
            "Custom",
            [
                StepSpec(
                    "Score",
                    "custom",
                    duration=lambda rng, inp: float(inp["seconds"]),
                    output=lambda inp, rng: {"double": inp["x"] * 2},
                    fail=lambda inp, rng: "too big" if inp["x"] > 10 else False,
                ),
                StepSpec("Fan out", "workflow", nested=NestedSpec("leaf", count=lambda i, r: 3)),
            ],
        )
    )
    ok = start(client, "custom", {"x": 2, "seconds": 5})
    bad = start(client, "custom", {"x": 11, "seconds": 5})
    sim.clock.advance(60)
    model = sim.run_model(ok)
    assert model["steps"][0]["output"] == {"double": 4}
    assert model["steps"][1]["nestedRuns"]["count"] == 3
    assert sim.run_model(bad)["error"]["message"] == "too big"


def test_same_seed_same_ids_and_outputs() -> None:
    def trace(seed: int) -> list[Any]:
        sim = Simulator(seed=seed, speed=None)
        ids = [sim.start_run("daily-lab-loader", {"n": n}) for n in range(3)]
        ids.append(sim.start_run("claims-batch", {}))
        sim.clock.advance(3600)
        return [sim.run_model(run_id) for run_id in ids]

    assert trace(1) == trace(1)
    first, other = trace(1), trace(2)
    assert [m["id"] for m in first] != [m["id"] for m in other]
    assert first[0]["steps"][0]["output"] != other[0]["steps"][0]["output"]


# --------------------------------------------------------------------------- accounting


def test_accounting_counts_gets_and_gets_after_terminal(
    sim: Simulator, client: httpx.Client
) -> None:
    run_id = start(client, "variable-duration", {"durationSeconds": 5})
    for _ in range(3):
        client.get(f"/workflow-runs/{run_id}")
    sim.clock.advance(5)
    client.get(f"/workflow-runs/{run_id}")  # first terminal answer
    client.get(f"/workflow-runs/{run_id}", headers={"X-Request-Id": "mine-1"})
    client.get(f"/workflow-runs/{run_id}", headers={"X-Request-Id": "mine-2"})
    client.get("/workflow-runs")
    assert sim.stats.gets == {run_id: 6}
    assert sim.stats.gets_after_terminal == {run_id: 2}
    assert sim.stats.requests == 8
    assert sim.stats.lists == 1
    assert sim.stats.by_status == {202: 1, 200: 7}
    assert sim.stats.request_ids == ["mine-1", "mine-2"]


def test_accounting_per_kind_and_runs_per_input(sim: Simulator, client: httpx.Client) -> None:
    first = start(client, "daily-lab-loader", {"row": 1, "x": [1, 2]})
    start(client, "daily-lab-loader", {"row": 2})
    assert not sim.stats.started_twice
    twice = start(client, "daily-lab-loader", {"x": [1, 2], "row": 1})  # same input again
    client.get(f"/workflow-runs/{first}")
    client.get("/workflow-runs/nope")
    client.post("/files", files={"file": ("a.txt", b"a")})
    client.get("/no/such/path")
    client.put("/workflow-runs")
    assert twice != first
    [(key, count)] = sim.stats.started_twice.items()
    assert key[0] == "daily-lab-loader"
    assert count == 2
    assert sum(sim.stats.runs_per_input.values()) == sim.stats.total_posts == 3
    assert sim.stats.by_kind == {
        "start": 3,
        "get_run": 2,
        "upload_file": 1,
        "not_found": 1,
        "method_not_allowed": 1,
    }
    assert sim.stats.answers == {
        ("start", 202): 3,
        ("get_run", 200): 1,
        ("get_run", 404): 1,
        ("upload_file", 201): 1,
        ("not_found", 404): 1,
        ("method_not_allowed", 405): 1,
    }
    sim.stats.reset()
    assert (sim.stats.requests, sim.stats.by_kind, sim.stats.started_twice) == (0, {}, {})


# --------------------------------------------------------------------------- errors, auth, paths


@pytest.mark.parametrize(
    "authorization",
    [None, KEY, f"Bearer {KEY}", f"api-key  {KEY}", f"API-KEY {KEY}", "api-key wrong"],
)
def test_auth_is_exact_and_the_error_never_shows_the_key(
    server: SimulatorServer, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.get(f"{server.base_url}/workflow-runs", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert error["retryable"] is False
    assert KEY not in response.text


def test_error_envelope_and_request_id(client: httpx.Client, sim: Simulator) -> None:
    echoed = client.get("/workflow-runs/nope", headers={"X-Request-Id": "my-req-42"})
    assert echoed.status_code == 404
    assert echoed.headers["x-request-id"] == "my-req-42"
    assert echoed.json() == {
        "error": {
            "code": "NOT_FOUND",
            "message": "Workflow run 'nope' was not found in this workspace.",
            "requestId": "my-req-42",
            "retryable": False,
        }
    }
    generated = client.post("/workflows/unknown/runs", json={})
    assert generated.status_code == 404
    assert REQUEST_ID.match(generated.headers["x-request-id"])
    assert generated.json()["error"]["requestId"] == generated.headers["x-request-id"]
    ok = client.get("/workflow-runs")
    assert REQUEST_ID.match(ok.headers["x-request-id"])

    wrong_method = client.delete("/workflow-runs/abc")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET"
    assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert client.get("/no/such/path").json()["error"]["code"] == "NOT_FOUND"
    not_acceptable = client.get("/workflow-runs", headers={"Accept": "text/html"})
    assert not_acceptable.status_code == 406


def test_percent_encoded_path_segments_are_single_ids(client: httpx.Client, sim: Simulator) -> None:
    sim.add_workflow(Workflow("team/loader", "Team Loader", [StepSpec("S", "custom")]))
    sim.add_workflow(Workflow("admin", "Admin", [StepSpec("S", "custom")]))
    made = client.post("/workflows/team%2Floader/runs", json={})
    assert made.status_code == 202
    assert made.json()["workflow"]["id"] == "team/loader"
    for raw in ("..%2Fadmin", "%2E%2E%2Fadmin", "team%2Floader%2F..", "x%2F..%2F..%2Fadmin"):
        response = client.post(f"/workflows/{raw}/runs", json={})
        assert response.status_code == 404, raw
    assert client.post("/workflows/team/loader/runs", json={}).status_code == 404
    assert sim.stats.posts == {"team/loader": 1}
    assert client.get("/workflow-runs/..%2Fworkflow-runs").status_code == 404


def test_list_runs_pagination_and_filters(sim: Simulator, client: httpx.Client) -> None:
    ids = [start(client, "variable-duration", {"durationSeconds": 10 * (n + 1)}) for n in range(5)]
    start(client, "daily-lab-loader")
    sim.clock.advance(25)  # the first two variable-duration runs are done
    page = client.get("/workflow-runs", params={"page": 1, "size": 4}).json()
    assert page["pageInfo"] == {"page": 1, "size": 4, "totalItems": 6, "totalPages": 2}
    assert len(page["data"]) == 4
    second = client.get("/workflow-runs", params={"page": 2, "size": 4}).json()
    assert [run["id"] for run in second["data"]] == [ids[1], ids[0]]  # newest first
    done = client.get(
        "/workflow-runs", params={"status": "COMPLETED", "workflowId": "variable-duration"}
    ).json()
    assert {run["id"] for run in done["data"]} == {ids[0], ids[1]}
    assert done["pageInfo"]["totalItems"] == 2
    empty = client.get("/workflow-runs", params={"page": 9}).json()
    assert empty["data"] == []
    for bad in ({"page": 0}, {"size": 101}, {"size": "x"}):
        response = client.get("/workflow-runs", params=bad)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_event_subscriptions(client: httpx.Client) -> None:
    body = {
        "endpointUrl": "https://example.com/hooks/plextera",
        "eventTypes": ["workflow.run.completed", "workflow.run.failed"],
        "signingSecret": "whsec_do_not_return",
        "filters": {"workflowId": "daily-lab-loader"},
    }
    created = client.post("/event-subscriptions", json=body)
    assert created.status_code == 201
    sub = created.json()
    assert sub["status"] == "active"
    assert sub["filters"] == {"workflowId": "daily-lab-loader"}
    assert "signingSecret" not in sub
    assert "whsec_do_not_return" not in created.text
    plain = client.post(
        "/event-subscriptions",
        json={**body, "filters": None, "eventTypes": ["workflow.run.failed"]},
    ).json()
    assert "filters" not in plain
    listed = client.get("/event-subscriptions").json()
    assert [s["id"] for s in listed["data"]] == [sub["id"], plain["id"]]
    assert client.get(f"/event-subscriptions/{sub['id']}").json() == sub

    invalid = client.post(
        "/event-subscriptions",
        json={"endpointUrl": "http://example.com", "eventTypes": [], "signingSecret": ""},
    )
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert error["code"] == "VALIDATION_FAILED"
    assert error["message"] == "One or more request fields are invalid."
    assert {d["field"] for d in error["details"]} == {"endpointUrl", "eventTypes", "signingSecret"}
    blank = client.post("/event-subscriptions", json={**body, "endpointUrl": ""}).json()
    assert blank["error"]["details"] == [{"field": "endpointUrl", "issue": "must not be blank"}]


# --------------------------------------------------------------------------- in-process


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_in_process_transport_speaks_the_same_api() -> None:
    sim = Simulator(seed=3, speed=None)
    async with httpx.AsyncClient(
        transport=sim.transport(),
        base_url=sim.in_process_base_url,
        headers={"Authorization": f"api-key {sim.api_key}"},
    ) as http:
        response = await http.post("/workflows/daily-lab-loader/runs", json={"a": 1})
        assert response.status_code == 202
        run_id = response.json()["id"]
        sim.clock.advance(60)
        polled = await http.get(f"/workflow-runs/{run_id}")
        assert polled.json()["status"] == "COMPLETED"
        assert polled.json() == sim.run_model(run_id)
    assert sim.stats.posts == {"daily-lab-loader": 1}


def test_running_clock_and_server_attributes() -> None:
    sim = Simulator(seed=0, speed=1000.0)
    run_id = sim.start_run("variable-duration", {"durationSeconds": 1})
    deadline = time.monotonic() + 30
    while sim.finished_at(run_id) is None:  # one simulated second: a millisecond of wall time
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert sim.finished_at(run_id) == sim.runs[run_id].finished_at <= sim.clock.now()
    with sim.serve() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/api/public/v1")
        assert server.api_key == sim.api_key
        assert server.stats is sim.stats
    assert "sk_sim_local" not in repr(sim)


# --------------------------------------------------------------------------- arrival order

#: (label, workflow, JSON body or None, multipart fields, multipart files). Two entries share the
#: label "dup": identical inputs, compared as a group.
_ORDER_INPUTS: list[tuple[str, str, dict[str, Any] | None, dict[str, str], dict[str, bytes]]] = [
    *[(f"lab-{n}", "daily-lab-loader", {"sampleId": f"s-{n}"}, {}, {}) for n in range(4)],
    *[(f"flaky-{n}", "flaky-loader", {"sampleId": f"f-{n}"}, {}, {}) for n in range(12)],
    ("dup", "flaky-loader", {"sampleId": "same"}, {}, {}),
    ("dup", "flaky-loader", {"sampleId": "same"}, {}, {}),
    (
        "batch",
        "claims-batch",
        {"claims": [{"claimId": "c-1", "state": "CT"}, {"state": "ZZ"}]},
        {},
        {},
    ),
    ("wait", "variable-duration", {"echo": "hi"}, {}, {}),
    (
        "claim-a",
        "incoming-claim",
        None,
        {"claimId": "a", "state": "NY"},
        {"document": b"Claim: a\nState: NY\nAmount claimed: USD 1,250.00\n" + b"." * 50_000},
    ),
    (
        "claim-b",
        "incoming-claim",
        None,
        {"claimId": "b", "state": "TX"},
        {"document": b"%PDF-b" * 20},
    ),
]


def _outcome(model: dict[str, Any]) -> dict[str, Any]:
    """What a run came to, without its timestamps (which follow the arrival time)."""
    return {
        "id": model["id"],
        "status": model["status"],
        "durationMs": model["durationMs"],
        "computedDurationMs": model["computedDurationMs"],
        "error": model.get("error"),
        "steps": [
            {
                "status": step["status"],
                "message": step.get("message"),
                "output": step["output"],
                "nested": [_outcome(child) for child in step["nestedRuns"]["data"]],
            }
            for step in model["steps"]
        ],
    }


async def _outcomes_by_input(
    seed: int, order: list[int], gap: float
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Start ``_ORDER_INPUTS`` in ``order`` (``gap`` simulated seconds apart), let them finish and
    return each input's outcomes and the file id each multipart input's upload got."""
    sim = Simulator(seed=seed, speed=None)
    started: list[tuple[str, str]] = []
    files: dict[str, str] = {}
    async with httpx.AsyncClient(
        transport=sim.transport(),
        base_url=sim.in_process_base_url,
        headers={"Authorization": f"api-key {sim.api_key}"},
    ) as http:
        for index in order:
            label, workflow_id, body, fields, uploads = _ORDER_INPUTS[index]
            url = f"/workflows/{workflow_id}/runs"
            if body is not None:
                response = await http.post(url, json=body)
            else:
                parts = {n: (f"{n}.txt", data, "text/plain") for n, data in uploads.items()}
                response = await http.post(url, data=fields, files=parts)
            assert response.status_code == 202, response.text
            run_id = response.json()["id"]
            started.append((label, run_id))
            if body is None:
                files[label] = sim.runs[run_id].input["document"][0]["id"]
            sim.clock.advance(gap)
        sim.clock.advance(3600)
        by_input: dict[str, list[Any]] = {}
        for label, run_id in started:
            polled = await http.get(f"/workflow-runs/{run_id}")
            by_input.setdefault(label, []).append(_outcome(polled.json()))
    return {label: sorted(found, key=json.dumps) for label, found in by_input.items()}, files


@pytest.mark.anyio
async def test_outcomes_do_not_depend_on_arrival_order() -> None:
    forward = list(range(len(_ORDER_INPUTS)))
    backward = forward[::-1]
    shuffled = forward[1::2] + forward[::2]
    first, first_files = await _outcomes_by_input(7, forward, gap=1.5)
    second, second_files = await _outcomes_by_input(7, backward, gap=0.0)
    third, _ = await _outcomes_by_input(7, shuffled, gap=0.25)
    # The uploads got other file ids in each order, so the plans really come from the contents.
    assert first_files["claim-a"] != second_files["claim-a"]
    assert first == second == third
    # The sample exercises the random draws: flaky runs both fail and complete, the two
    # identical inputs got plans of their own, nested runs were planned.
    flaky = [first[f"flaky-{n}"][0]["status"] for n in range(12)]
    assert {"COMPLETED", "FAILED"} <= set(flaky)
    dup_a, dup_b = first["dup"]
    assert dup_a["id"] != dup_b["id"]
    assert dup_a["durationMs"] != dup_b["durationMs"]
    [batch] = first["batch"]
    assert [len(step["nested"]) for step in batch["steps"]] == [0, 2, 0]
    assert [len(review["steps"][1]["nested"]) for review in batch["steps"][1]["nested"]] == [1, 1]


@pytest.mark.anyio
async def test_another_seed_changes_the_outcomes() -> None:
    order = list(range(len(_ORDER_INPUTS)))
    seven, _ = await _outcomes_by_input(7, order, gap=0.0)
    eight, _ = await _outcomes_by_input(8, order, gap=0.0)
    for label in ("lab-0", "lab-1", "lab-2", "lab-3", "wait", "claim-a"):
        [a], [b] = seven[label], eight[label]
        assert a["id"] != b["id"], label
        assert a["durationMs"] != b["durationMs"], label
        if label != "wait":  # variable-duration echoes its input
            assert a["steps"][0]["output"] != b["steps"][0]["output"], label
    flaky = [seven[f"flaky-{n}"][0]["status"] for n in range(12)]
    assert flaky != [eight[f"flaky-{n}"][0]["status"] for n in range(12)]


def test_plan_key_ignores_key_order_and_counts_identical_inputs() -> None:
    one = Simulator(seed=4, speed=None)
    first = one.start_run("flaky-loader", {"x": 1, "y": {"b": 2, "a": [1, "z"]}})
    again = one.start_run("flaky-loader", {"y": {"a": [1, "z"], "b": 2}, "x": 1})
    other_workflow = one.start_run("daily-lab-loader", {"x": 1, "y": {"b": 2, "a": [1, "z"]}})
    assert len({first, again, other_workflow}) == 3  # a second identical run is a new run

    two = Simulator(seed=4, speed=None)
    two.start_run("flaky-loader", {"unrelated": True})
    assert two.start_run("flaky-loader", {"y": {"b": 2, "a": [1, "z"]}, "x": 1}) == first
    assert two.start_run("flaky-loader", {"x": 1, "y": {"a": [1, "z"], "b": 2}}) == again
    one.clock.advance(600)
    two.clock.advance(600)
    for run_id in (first, again):
        assert _outcome(one.run_model(run_id)) == _outcome(two.run_model(run_id))
