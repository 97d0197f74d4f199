"""The sync Client against httpx.MockTransport: wire format, errors, retries, secrecy, loops."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

import plextera_data as px
from plextera_data import errors
from plextera_data.client import DEFAULT_BASE_URL, Client, encode_path_segment
from plextera_data.models import File
from plextera_data.retry import RetryPolicy

KEY = "sk_test_0123456789SECRETKEY"
BASE = "http://127.0.0.1/api/public/v1"
PREFIX = "/api/public/v1"


def run_json(run_id: str = "run_1", status: str = "PROCESSING", **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "status": status,
        "workflow": {"id": "daily-lab-loader", "name": "Daily Lab Loader"},
        **extra,
    }


def envelope(
    code: str, message: str = "msg", request_id: str = "req_1", **extra: Any
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "requestId": request_id, **extra}}


Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """A MockTransport that plays back answers in order (the last one repeats) and records."""

    def __init__(self, answers: Iterable[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for r in self.requests]


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make(
    *answers: Answer, retry: RetryPolicy | None = None, **kwargs: Any
) -> tuple[Client, Server, FakeSleep]:
    server = Server(answers)
    sleep = FakeSleep()
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("base_url", BASE)
    client = Client(
        transport=httpx.MockTransport(server.handler),
        retry=retry or RetryPolicy(jitter=0),
        sleep=sleep,
        **kwargs,
    )
    return client, server, sleep


def ok(status: str = "PROCESSING", code: int = 200, **extra: Any) -> httpx.Response:
    return httpx.Response(code, json=run_json(status=status, **extra))


def multipart_parts(request: httpx.Request, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into (headers, content) pairs (enough for these tests)."""
    match = re.search(r"boundary=([^;]+)", request.headers["content-type"])
    assert match
    boundary = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(boundary)[1:-1]:
        assert chunk.startswith(b"\r\n")
        assert chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        parts.append((headers, content))
    return parts


