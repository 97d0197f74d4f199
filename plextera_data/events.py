"""Plextera webhook events: check the signature, parse the payload, drop duplicate deliveries.

A delivery is an HTTP POST whose body is ``{"eventId", "eventType", "occurredAt", "apiVersion",
"data"}`` and whose ``X-Plextera-Signature`` header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>">`` keyed with the subscription's signing secret.

    from plextera_data.events import EventDeduplicator, parse_event, verify_signature

    seen = EventDeduplicator()

    def handle(body: bytes, headers: Mapping[str, str]) -> None:
        verify_signature(body, headers["X-Plextera-Signature"], SECRET)   # raises SignatureError
        event = parse_event(body)
        if seen.is_new(event.event_id):
            store(event.run)

Verify on the raw bytes as received, before any JSON parsing: re-serialising changes the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plextera_data.errors import PlexteraError
from plextera_data.models import Run, parse_timestamp

__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "Event",
    "EventDeduplicator",
    "EventError",
    "SignatureError",
    "parse_event",
    "sign",
    "verify_signature",
]

#: The header carrying the delivery's signature.
SIGNATURE_HEADER = "X-Plextera-Signature"

#: Workflow event types (the vendor also sends ``document-insights.*`` events).
EVENT_TYPES = ("workflow.run.completed", "workflow.run.failed")

#: Default replay window in seconds; the vendor says only "a few minutes".
DEFAULT_TOLERANCE = 300.0


class EventError(PlexteraError, ValueError):
    """An event delivery cannot be used (unreadable payload, bad signature)."""


class SignatureError(EventError):
    """The delivery's ``X-Plextera-Signature`` is missing, malformed, stale or does not match.

    Answer such a delivery with a 4xx and do not process it.
    """


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _unix_seconds(moment: float | int | datetime) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("use a timezone-aware datetime for signature timestamps")
        return int(moment.timestamp())
    return int(moment)


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes | str, secret: str, timestamp: float | int | datetime | None = None) -> str:
    """The ``X-Plextera-Signature`` value for ``body``: ``t=<timestamp>,v1=<hex>``.

    ``timestamp`` is unix seconds or an aware datetime (default: now).

        sign(b'{"eventId": "evt_1"}', "whsec_test", 1775556750)
    """
    if not secret:
        raise ValueError("the signing secret must not be empty")
    stamp = _unix_seconds(time.time() if timestamp is None else timestamp)
    return f"t={stamp},v1={_digest(_as_bytes(body), secret, stamp)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    stamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            try:
                stamp = int(value)
            except ValueError:
                raise SignatureError(
                    f"{SIGNATURE_HEADER} has a non-numeric timestamp t={value!r}"
                ) from None
        elif key == "v1" and value:
            signatures.append(value.lower())
    if stamp is None:
        raise SignatureError(
            f"{SIGNATURE_HEADER} has no timestamp; expected 't=<unix seconds>,v1=<hex signature>'"
        )
    if not signatures:
        raise SignatureError(
            f"{SIGNATURE_HEADER} has no v1 signature; "
            "expected 't=<unix seconds>,v1=<hex signature>'"
        )
    return stamp, signatures


def verify_signature(
    body: bytes | str,
    header: str | None,
    secret: str | Iterable[str],
    *,
    tolerance: float | None = DEFAULT_TOLERANCE,
    now: float | int | datetime | None = None,
) -> None:
    """Check a delivery's signature; raise :class:`SignatureError` unless it is genuine and fresh.

    ``body``: the raw request body, unmodified. ``header``: the ``X-Plextera-Signature`` value.
    ``secret``: the subscription's signing secret, or several (while rotating secrets).
    ``tolerance``: the largest accepted gap in seconds between ``t`` and ``now`` (``None``: no
    replay check). The comparison runs in constant time.
    """
    if not header:
        raise SignatureError(f"the delivery has no {SIGNATURE_HEADER} header; it cannot be trusted")
    stamp, signatures = _parse_header(header)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("the signing secret must not be empty")
    if tolerance is not None:
        current = _unix_seconds(time.time() if now is None else now)
        age = current - stamp
        if abs(age) > tolerance:
            when = "old" if age > 0 else "in the future"
            raise SignatureError(
                f"the signature timestamp is {abs(age)} s {when}, beyond the {tolerance:g} s "
                "tolerance; this may be a replayed delivery (or the clocks disagree)"
            )
    raw = _as_bytes(body)
    for candidate in secrets:
        expected = _digest(raw, candidate, stamp)
        if any(hmac.compare_digest(expected, given) for given in signatures):
            return
    raise SignatureError(
        "the signature does not match the body: wrong signing secret, or the body was changed "
        "(verify the raw bytes as received, before parsing)"
    )


@dataclass(frozen=True)
class Event:
    """One webhook event. ``run`` is the parsed run (``data``); ``raw`` is the whole envelope."""

    event_id: str
    event_type: str
    occurred_at: datetime | None
    api_version: str | None
    run: Run
    raw: dict[str, Any] = field(repr=False)


def parse_event(payload: bytes | str | Mapping[str, Any]) -> Event:
    """Parse a delivery body (bytes, text or an already decoded dict) into an :class:`Event`.

    The run in ``data`` may be named ``id`` (GET model) or ``runId`` (the vendor's failed-event
    example); both are accepted. Unknown event types are kept, not rejected.
    """
    if isinstance(payload, Mapping):
        envelope: Any = dict(payload)
    else:
        try:
            envelope = json.loads(_as_bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EventError(f"the event body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise EventError("the event body must be a JSON object with eventId, eventType and data")
    event_id = envelope.get("eventId")
    event_type = envelope.get("eventType")
    data = envelope.get("data")
    missing = [
        name
        for name, value in (("eventId", event_id), ("eventType", event_type))
        if not isinstance(value, str) or not value
    ]
    if not isinstance(data, Mapping):
        missing.append("data")
    if missing:
        raise EventError(f"the event has no usable {', '.join(missing)}")
    api_version = envelope.get("apiVersion")
    return Event(
        event_id=str(event_id),
        event_type=str(event_type),
        occurred_at=parse_timestamp(envelope.get("occurredAt")),
        api_version=api_version if isinstance(api_version, str) else None,
        run=Run.from_dict(data),  # type: ignore[arg-type]
        raw=envelope,
    )


class EventDeduplicator:
    """Remembers event ids already handled, so a redelivered event is processed once.

    The vendor resends an event (same ``eventId``, new delivery id) until it gets a 2xx, and may
    deliver it twice in any case. ``max_size`` bounds memory (oldest ids are forgotten first);
    for restarts, persist the ids yourself.

        seen = EventDeduplicator()
        if seen.is_new(event.event_id):
            process(event)
    """

    def __init__(self, max_size: int | None = 100_000) -> None:
        self.max_size = max_size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def is_new(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (and remembers it); False afterwards."""
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        if self.max_size is not None and len(self._seen) > self.max_size:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)
