"""The simulator delivers events to its subscriptions: headers, signature, retries, faults."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plextera_data._serving import BackgroundServer
from plextera_data.events import EventStore, parse_event, receiver
from plextera_data.simulator import DeliveryOptions, Simulator

SECRET = "whsec_delivery_test"
HOOK = "https://hooks.example.com/plextera"


class Endpoint:
    """An ASGI endpoint that records each delivery and answers from a script of statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes, float]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body, time.time()))
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _subscribe(sim: Simulator, url: str = HOOK, **extra: Any) -> dict[str, Any]:
    body = {
        "endpointUrl": url,
        "eventTypes": ["workflow.run.completed", "workflow.run.failed"],
        "signingSecret": SECRET,
        **extra,
    }

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=sim.transport(),
            base_url=sim.in_process_base_url,
            headers={"Authorization": f"api-key {sim.api_key}"},
        ) as http:
            return await http.post("/event-subscriptions", json=body)

    answer = asyncio.run(go())
    assert answer.status_code in (201, 422), answer.text
    created: dict[str, Any] = answer.json()
    return created


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def sim(endpoint: Endpoint) -> Iterator[Simulator]:
    with Simulator(
        seed=9, speed=None, delivery_transport=httpx.ASGITransport(app=endpoint)
    ) as simulator:
        yield simulator