def assert_prints_ok(script: str) -> None:
    """Run ``script`` in a child interpreter (process-wide state stays there); it prints OK."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# --------------------------------------------------------------------------- configuration


def test_headers_on_every_request() -> None:
    client, server, _ = make(ok())
    client.get_run("run_1")
    request = server.requests[0]
    assert request.headers["authorization"] == f"api-key {KEY}"
    assert request.headers["accept"] == "application/json"
    assert re.fullmatch(r"plextera-data/\S+ httpx/\S+ python/\S+", request.headers["user-agent"])
    assert request.headers["user-agent"].startswith(f"plextera-data/{px.__version__} ")
    assert re.fullmatch(r"pxd_[0-9a-f]{32}", request.headers["x-request-id"])


def test_user_agent_suffix_and_given_request_id() -> None:
    client, server, _ = make(ok(), user_agent_suffix="my-notebook/2")
    client.get_run("run_1", request_id="my-id-7")
    assert server.requests[0].headers["x-request-id"] == "my-id-7"
    assert server.requests[0].headers["user-agent"].endswith(" my-notebook/2")


def test_every_call_gets_a_fresh_request_id() -> None:
    client, server, _ = make(ok())
    client.get_run("a")
    client.get_run("b")
    ids = {r.headers["x-request-id"] for r in server.requests}
    assert len(ids) == 2


def test_key_and_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXTERA_API_KEY", "sk_env_key")
    monkeypatch.setenv("PLEXTERA_BASE_URL", "http://localhost:8123/api/public/v1/")
    server = Server([ok()])
    client = Client(transport=httpx.MockTransport(server.handler))
    assert client.base_url == "http://localhost:8123/api/public/v1"
    client.get_run("r")
    assert server.requests[0].headers["authorization"] == "api-key sk_env_key"
    assert str(server.requests[0].url) == "http://localhost:8123/api/public/v1/workflow-runs/r"


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLEXTERA_BASE_URL", raising=False)
    assert (
        Client(api_key=KEY).base_url
        == DEFAULT_BASE_URL
        == ("https://api.plextera.com/api/public/v1")
    )


def test_missing_key_is_raised_at_the_first_call_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PLEXTERA_API_KEY", raising=False)
    server = Server([ok()])
    client = Client(base_url=BASE, transport=httpx.MockTransport(server.handler))  # no error
    assert "PLEXTERA_API_KEY" in repr(client)
    with pytest.raises(errors.MissingAPIKeyError, match="PLEXTERA_API_KEY"):
        client.get_run("r")
    assert server.requests == []
    monkeypatch.setenv("PLEXTERA_API_KEY", "sk_late")  # set after construction: picked up
    client.get_run("r")
    assert server.requests[0].headers["authorization"] == "api-key sk_late"


@pytest.mark.parametrize(
    "url",
    [
        "http://api.plextera.com/api/public/v1",
        "http://10.0.0.5/api",
        "http://127.example.com/api",
        "http://localhost.evil.com/api",
    ],
)
def test_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="http://"):
        Client(api_key=KEY, base_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/api/public/v1",
        "http://127.9.9.9/api",
        "http://[::1]:9000/api",
        "http://localhost:8000/api",
        "https://api.example.com/api/public/v1",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert Client(api_key=KEY, base_url=url).base_url == url


@pytest.mark.parametrize("url", ["ftp://host/x", "api.plextera.com", "https://"])
def test_invalid_base_url(url: str) -> None:
    with pytest.raises(errors.ConfigurationError):
        Client(api_key=KEY, base_url=url)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("workflow_id", "path"),
    [
        ("daily-lab-loader", "/workflows/daily-lab-loader/runs"),
        ("../admin", "/workflows/..%2Fadmin/runs"),
        ("..", "/workflows/%2E%2E/runs"),
        (".", "/workflows/%2E/runs"),
        ("a b/c?d#e%f", "/workflows/a%20b%2Fc%3Fd%23e%25f/runs"),
        ("é", "/workflows/%C3%A9/runs"),
    ],
)
def test_workflow_id_is_one_encoded_segment(workflow_id: str, path: str) -> None:
    client, server, _ = make(ok(code=202))
    client.start_run(workflow_id, json={})
    assert server.paths == [PREFIX + path]


@pytest.mark.parametrize(
    ("run_id", "path"),
    [("run_1", "/workflow-runs/run_1"), ("../../admin", "/workflow-runs/..%2F..%2Fadmin")],
)
def test_run_id_is_one_encoded_segment(run_id: str, path: str) -> None:
    client, server, _ = make(ok())
    client.get_run(run_id)
    assert server.paths == [PREFIX + path]


@pytest.mark.parametrize("bad", ["", None, 42])
def test_empty_or_non_string_ids_fail_before_any_request(bad: Any) -> None:
    client, server, _ = make(ok())
    with pytest.raises(errors.InvalidInputError, match="id"):
        client.get_run(bad)
    with pytest.raises(errors.InvalidInputError, match="workflow id"):
        client.start_run(bad, json={})
    assert server.requests == []


def test_encode_path_segment_examples() -> None:
    assert encode_path_segment("../admin") == "..%2Fadmin"
    assert encode_path_segment("...") == "..."  # not a dot segment


# --------------------------------------------------------------------------- starts


@pytest.mark.parametrize("code", [200, 201, 202])
def test_any_2xx_start_is_success(code: int) -> None:
    client, server, _ = make(ok(code=code))
    run = client.start_run("daily-lab-loader", json={"customerId": "customer-42"})
    assert run.id == "run_1"
    assert run.status == "PROCESSING"
    assert run.workflow_id == "daily-lab-loader"
    request = server.requests[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(server.bodies[0]) == {"customerId": "customer-42"}


def test_start_without_body_sends_an_empty_object() -> None:
    client, server, _ = make(ok(code=202))
    client.start_run("daily-lab-loader")
    assert json.loads(server.bodies[0]) == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"json": {"x": float("nan")}}, "JSON"),
        ({"json": {"x": object()}}, "JSON"),
        ({"json": [1, 2]}, "mapping"),
        ({"json": {"a": 1}, "fields": {"b": 2}}, "not both"),
        ({"fields": {"b": b"raw"}}, "files="),
        ({"fields": {"b": float("inf")}}, "JSON"),
        ({"fields": {"b": object()}}, "type object"),
        ({"fields": {"d": 1}, "files": {"d": b"x"}}, "same name"),
        ({"files": {"d": []}}, "empty"),
        ({"files": {"d": 3}}, "type int"),
        ({"files": {"d": ("name.pdf",)}}, "tuple"),
        ({"files": {"d": io.StringIO("text")}}, "text mode"),
    ],
)
def test_bad_start_input_fails_before_any_request(kwargs: dict[str, Any], match: str) -> None:
    client, server, _ = make(ok(code=202))
    with pytest.raises(errors.InvalidInputError, match=match):
        client.start_run("incoming-claim", **kwargs)
    assert server.requests == []


def test_missing_file_fails_before_any_request(tmp_path: Path) -> None:
    client, server, _ = make(ok(code=202))
    with pytest.raises(errors.InvalidInputError, match="no such file"):
        client.start_run("incoming-claim", files={"document": tmp_path / "nope.pdf"})
    assert server.requests == []


def test_multipart_wire_format(tmp_path: Path) -> None:
    pdf = tmp_path / "claim.pdf"
    pdf.write_bytes(b"%PDF-1.4 claim")
    other = tmp_path / "scan.png"
    other.write_bytes(b"\x89PNG")
    client, server, _ = make(ok(code=202))
    with other.open("rb") as handle:
        client.start_run(
            "incoming-claim",
            fields={
                "claimId": "claim-42",
                "payload": {"amount": 12.5, "tags": ["a"]},
                "metadata": ["x", 1],
                "missing": None,
                "count": 3,
                "flag": True,
            },
            files={
                "document": str(pdf),
                "attachments": [b"raw bytes", handle, ("notes.txt", b"hi", "text/x-notes")],
                "extra": ("data.csv", io.BytesIO(b"a,b\n1,2\n")),
            },
        )
    request = server.requests[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(request, server.bodies[0])
    seen = [
        (
            re.search(r'name="([^"]*)"', h["content-disposition"]).group(1),  # type: ignore[union-attr]
            (
                m.group(1)
                if (m := re.search(r'filename="([^"]*)"', h["content-disposition"]))
                else None
            ),
            h.get("content-type"),
            body,
        )
        for h, body in parts
    ]
    assert seen == [
        ("claimId", None, None, b"claim-42"),
        ("payload", None, "application/json", b'{"amount": 12.5, "tags": ["a"]}'),
        ("metadata", None, "application/json", b'["x", 1]'),
        ("missing", None, "application/json", b"null"),
        ("count", None, None, b"3"),
        ("flag", None, None, b"true"),
        ("document", "claim.pdf", "application/pdf", b"%PDF-1.4 claim"),
        ("attachments", "attachments", "application/octet-stream", b"raw bytes"),
        ("attachments", "scan.png", "image/png", b"\x89PNG"),
        ("attachments", "notes.txt", "text/x-notes", b"hi"),
        ("extra", "data.csv", "text/csv", b"a,b\n1,2\n"),
    ]


def test_multipart_numpy_scalars_are_sent_as_numbers() -> None:
    np = pytest.importorskip("numpy")
    client, server, _ = make(ok(code=202))
    client.start_run("incoming-claim", fields={"n": np.int64(7), "x": np.float64(0.5)})
    parts = multipart_parts(server.requests[0], server.bodies[0])
    assert [body for _, body in parts] == [b"7", b"0.5"]


def test_multipart_files_are_sent_whole_again_after_a_429(tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(b"%PDF whole file")
    limited = httpx.Response(429, headers={"Retry-After": "1"}, json=envelope("RATE_LIMITED"))
    client, server, sleep = make(limited, ok(code=202))
    stream = io.BytesIO(b"stream content")
    client.start_run("incoming-claim", files={"document": path, "other": ("o.bin", stream)})
    assert len(server.requests) == 2
    assert sleep.delays == [1.0]
    first, second = (
        multipart_parts(r, b) for r, b in zip(server.requests, server.bodies, strict=True)
    )
    assert (
        [b for _, b in first] == [b for _, b in second] == [b"%PDF whole file", b"stream content"]
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (405, errors.BadRequestError),
        (406, errors.BadRequestError),
        (413, errors.BadRequestError),
        (415, errors.BadRequestError),
        (422, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
    ],
)
def test_status_maps_to_error_class(status: int, cls: type[errors.APIStatusError]) -> None:
    answer = httpx.Response(
        status,
        json=envelope("SOME_CODE", "Something is off.", "req_vendor_9", retryable=False),
        headers={"X-Request-Id": "req_vendor_9"},
    )
    client, server, _ = make(answer, retry=RetryPolicy(max_retries=0))
    with pytest.raises(cls) as info:
        client.get_run("run_1")
    exc = info.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.code == "SOME_CODE"
    assert exc.vendor_message == "Something is off."
    assert exc.request_id == "req_vendor_9"
    assert exc.retryable is False
    assert exc.method == "GET"
    assert exc.path == "/workflow-runs/run_1"
    text = str(exc)
    assert f"HTTP {status} SOME_CODE: Something is off." in text
    assert "req_vendor_9" in text
    assert "/workflow-runs/run_1" in text
    assert len(server.requests) == 1


def test_validation_details_are_parsed() -> None:
    answer = httpx.Response(
        422,
        json=envelope(
            "VALIDATION_FAILED",
            "One or more request fields are invalid.",
            details=[{"field": "endpointUrl", "issue": "must not be blank"}, "junk"],
        ),
    )
    client, _, _ = make(answer)
    with pytest.raises(errors.BadRequestError) as info:
        client.start_run("w", json={})
    assert info.value.details == [errors.ErrorDetail("endpointUrl", "must not be blank")]
    assert "[endpointUrl: must not be blank]" in str(info.value)
    assert info.value.may_have_created is False


def test_error_without_envelope_keeps_our_request_id_and_the_text() -> None:
    client, server, _ = make(httpx.Response(404, text="<html>Not here</html>"))
    with pytest.raises(errors.NotFoundError) as info:
        client.get_run("r")
    assert info.value.request_id == server.requests[0].headers["x-request-id"]
    assert info.value.code is None
    assert "Not here" in str(info.value)


def test_echoed_request_id_header_is_used_without_an_envelope() -> None:
    answer = httpx.Response(403, json={}, headers={"X-Request-Id": "pxd_echoed"})
    client, _, _ = make(answer)
    with pytest.raises(errors.PermissionDeniedError) as info:
        client.get_run("r")
    assert info.value.request_id == "pxd_echoed"


def test_other_4xx_is_a_bad_request_and_3xx_is_not_followed() -> None:
    client, _, _ = make(httpx.Response(410, json={}))
    with pytest.raises(errors.BadRequestError):
        client.get_run("r")
    moved = httpx.Response(302, headers={"Location": "http://127.0.0.1/elsewhere"})
    client, server, _ = make(moved)
    with pytest.raises(errors.APIStatusError) as info:
        client.get_run("r")
    assert info.value.status_code == 302
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- retries: POST


def test_post_5xx_is_not_retried_and_may_have_created() -> None:
    client, server, sleep = make(httpx.Response(500, json=envelope("INTERNAL", retryable=True)))
    with pytest.raises(errors.ServerError) as info:
        client.start_run("w", json={})
    assert len(server.requests) == 1
    assert sleep.delays == []
    assert info.value.may_have_created is True


def test_post_429_is_retried_after_retry_after() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "3"}, json=envelope("RATE_LIMITED"))
    client, server, sleep = make(limited, limited, ok(code=202))
    run = client.start_run("w", json={"a": 1})
    assert run.id == "run_1"
    assert len(server.requests) == 3
    assert sleep.delays == [3.0, 3.0]
    ids = {r.headers["x-request-id"] for r in server.requests}
    assert len(ids) == 1  # one logical call, one id


def test_post_429_can_be_left_to_the_caller() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "3"}, json=envelope("RATE_LIMITED"))
    client, server, _ = make(limited, ok(code=202))
    with (
        pytest.warns(DeprecationWarning, match="retry=False"),
        pytest.raises(errors.RateLimitError) as info,
    ):
        client.start_run("w", json={}, retry_rate_limits=False)
    assert info.value.retry_after == 3.0
    assert info.value.may_have_created is False
    assert len(server.requests) == 1


def test_post_retry_after_is_capped() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "3600"}, json=envelope("RATE_LIMITED"))
    client, _, sleep = make(limited, ok(code=202), retry=RetryPolicy(max_retry_after=20, jitter=0))
    client.start_run("w", json={})
    assert sleep.delays == [20.0]


def test_post_connection_refused_is_retried() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    client, server, sleep = make(refused, refused, ok(code=202))
    assert client.start_run("w", json={}).id == "run_1"
    assert len(server.requests) == 3
    assert sleep.delays == [0.5, 1.0]


def test_post_connection_refused_every_time_gives_up() -> None:
    client, server, _ = make(httpx.ConnectError("refused"), retry=RetryPolicy(max_retries=2))
    with pytest.raises(errors.APIConnectionError) as info:
        client.start_run("w", json={})
    assert info.value.request_sent is False
    assert info.value.may_have_created is False
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("failure", "cls"),
    [
        (httpx.ReadError("connection reset"), errors.APIConnectionError),
        (httpx.RemoteProtocolError("server disconnected"), errors.APIConnectionError),
        (httpx.ReadTimeout("timed out"), errors.APITimeoutError),
        (httpx.WriteTimeout("timed out"), errors.APITimeoutError),
    ],
)
def test_post_failure_after_sending_is_not_retried(
    failure: Exception, cls: type[errors.APIConnectionError]
) -> None:
    client, server, _ = make(failure, ok(code=202))
    with pytest.raises(cls) as info:
        client.start_run("w", json={})
    assert type(info.value) is cls
    assert info.value.request_sent is True
    assert info.value.may_have_created is True
    assert len(server.requests) == 1


@pytest.mark.parametrize("failure", [httpx.ConnectTimeout("t"), httpx.PoolTimeout("t")])
def test_post_timeout_before_sending_is_retried(failure: Exception) -> None:
    client, server, _ = make(failure, ok(code=202))
    client.start_run("w", json={})
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(202, text="not json"),
        httpx.Response(202, json=["a", "list"]),
        httpx.Response(202, content=b""),
    ],
)
def test_post_malformed_success_is_not_retried(answer: httpx.Response) -> None:
    client, server, _ = make(answer, ok(code=202))
    with pytest.raises(errors.MalformedResponseError) as info:
        client.start_run("w", json={})
    assert info.value.status_code == 202
    assert info.value.may_have_created is True
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- retries: GET


def test_get_5xx_retried_with_backoff_until_success() -> None:
    failure = httpx.Response(503, json=envelope("UNAVAILABLE"))
    client, server, sleep = make(failure, failure, failure, ok(status="COMPLETED"))
    assert client.get_run("run_1").status == "COMPLETED"
    assert len(server.requests) == 4
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert len({r.headers["x-request-id"] for r in server.requests}) == 1


def test_get_gives_up_after_max_retries() -> None:
    client, server, sleep = make(httpx.Response(500, json=envelope("INTERNAL")))
    with pytest.raises(errors.ServerError):
        client.get_run("run_1")
    assert len(server.requests) == 5
    assert sleep.delays == [0.5, 1.0, 2.0, 4.0]


def test_get_429_with_http_date_retry_after() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, json={})
    client, server, sleep = make(limited, ok())
    client.get_run("r")
    assert len(server.requests) == 2
    assert sleep.delays == [0.0]  # a date in the past: retry at once


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, text="{truncated"),
        httpx.Response(409, json=envelope("CONFLICT", retryable=True)),
    ],
)
def test_get_transient_failures_are_retried(failure: Answer) -> None:
    client, server, _ = make(failure, ok())
    assert client.get_run("r").id == "run_1"
    assert len(server.requests) == 2


def test_get_retryable_false_conflict_is_not_retried() -> None:
    client, server, _ = make(httpx.Response(409, json=envelope("CONFLICT", retryable=False)), ok())
    with pytest.raises(errors.ConflictError):
        client.get_run("r")
    assert len(server.requests) == 1


def test_get_without_retry() -> None:
    client, server, _ = make(httpx.Response(503, json={}), ok())
    with pytest.raises(errors.ServerError):
        client.get_run("r", retry=False)
    assert len(server.requests) == 1


def test_retries_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    client, _, _ = make(httpx.Response(503, json={}), ok())
    with caplog.at_level(logging.DEBUG, logger="plextera_data"):
        client.get_run("r")
    retries = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(retries) == 1
    assert "Retrying GET /workflow-runs/r" in retries[0].getMessage()


# ----------------------------------------------------------------------- one attempt, zero waits


def rate_limited(retry_after: str = "0") -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": retry_after}, json=envelope("RATE_LIMITED"))


@pytest.mark.parametrize(
    "failure",
    [rate_limited(), httpx.ConnectError("refused"), httpx.ConnectTimeout("t")],
    ids=["429", "refused", "connect-timeout"],
)
def test_start_without_retry_is_exactly_one_attempt(failure: Answer) -> None:
    client, server, sleep = make(failure, ok(code=202))
    with pytest.raises(errors.APIError) as info:
        client.start_run("w", json={}, retry=False)
    assert info.value.may_have_created is False  # the kinds a start would otherwise retry
    assert len(server.requests) == 1
    assert sleep.delays == []


FILE_ANSWER = {"id": "file_1", "name": "a.pdf", "mimeType": "application/pdf", "sizeBytes": 4}

CALLS: dict[str, Callable[[Client], object]] = {
    "start json": lambda c: c.start_run("w", json={"a": 1}),
    "start multipart": lambda c: c.start_run("w", fields={"a": 1}, files={"d": b"%PDF"}),
    "get": lambda c: c.get_run("r"),
    "list": lambda c: c.list_runs(),
    "wait": lambda c: c.wait("r"),
    "upload": lambda c: c.upload_file(b"%PDF", name="a.pdf"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize(
    "failure", [rate_limited("1"), httpx.ConnectError("refused")], ids=["429", "refused"]
)
def test_max_retries_zero_is_one_attempt_on_every_path(
    call: Callable[[Client], object], failure: Answer
) -> None:
    client, server, sleep = make(failure, ok(), retry=RetryPolicy(max_retries=0))
    with pytest.raises(errors.APIError):
        call(client)
    assert len(server.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_retry_after_zero_is_honoured_as_zero_on_every_path(
    call: Callable[[Client], object],
) -> None:
    answer = httpx.Response(201, json={**run_json(status="COMPLETED"), **FILE_ANSWER})
    client, server, sleep = make(
        rate_limited("0"), answer, retry=RetryPolicy(initial_backoff=7.0, jitter=0)
    )
    call(client)
    assert len(server.requests) == 2
    assert sleep.delays == [0.0]  # not the 7 s backoff, not a 1 s floor


def test_retry_after_date_in_the_past_is_zero_on_a_start() -> None:
    client, server, sleep = make(
        rate_limited("Wed, 21 Oct 2015 07:28:00 GMT"),
        ok(code=202),
        retry=RetryPolicy(initial_backoff=7.0, jitter=0),
    )
    client.start_run("w", json={})
    assert len(server.requests) == 2
    assert sleep.delays == [0.0]


# --------------------------------------------------------------------------- prepared bodies


def test_start_sends_a_body_planned_from_rows_as_is() -> None:
    pd = pytest.importorskip("pandas")
    from plextera_data.rows import plan_requests

    frame = pd.DataFrame({"customerId": ["c-1"], "meta.n": [3]})
    (request,) = plan_requests(frame, "daily-lab-loader")
    kwargs = request.start_kwargs()
    client, server, _ = make(ok(code=202))
    client.start_run("daily-lab-loader", **kwargs)
    assert server.bodies[0] == kwargs["body"].content
    assert json.loads(server.bodies[0]) == {"customerId": "c-1", "meta": {"n": 3}}
    assert server.requests[0].headers["content-type"] == "application/json"


def test_body_and_json_together_are_refused() -> None:
    from plextera_data.bodies import RequestBody

    client, server, _ = make(ok(code=202))
    with pytest.raises(errors.InvalidInputError, match="not both"):
        client.start_run("w", json={"a": 1}, body=RequestBody.for_json({"b": 2}))
    with pytest.raises(errors.InvalidInputError, match="RequestBody"):
        client.start_run("w", body={"b": 2})  # type: ignore[arg-type]
    assert server.requests == []


# --------------------------------------------------------------------------- uploads


def test_upload_file_wire_format_and_typed_answer(tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(b"%PDF-1.4 claim")
    answer = {
        "id": "file_01JY7M4ZVX5R1P3M3Q0TA1S7ZM",
        "name": "claim.pdf",
        "mimeType": "application/pdf",
        "sizeBytes": 14,
        "createdAt": "2026-04-07T10:10:00.000Z",
        "brandNew": 1,
    }
    client, server, _ = make(httpx.Response(201, json=answer))
    uploaded = client.upload_file(path)
    assert isinstance(uploaded, File)
    assert (uploaded.id, uploaded.name, uploaded.mime_type, uploaded.size) == (
        "file_01JY7M4ZVX5R1P3M3Q0TA1S7ZM",
        "claim.pdf",
        "application/pdf",
        14,
    )
    assert uploaded.created_at is not None
    assert uploaded.created_at.year == 2026
    assert uploaded.raw == answer
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", PREFIX + "/files")
    ((headers, content),) = multipart_parts(request, server.bodies[0])
    assert headers["content-disposition"] == 'form-data; name="file"; filename="claim.pdf"'
    assert headers["content-type"] == "application/pdf"
    assert content == b"%PDF-1.4 claim"


def test_upload_names_and_types_bytes_and_streams() -> None:
    client, server, _ = make(httpx.Response(201, json=FILE_ANSWER))
    client.upload_file(b"plain bytes")
    client.upload_file(b"a,b\n", name="t.csv")
    client.upload_file(io.BytesIO(b"x"), name="n.bin", content_type="application/x-thing")
    seen = [
        multipart_parts(r, b)[0][0] for r, b in zip(server.requests, server.bodies, strict=True)
    ]
    assert [h["content-disposition"].split("; ", 2)[2] for h in seen] == [
        'filename="file"',
        'filename="t.csv"',
        'filename="n.bin"',
    ]
    assert [h["content-type"] for h in seen] == [
        "application/octet-stream",
        "text/csv",
        "application/x-thing",
    ]


def test_upload_is_retried_like_a_start() -> None:
    client, server, sleep = make(rate_limited("2"), httpx.Response(201, json=FILE_ANSWER))
    assert client.upload_file(b"%PDF").id == "file_1"
    assert len(server.requests) == 2
    assert sleep.delays == [2.0]
    assert len({r.headers["x-request-id"] for r in server.requests}) == 1
    for failure in (
        httpx.Response(500, json=envelope("INTERNAL", retryable=True)),
        httpx.ReadError("reset"),
        httpx.Response(201, text="{cut"),
    ):
        client, server, sleep = make(failure, httpx.Response(201, json=FILE_ANSWER))
        with pytest.raises(errors.APIError) as info:
            client.upload_file(b"%PDF")
        assert info.value.may_have_created is True
        assert len(server.requests) == 1
    client, server, _ = make(rate_limited("2"), httpx.Response(201, json=FILE_ANSWER))
    with pytest.raises(errors.RateLimitError):
        client.upload_file(b"%PDF", retry=False)
    assert len(server.requests) == 1


def test_upload_answer_without_an_id_is_malformed() -> None:
    client, _, _ = make(httpx.Response(201, json={"name": "a.pdf"}))
    with pytest.raises(errors.MalformedResponseError, match="no file id") as info:
        client.upload_file(b"%PDF")
    assert info.value.may_have_created is True


@pytest.mark.parametrize(
    ("file", "match"),
    [
        (b"MZ\x90\x00", "executable or script"),
        (("run.sh", b"echo hi"), "'.sh'"),
        (b"#!/bin/sh\n", "starts with b'#!'"),
        (io.StringIO("text"), "text mode"),
        (42, "type int"),
    ],
)
def test_upload_refuses_before_any_request(file: Any, match: str) -> None:
    client, server, _ = make(httpx.Response(201, json=FILE_ANSWER))
    with pytest.raises(errors.InvalidInputError, match=match):
        client.upload_file(file)
    assert server.requests == []


def test_upload_refuses_a_file_over_the_limit_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "scan.pdf"
    with big.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # sparse: 60 MB on paper, nothing written
    client, server, _ = make(httpx.Response(201, json=FILE_ANSWER))
    with pytest.raises(errors.InvalidInputError, match="over the File Service's limit"):
        client.upload_file(big)
    with pytest.raises(errors.InvalidInputError, match="over the File Service's limit"):
        client.start_run("w", files={"document": big})
    assert server.requests == []


# --------------------------------------------------------------------------- clock rate, faces


def test_clock_rate_is_configuration_not_read_from_answers() -> None:
    answer = httpx.Response(200, json=run_json(), headers={"X-Plextera-Simulator-Speed": "50"})
    client, _, _ = make(answer)
    client.get_run("r")
    assert client.clock_rate == client.aclient.clock_rate == 1.0
    fast, _, _ = make(answer, clock_rate=50)
    assert fast.clock_rate == 50.0
    for bad in (0, -1.0, float("inf"), float("nan"), "fast"):
        with pytest.raises(errors.ConfigurationError, match="clock_rate"):
            Client(api_key=KEY, base_url=BASE, clock_rate=bad)  # type: ignore[arg-type]


def test_client_from_async_shares_the_async_client() -> None:
    server = Server([ok()])
    aclient = px.AsyncClient(KEY, BASE, transport=httpx.MockTransport(server.handler))
    client = Client.from_async(aclient)
    assert client.aclient is aclient
    assert isinstance(client, Client)
    assert client.get_run("r").id == "run_1"
    assert client.base_url == BASE
    with pytest.raises(TypeError, match="no other argument"):
        Client(api_key=KEY, aclient=aclient)
    with pytest.raises(TypeError, match="AsyncClient"):
        Client(aclient=client)  # type: ignore[arg-type]
    client.close()


def test_importing_installs_no_log_filter_the_first_client_does() -> None:
    script = textwrap.dedent(
        """
        import logging
        import plextera_data as px

        names = ("plextera_data", "httpx", "httpcore")
        assert all(not logging.getLogger(n).filters for n in names), "installed at import"
        px.Client(api_key="sk_a"), px.AsyncClient(api_key="sk_b")
        assert all(len(logging.getLogger(n).filters) == 1 for n in names), "not idempotent"
        records = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        for name in names:
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).warning("Authorization: api-key %s", "sk_live_SECRET")
        assert len(records) == 3 and all("sk_live_SECRET" not in r for r in records), records
        assert all("api-key <redacted>" in r for r in records), records
        print("OK")
        """
    )
    assert_prints_ok(script)


# --------------------------------------------------------------------------- runs


def test_run_model_keeps_unknown_fields_and_statuses() -> None:
    answer = ok(
        status="ARCHIVING",
        brandNew={"x": 1},
        steps=[{"id": "s1", "type": "quantum_step", "status": "WARMING", "output": {"v": 1}}],
    )
    client, _, _ = make(answer)
    run = client.get_run("run_1")
    assert run.status == "ARCHIVING"
    assert not run.is_terminal
    assert run.raw["brandNew"] == {"x": 1}
    assert run.steps[0].type == "quantum_step"


def test_wait_polls_until_terminal_and_returns_failed_runs() -> None:
    client, server, sleep = make(ok("PROCESSING"), ok("QUEUED"), ok("SOMETHING_NEW"), ok("FAILED"))
    run = client.wait("run_1", timeout=None, poll_interval=2.5)
    assert run.status == "FAILED"
    assert len(server.requests) == 4
    assert sleep.delays == [2.5, 2.5, 2.5]


@pytest.mark.parametrize("terminal", ["COMPLETED", "FAILED", "CLOSED"])
def test_wait_stops_at_each_terminal_status(terminal: str) -> None:
    client, server, _ = make(ok("PROCESSING"), ok(terminal), ok("PROCESSING"))
    assert client.wait("run_1").status == terminal
    assert len(server.requests) == 2


def test_wait_times_out_on_the_clock() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    delays: list[float] = []
    server = Server([ok("PROCESSING")])
    client = Client(
        api_key=KEY,
        base_url=BASE,
        transport=httpx.MockTransport(server.handler),
        sleep=sleep,
        clock=lambda: now[0],
    )
    with pytest.raises(errors.WaitTimeoutError) as info:
        client.wait("run_1", timeout=10, poll_interval=4)
    assert delays == [4, 4, 2]
    assert len(server.requests) == 4
    exc = info.value
    assert isinstance(exc, errors.BatchTimeoutError)
    assert exc.run_id == "run_1"
    assert exc.last_run is not None
    assert exc.last_run.status == "PROCESSING"
    assert "run_1" in str(exc)
    assert "wait() again" in str(exc)


def test_wait_rejects_a_zero_interval() -> None:
    client, _, _ = make(ok())
    with pytest.raises(ValueError, match="poll_interval"):
        client.wait("r", poll_interval=0)


def test_list_runs() -> None:
    page = {
        "data": [run_json("a"), run_json("b", "COMPLETED"), "junk"],
        "pageInfo": {"page": 2, "size": 2, "totalItems": 7, "totalPages": 4},
    }
    client, server, _ = make(httpx.Response(200, json=page))
    result = client.list_runs(page=2, size=2, status="CLOSED")
    assert [r.id for r in result.runs] == ["a", "b"]
    assert (result.page, result.size, result.total_items, result.total_pages) == (2, 2, 7, 4)
    assert result.raw == page
    assert server.requests[0].url.path == PREFIX + "/workflow-runs"
    assert dict(server.requests[0].url.params) == {"page": "2", "size": "2", "status": "CLOSED"}


# --------------------------------------------------------------------------- secrecy


def test_repr_never_shows_the_key() -> None:
    client, _, _ = make(ok())
    for text in (repr(client), repr(client.aclient), str(client)):
        assert KEY not in text
        assert "<redacted>" in text
        assert BASE in text


def test_exception_text_never_holds_the_key(caplog: pytest.LogCaptureFixture) -> None:
    def leaky_connect(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused, headers were {request.headers['authorization']}")

    def leaky_read(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"reset, Authorization: {request.headers['authorization']}")

    echo = httpx.Response(
        400,
        json=envelope(
            "INVALID_REQUEST",
            f"Bad header api-key {KEY}",
            details=[{"field": "Authorization", "issue": f"{KEY} is malformed"}],
        ),
    )
    malformed = httpx.Response(200, text=f"oops {KEY}")
    for answer in (leaky_connect, leaky_read, echo, malformed):
        client, _, _ = make(answer, retry=RetryPolicy(max_retries=1, jitter=0))
        with caplog.at_level(logging.DEBUG), pytest.raises(errors.APIError) as info:
            client.start_run("w", json={})
        exc = info.value
        everything = " ".join(
            [str(exc), repr(exc), repr(getattr(exc, "body", "")), repr(exc.__cause__)]
        )
        assert KEY not in everything
        assert "<redacted>" in str(exc) or "<redacted>" in repr(getattr(exc, "body", ""))
    assert caplog.records  # retries were logged
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_log_filter_redacts_keys_logged_by_anyone(caplog: pytest.LogCaptureFixture) -> None:
    make(ok())  # the first client installs the filter

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("plextera_data").warning("sending Authorization: api-key %s", KEY)
        logging.getLogger("httpx").warning("header api-key %s", KEY)
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert "api-key <redacted>" in record.getMessage()


# --------------------------------------------------------------------------- loops


def test_sync_client_used_repeatedly_from_plain_code() -> None:
    client, server, _ = make(ok())
    for _ in range(5):
        assert client.get_run("r").id == "run_1"
    assert len(server.requests) == 5
    assert len(client.aclient._clients) == 1  # one private loop, one pool, reused


def test_sync_client_used_inside_running_loops() -> None:
    # nest-asyncio patches asyncio for the whole process: run it in a child interpreter.
    script = textwrap.dedent(
        """
        import asyncio, httpx, sys
        from plextera_data.client import Client

        def handler(request):
            return httpx.Response(200, json={"id": "r", "status": "COMPLETED"})

        client = Client(api_key="k", base_url="http://127.0.0.1/api",
                        transport=httpx.MockTransport(handler))
        assert not hasattr(asyncio, "_nest_patched"), "patched at import"
        assert client.get_run("r").status == "COMPLETED"    # plain code first
        assert not hasattr(asyncio, "_nest_patched"), "patched without a running loop"

        async def cell():
            # a Jupyter cell: sync calls while the kernel's loop runs
            return [client.get_run("r").id for _ in range(3)] + [client.wait("r").status]

        for _ in range(2):                     # two kernels / two loops one after the other
            assert asyncio.run(cell()) == ["r", "r", "r", "COMPLETED"]
        assert asyncio._nest_asyncio2          # the fork, not the archived original
        assert client.get_run("r").id == "r"   # plain code again afterwards
        client.close()
        print("OK")
        """
    )
    assert_prints_ok(script)


def test_closed_client_refuses_calls() -> None:
    client, _, _ = make(ok())
    with client:
        client.get_run("r")
    with pytest.raises(errors.ConfigurationError, match="closed"):
        client.get_run("r")


def test_sync_client_shared_by_threads() -> None:
    client, server, _ = make(ok())
    results: list[str | None] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(3):
            run = client.get_run("r")
            with lock:
                results.append(run.id)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["run_1"] * 18
    assert len(server.requests) == 18
