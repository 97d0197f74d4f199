"""Webhook events: signatures, parsing, deduplication, and the simulator's deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from vendor_examples import VENDOR_FAILED_EVENT

from plextera_data.errors import PlexteraError
from plextera_data.events import (
    Event,
    EventDeduplicator,
    EventError,
    FutureSignatureError,
    MalformedSignatureError,
    MissingSignatureError,
    SignatureError,
    SignatureMismatchError,
    StaleSignatureError,
    parse_event,
    sign,
    verify_signature,
)
from plextera_data.simulator import Simulator

SECRET = "whsec_test_secret"
T = 1_775_556_750  # 2026-04-07T10:12:30Z, the vendor's failed-event time

FAILED_EXAMPLE = VENDOR_FAILED_EVENT  # the vendor's workflow.run.failed example, exact


def test_sign_matches_the_documented_scheme() -> None:
    body = b'{"eventId":"evt_1"}'
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET, T) == f"t={T},v1={expected}"
    assert sign(body.decode(), SECRET, datetime.fromtimestamp(T, UTC)) == f"t={T},v1={expected}"


def _independent_header(body: bytes, secret: str, stamp: int) -> str:
    """The documented header, built here with hmac alone (not with the code under test)."""
    mac = hmac.new(secret.encode(), str(stamp).encode() + b"." + body, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


GOOD = b'{"eventId":"evt_9","x":1}'
GOOD_HEADER = _independent_header(GOOD, SECRET, T)


@pytest.mark.parametrize(
    ("body", "header", "now", "error", "reason"),
    [
        (GOOD.replace(b"1", b"2"), GOOD_HEADER, T, SignatureMismatchError, "mismatch"),
        (GOOD, _independent_header(GOOD, "wrong", T), T, SignatureMismatchError, "mismatch"),
        (GOOD, None, T, MissingSignatureError, "missing"),
        (GOOD, "", T, MissingSignatureError, "missing"),
        (GOOD, "sha256=abc", T, MalformedSignatureError, "malformed"),
        (GOOD, f"t={T}", T, MalformedSignatureError, "malformed"),
        (GOOD, "t=soon,v1=ab", T, MalformedSignatureError, "malformed"),
        (GOOD, GOOD_HEADER, T + 301, StaleSignatureError, "stale"),
        (GOOD, GOOD_HEADER, T - 301, FutureSignatureError, "future"),
    ],
    ids=["tampered", "wrong-secret", "missing", "empty", "malformed", "no-v1", "bad-t", "stale",
         "future"],
)  # fmt: skip
def test_each_bad_delivery_has_its_own_error(
    body: bytes, header: str | None, now: int, error: type[SignatureError], reason: str
) -> None:
    verify_signature(GOOD, GOOD_HEADER, SECRET, now=T)  # the independent vector verifies
    with pytest.raises(error) as caught:
        verify_signature(body, header, SECRET, now=now)
    assert caught.value.reason == reason
    others = {MissingSignatureError, MalformedSignatureError, StaleSignatureError,
              FutureSignatureError, SignatureMismatchError} - {error}  # fmt: skip
    assert not isinstance(caught.value, tuple(others))


def test_round_trip_and_tampering() -> None:
    body = json.dumps(FAILED_EXAMPLE).encode()
    header = sign(body, SECRET, T)
    verify_signature(body, header, SECRET, now=T + 10)
    verify_signature(body, header.replace(",", ", "), SECRET, now=T)  # a space after the comma

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(body.replace(b"FAILED", b"COMPLETED"), header, SECRET, now=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(body, header, "another secret", now=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(body, header.replace(f"t={T}", f"t={T + 1}"), SECRET, now=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(json.dumps(json.loads(body), indent=1), header, SECRET, now=T)


def test_replay_window() -> None:
    body = b"{}"
    header = sign(body, SECRET, T)
    with pytest.raises(SignatureError, match="301 s old"):
        verify_signature(body, header, SECRET, now=T + 301)
    with pytest.raises(SignatureError, match="in the future"):
        verify_signature(body, header, SECRET, now=T - 301)
    verify_signature(body, header, SECRET, now=T + 10_000, tolerance=None)
    verify_signature(body, header, SECRET, now=datetime.fromtimestamp(T + 300, UTC))


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "no X-Plextera-Signature header"),
        ("", "no X-Plextera-Signature header"),
        ("v1=abc", "no timestamp"),
        (f"t={T}", "no v1 signature"),
        ("t=yesterday,v1=abc", "non-numeric timestamp"),
        ("garbage", "no timestamp"),
    ],
)
def test_malformed_headers(header: str | None, match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        verify_signature(b"{}", header, SECRET, now=T)


def test_secret_rotation_and_errors_are_plextera_errors() -> None:
    body = b'{"a":1}'
    verify_signature(body, sign(body, "whsec_NEW", T), ["whsec_OLD", "whsec_NEW"], now=T)
    with pytest.raises(PlexteraError) as caught:
        verify_signature(body, sign(body, "whsec_X", T), ["whsec_OLD", "whsec_NEW"], now=T)
    assert "whsec" not in str(caught.value)  # secrets never appear in the message
    assert isinstance(caught.value, ValueError)


def test_parse_event_accepts_the_failed_example_with_run_id() -> None:
    event = parse_event(json.dumps(FAILED_EXAMPLE).encode())
    assert isinstance(event, Event)
    assert event.event_id == "evt_01JY7MWFFAIL00000000001"
    assert event.event_type == "workflow.run.failed"
    assert event.occurred_at == datetime(2026, 4, 7, 10, 12, 30, tzinfo=UTC)
    assert event.api_version == "v1"
    assert event.run.id == "69d224901610662a576cd7e6"
    assert event.run.workflow_id == "daily-correspondence-loader"
    assert event.run.error is not None
    assert event.run.error.code == "WORKFLOW_RUN_FAILED"
    assert event.run.failed_step is not None
    assert event.run.failed_step.message == "Client endpoint rejected the request."
    assert event.raw == FAILED_EXAMPLE
    same = parse_event(FAILED_EXAMPLE)
    assert same.run.id == event.run.id


def test_parse_event_accepts_id_and_unknown_types() -> None:
    event = parse_event(
        {"eventId": "evt_2", "eventType": "workflow.run.paused", "data": {"id": "r1", "x": 1}}
    )
    assert event.run.id == "r1"
    assert event.event_type == "workflow.run.paused"
    assert event.occurred_at is None
    assert event.run.raw == {"id": "r1", "x": 1}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        ({"eventType": "workflow.run.failed", "data": {}}, "eventId"),
        ({"eventId": "e", "eventType": "x", "data": []}, "data"),
    ],
)
def test_parse_event_rejects_unusable_payloads(
    payload: bytes | dict[str, object], match: str
) -> None:
    with pytest.raises(EventError, match=match):
        parse_event(payload)


def test_deduplicator() -> None:
    seen = EventDeduplicator(max_size=2)
    assert seen.is_new("a")
    assert not seen.is_new("a")
    assert seen.is_new("b")
    assert seen.is_new("c")  # forgets "a", the oldest
    assert "a" not in seen
    assert len(seen) == 2
    assert seen.is_new("a")


def test_simulator_completed_event_is_signed_and_carries_the_full_run() -> None:
    sim = Simulator(seed=4, speed=None)
    run_id = sim.start_run("daily-lab-loader", {"customerId": "c"})
    with pytest.raises(ValueError, match="PROCESSING"):
        sim.event_for(run_id, SECRET)
    sim.clock.advance(600)
    headers, body = sim.event_for(run_id, SECRET, timestamp=T)
    assert set(headers) >= {
        "X-Plextera-Delivery-Id",
        "X-Plextera-Event-Id",
        "X-Plextera-Event-Type",
        "X-Plextera-Event-Occurred-At",
        "X-Plextera-Api-Version",
        "X-Plextera-Signature",
    }
    verify_signature(body, headers["X-Plextera-Signature"], SECRET, now=T)
    event = parse_event(body)
    assert event.event_type == headers["X-Plextera-Event-Type"] == "workflow.run.completed"
    assert event.event_id == headers["X-Plextera-Event-Id"]
    assert event.raw["occurredAt"] == headers["X-Plextera-Event-Occurred-At"]
    assert event.api_version == headers["X-Plextera-Api-Version"] == "v1"
    assert event.raw["data"] == sim.run_model(run_id)
    assert event.occurred_at == sim.finished_at(run_id)

    again_headers, again_body = sim.event_for(run_id, SECRET, timestamp=T)
    assert again_headers["X-Plextera-Event-Id"] == headers["X-Plextera-Event-Id"]  # retry
    assert again_headers["X-Plextera-Delivery-Id"] != headers["X-Plextera-Delivery-Id"]
    seen = EventDeduplicator()
    assert [seen.is_new(parse_event(b).event_id) for b in (body, again_body)] == [True, False]
    with pytest.raises(SignatureError):
        verify_signature(body + b" ", headers["X-Plextera-Signature"], SECRET, now=T)


def test_simulator_failed_event_follows_the_vendor_example_shape() -> None:
    sim = Simulator(seed=4, speed=None)
    document = {"fileId": next(iter(sim.sample_files))}  # a file the workspace holds
    run_id = sim.start_run("incoming-claim", {"state": "ZZ", "document": document})
    closed = sim.start_run("daily-lab-loader", {"simulate": {"close": True}})
    sim.clock.advance(600)
    headers, body = sim.event_for(run_id, SECRET)  # signed at wall time: default checks pass
    verify_signature(body, headers["X-Plextera-Signature"], SECRET)
    envelope = json.loads(body)
    assert set(envelope) == set(FAILED_EXAMPLE)
    data = envelope["data"]
    assert set(data) == set(FAILED_EXAMPLE["data"])  # type: ignore[arg-type]
    assert data["runId"] == run_id
    assert data["workflowId"] == "incoming-claim"
    assert data["error"] == {
        "code": "WORKFLOW_RUN_FAILED",
        "message": "Client endpoint rejected the request.",
    }
    assert [s["status"] for s in data["steps"]] == ["COMPLETED", "FAILED"]
    assert all("output" not in step for step in data["steps"])
    assert parse_event(body).run.id == run_id
    with pytest.raises(ValueError, match="CLOSED"):
        sim.event_for(closed, SECRET)
