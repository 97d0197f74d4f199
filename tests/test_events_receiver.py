"""The event receiver: verify on the raw bytes, store, then 2xx; refuse and store nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import plextera_data as px
from plextera_data.events import EventStore, receiver
from plextera_data.simulator import Simulator

SECRET = "whsec_receiver_test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


@pytest.fixture
async def http(store: EventStore) -> AsyncIterator[httpx.AsyncClient]:
    app = receiver(SECRET, store=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://hooks.example.com"
    ) as client:
        yield client


def _delivery(
    run_id: str = "run_1",
    *,
    event_id: str = "evt_1",
    secret: str = SECRET,
    stamp: int | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[dict[str, str], bytes]:
    """A delivery signed independently with hmac, as the vendor documents."""
    body = json.dumps(
        {
            "eventId": event_id,
            "eventType": "workflow.run.completed",
            "occurredAt": "2026-04-07T10:12:30Z",
            "apiVersion": "v1",
            "data": data if data is not None else {"id": run_id, "status": "COMPLETED"},
        }
    ).encode()
    stamp = int(time.time()) if stamp is None else stamp
    mac = hmac.new(secret.encode(), b"%d." % stamp + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Plextera-Event-Id": event_id,
        "X-Plextera-Delivery-Id": f"dlv_{time.monotonic_ns()}",
        "X-Plextera-Signature": f"t={stamp},v1={mac}",
    }
    return headers, body


@pytest.mark.anyio
async def test_a_genuine_delivery_is_stored_then_acknowledged(
    http: httpx.AsyncClient, store: EventStore
) -> None:
    headers, body = _delivery()
    answer = await http.post("/hooks/plextera", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"eventId": "evt_1", "stored": True, "duplicate": False}
    assert "evt_1" in store  # committed before the answer
    again = await http.post("/anywhere", content=body, headers=_delivery()[0])
    assert again.status_code == 200  # a redelivery is acknowledged too, so the sender stops
    assert again.json()["duplicate"] is True
    assert len(store) == 1
    assert store.delivery_count("evt_1") == 2
    assert [run.id for run in store.runs()] == ["run_1"]


@pytest.mark.anyio
async def test_the_failed_event_with_run_id_is_accepted(
    http: httpx.AsyncClient, store: EventStore
) -> None:
    headers, body = _delivery(data={"runId": "run_9", "workflowId": "wf", "status": "FAILED"})
    assert (await http.post("/", content=body, headers=headers)).status_code == 200
    assert store.terminal_run("run_9") is not None


def _tampered() -> tuple[dict[str, str], bytes]:
    headers, body = _delivery()
    return headers, body.replace(b"COMPLETED", b"FAILED")


def _without(header: str) -> tuple[dict[str, str], bytes]:
    headers, body = _delivery()
    return {k: v for k, v in headers.items() if k != header}, body


def _header(value: str) -> tuple[dict[str, str], bytes]:
    headers, body = _delivery()
    return {**headers, "X-Plextera-Signature": value}, body


def _not_an_event() -> tuple[dict[str, str], bytes]:
    body = b'{"hello": "world"}'
    stamp = int(time.time())
    mac = hmac.new(SECRET.encode(), b"%d." % stamp + body, hashlib.sha256).hexdigest()
    return {"X-Plextera-Signature": f"t={stamp},v1={mac}"}, body


BAD = {
    "tampered": (_tampered, 401, "SIGNATURE_MISMATCH"),
    "wrong-secret": (lambda: _delivery(secret="other"), 401, "SIGNATURE_MISMATCH"),
    "no-signature": (lambda: _without("X-Plextera-Signature"), 401, "SIGNATURE_MISSING"),
    "malformed": (lambda: _header("v1=abc"), 401, "SIGNATURE_MALFORMED"),
    "stale": (lambda: _delivery(stamp=int(time.time()) - 3600), 401, "SIGNATURE_STALE"),
    "future": (lambda: _delivery(stamp=int(time.time()) + 3600), 401, "SIGNATURE_FUTURE"),
    "not-an-event": (_not_an_event, 400, "INVALID_EVENT"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(BAD))
async def test_bad_deliveries_get_a_4xx_and_nothing_is_stored(
    http: httpx.AsyncClient, store: EventStore, case: str
) -> None:
    make, status, code = BAD[case]
    headers, body = make()
    answer = await http.post("/", content=body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert len(store) == 0
    assert store.runs() == []


@pytest.mark.anyio
async def test_methods_and_sizes(store: EventStore) -> None:
    app = receiver(SECRET, store=store)
    app.max_body_bytes = 100
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://hooks.example.com"
    ) as http:
        got = await http.get("/")
        assert got.status_code == 405
        assert got.headers["allow"] == "POST"
        headers, body = _delivery()
        assert (await http.post("/", content=body, headers=headers)).status_code == 413
    assert len(store) == 0
    assert (app.received, app.refused, app.stored) == (2, 2, 0)


@pytest.mark.anyio
async def test_a_store_that_cannot_commit_answers_500_so_the_sender_retries(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path / "gone.db")
    app = receiver(SECRET, store=store)
    store.close()  # the store fails on the next write
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://hooks.example.com"
    ) as http:
        headers, body = _delivery()
        answer = await http.post("/", content=body, headers=headers)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "STORE_FAILED"
    assert app.stored == 0


def test_secret_rotation_and_an_empty_secret(store: EventStore) -> None:
    app = receiver(["whsec_old", SECRET], store=store)
    assert app.secrets == ["whsec_old", SECRET]
    with pytest.raises(ValueError, match="empty"):
        receiver("", store=store)


def test_serve_on_loopback_with_a_path_to_the_store(tmp_path: Path) -> None:
    path = tmp_path / "served.db"
    with px.events.serve(SECRET, store=path) as hook:
        assert hook.url == f"http://127.0.0.1:{hook.port}/"
        headers, body = _delivery()
        answer = httpx.post(hook.url + "hooks", content=body, headers=headers)
        assert answer.status_code == 200
        assert "evt_1" in hook.store
    with pytest.raises(httpx.ConnectError):
        httpx.post(hook.url, content=body, headers=headers)
    assert len(EventStore(path)) == 1


def test_simulator_deliveries_verify_against_the_receiver(store: EventStore) -> None:
    """The simulator signs with its own hmac; the receiver verifies with plextera_data.events."""
    sim = Simulator(seed=3, speed=None)
    run_id = sim.start_run("daily-lab-loader", {"x": 1})
    sim.clock.advance(60)
    headers, body = sim.event_for(run_id, SECRET)

    async def go() -> httpx.Response:
        app = receiver(SECRET, store=store)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://hooks.example.com"
        ) as http:
            return await http.post("/", content=body, headers=headers)

    assert asyncio.run(go()).status_code == 200
    assert store.terminal_run(run_id).raw == sim.run_model(run_id)  # type: ignore[union-attr]