def test_a_finished_run_is_delivered_as_documented(sim: Simulator, endpoint: Endpoint) -> None:
    subscription = _subscribe(sim)
    done = sim.start_run("variable-duration", {"durationSeconds": 30})
    failed = sim.start_run("daily-lab-loader", {"simulate": {"fail": True}})
    closed = sim.start_run("daily-lab-loader", {"simulate": {"close": True}})
    assert sim.deliveries.wait_idle(10)
    assert endpoint.received == []  # nothing has finished yet
    sim.clock.advance(3600)
    assert sim.deliveries.wait_idle(10)
    by_run = {parse_event(body).run.id: (headers, body) for headers, body, _ in endpoint.received}
    assert set(by_run) == {done, failed}  # CLOSED runs have no documented event
    assert closed not in by_run
    headers, body = by_run[done]
    stamp, v1 = (item.split("=", 1)[1] for item in headers["x-plextera-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert v1 == expected
    assert abs(int(stamp) - time.time()) < 60  # signed at wall time, when sent
    envelope = json.loads(body)
    assert headers["x-plextera-event-id"] == envelope["eventId"]
    assert headers["x-plextera-event-type"] == envelope["eventType"] == "workflow.run.completed"
    assert headers["x-plextera-event-occurred-at"] == envelope["occurredAt"]
    assert headers["x-plextera-api-version"] == envelope["apiVersion"] == "v1"
    assert headers["x-plextera-delivery-id"].startswith("dlv_")
    assert headers["content-type"] == "application/json"
    assert envelope["data"] == sim.run_model(done)
    assert json.loads(by_run[failed][1])["data"]["runId"] == failed  # the vendor's failed shape
    assert sim.stats.deliveries == 2
    assert sim.stats.events_acknowledged == 2
    [attempt, _] = sorted(sim.deliveries.log, key=lambda a: a.run_id != done)
    assert (attempt.subscription_id, attempt.attempt, attempt.status) == (
        subscription["id"],
        1,
        200,
    )


def test_non_2xx_is_retried_with_backoff_same_event_new_delivery_id(
    sim: Simulator, endpoint: Endpoint
) -> None:
    endpoint.statuses = [500, 429, 404]
    sim.deliveries.options = DeliveryOptions(backoff=2.0, max_backoff=5.0)
    _subscribe(sim)
    run_id = sim.start_run("variable-duration", {"durationSeconds": 10})
    sim.clock.advance(10)
    assert sim.deliveries.wait_idle(10)
    assert [a.status for a in sim.deliveries.log] == [500]
    sim.clock.advance(1.999)  # the retry is due 2 simulated seconds later
    assert sim.deliveries.wait_idle(10)
    assert len(sim.deliveries.log) == 1
    for step in (0.001, 4, 5):  # 2, 4, then capped at 5
        sim.clock.advance(step)
        assert sim.deliveries.wait_idle(10)
    log = sim.deliveries.log
    assert [a.status for a in log] == [500, 429, 404, 200]
    assert [a.attempt for a in log] == [1, 2, 3, 4]
    assert [(a.due - log[0].due).total_seconds() for a in log] == [0, 2, 6, 11]
    assert len({a.event_id for a in log}) == 1
    assert len({a.delivery_id for a in log}) == 4
    ids = [headers["x-plextera-event-id"] for headers, _, _ in endpoint.received]
    assert ids == [log[0].event_id] * 4
    assert {a.run_id for a in log} == {run_id}
    assert sim.stats.delivery_answers == {500: 1, 429: 1, 404: 1, 200: 1}


def test_attempts_run_out(sim: Simulator, endpoint: Endpoint) -> None:
    endpoint.statuses = [503] * 10
    sim.deliveries.options = DeliveryOptions(max_attempts=3, backoff=1)
    _subscribe(sim)
    sim.start_run("variable-duration", {"durationSeconds": 1})
    for _ in range(5):
        sim.clock.advance(10)
        assert sim.deliveries.wait_idle(10)
    assert len(endpoint.received) == 3
    assert sim.stats.events_abandoned == 1
    assert sim.stats.events_acknowledged == 0
    assert sim.deliveries.pending == 0


def test_filters_event_types_and_when_a_subscription_starts(
    sim: Simulator, endpoint: Endpoint
) -> None:
    early = sim.start_run("variable-duration", {"durationSeconds": 1})
    sim.clock.advance(5)  # finished before any subscription existed
    labs = _subscribe(sim, filters={"workflowId": "daily-lab-loader"})
    failures = _subscribe(sim, url=HOOK + "/failed", eventTypes=["workflow.run.failed"])
    lab = sim.start_run("daily-lab-loader", {"n": 1})
    bad_lab = sim.start_run("daily-lab-loader", {"simulate": {"fail": True}})
    other = sim.start_run("variable-duration", {"durationSeconds": 2, "simulate": {"fail": True}})
    sim.clock.advance(3600)
    assert sim.deliveries.wait_idle(10)
    got = Counter((a.subscription_id, a.run_id) for a in sim.deliveries.log)
    assert got == {
        (labs["id"], lab): 1,
        (labs["id"], bad_lab): 1,
        (failures["id"], bad_lab): 1,
        (failures["id"], other): 1,
    }
    assert early not in {a.run_id for a in sim.deliveries.log}


def test_a_deleted_subscription_gets_nothing_more(sim: Simulator, endpoint: Endpoint) -> None:
    subscription = _subscribe(sim)
    sim.start_run("variable-duration", {"durationSeconds": 1})
    assert sim.delete_subscription(subscription["id"])
    sim.clock.advance(60)
    assert sim.deliveries.wait_idle(10)
    assert endpoint.received == []


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/x", True),
        ("http://127.0.0.1:9/hook", True),
        ("http://localhost:8000/", True),
        ("http://[::1]:8000/", True),
        ("http://127.5.0.1/", True),
        ("http://example.com/hook", False),
        ("http://10.0.0.1/hook", False),
        ("ftp://127.0.0.1/", False),
    ],
)
def test_http_only_on_loopback(url: str, accepted: bool) -> None:
    with Simulator(seed=1, speed=None) as sim:
        created = _subscribe(sim, url=url)
    assert ("id" in created) is accepted, created
    if not accepted:
        [detail] = created["error"]["details"]
        assert detail["field"] == "endpointUrl"
        assert "loopback" in detail["issue"]


def test_duplicate_lost_and_out_of_order_deliveries_into_the_store(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    options = DeliveryOptions(duplicate=0.3, lost=0.2, jitter=120)
    with Simulator(
        seed=4,
        speed=None,
        deliveries=options,
        delivery_transport=httpx.ASGITransport(app=receiver(SECRET, store=store)),
    ) as sim:
        _subscribe(sim)
        runs = [
            sim.start_run("variable-duration", {"durationSeconds": 1 + n * 0.5}) for n in range(300)
        ]
        for _ in range(16):  # the last run ends at 151 s, its event up to 120 s later, and so on
            sim.clock.advance(30)
            assert sim.deliveries.wait_idle(20)
        stats = sim.stats
        acknowledged = sim.deliveries.acknowledged()
    assert stats.events_lost + stats.events_acknowledged == 300
    assert 30 < stats.events_lost < 90
    assert 50 < stats.events_duplicated < 130
    assert stats.deliveries == stats.events_acknowledged + stats.events_duplicated
    assert {event.event_id for event in store} == acknowledged  # stored once each, none lost
    assert len(store) == stats.events_acknowledged
    assert sum(store.delivery_count(e) for e in acknowledged) == stats.deliveries
    arrived = [event.occurred_at for event in store]
    assert arrived != sorted(arrived)  # out of order
    assert {run.id for run in store.runs()} <= set(runs)


def test_delivery_faults_follow_the_seed_not_the_order(endpoint: Endpoint) -> None:
    def decisions(seed: int, reverse: bool) -> tuple[set[str], set[str]]:
        options = DeliveryOptions(duplicate=0.5, lost=0.3)
        transport = httpx.ASGITransport(app=Endpoint())
        with Simulator(
            seed=seed, speed=None, deliveries=options, delivery_transport=transport
        ) as sim:
            _subscribe(sim)
            inputs = [{"durationSeconds": 1, "n": n} for n in range(40)]
            for body in reversed(inputs) if reverse else inputs:
                sim.start_run("variable-duration", body)
            sim.clock.advance(5)
            assert sim.deliveries.wait_idle(10)
            sent = {a.run_id for a in sim.deliveries.log}
            twice = {a.run_id for a in sim.deliveries.log if a.duplicate}
        return sent, twice

    assert decisions(2, False) == decisions(2, True)
    assert decisions(2, False) != decisions(3, False)


def test_a_sped_up_simulator_delivers_sped_up(endpoint: Endpoint) -> None:
    arrived = threading.Event()

    class Waiting(Endpoint):
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            await super().__call__(scope, receive, send)
            arrived.set()

    hook = Waiting()
    with Simulator(seed=1, speed=1000, delivery_transport=httpx.ASGITransport(app=hook)) as sim:
        _subscribe(sim)
        started = time.time()
        run_id = sim.start_run("variable-duration", {"durationSeconds": 120})  # 0.12 s of wall
        assert arrived.wait(30)
        [(headers, _, when)] = hook.received
    assert headers["x-plextera-event-id"].startswith("evt_")
    assert 0.1 <= when - started < 30  # two simulated minutes, not two wall minutes
    assert sim.finished_at(run_id) is not None


def test_a_slow_endpoint_times_out_and_is_retried() -> None:
    calls = []

    async def slow_then_fast(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(2)  # longer than the delivery timeout
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    options = DeliveryOptions(timeout=0.3, backoff=1)
    with (
        BackgroundServer(slow_then_fast, name="slow-hook") as server,
        Simulator(seed=1, speed=None, deliveries=options) as sim,
    ):
        _subscribe(sim, url=server.origin + "/hook")
        sim.start_run("variable-duration", {"durationSeconds": 1})
        sim.clock.advance(1)
        assert sim.deliveries.wait_idle(10)
        sim.clock.advance(1)
        assert sim.deliveries.wait_idle(10)
        log = sim.deliveries.log
    assert [a.status for a in log] == [None, 204]
    assert "Timeout" in (log[0].error or "")
    assert sim.stats.delivery_answers == {"error": 1, 204: 1}
