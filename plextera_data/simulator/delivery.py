"""Webhook events of finished runs: what Plextera would POST, signed as the vendor documents.

The signature is computed here with :mod:`hmac`, independently of ``plextera_data.events``, so
that tests checking one against the other check something.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plextera_data.simulator.clock import format_time
from plextera_data.simulator.ids import ulid_like
from plextera_data.simulator.runs import RunRecord

__all__ = ["EVENT_STATUSES", "RunEvent", "delivery_headers", "run_event", "signature"]

#: Run statuses that have an event, and the event's type (no event is documented for CLOSED).
EVENT_STATUSES = {"COMPLETED": "workflow.run.completed", "FAILED": "workflow.run.failed"}


@dataclass(frozen=True)
class RunEvent:
    """The event of one finished run: its id (the same on every retry), type and body."""

    event_id: str
    event_type: str
    occurred_at: str
    run_id: str
    workflow_id: str
    body: bytes


def run_event(record: RunRecord, seed: int | str) -> RunEvent:
    """The event Plextera sends when ``record`` reaches its terminal status.

    ``workflow.run.completed`` carries the full run model; ``workflow.run.failed`` follows the
    vendor's example (``runId``, ``workflowId``, steps without ``output``). ``ValueError`` for a
    run that ends ``CLOSED`` (no documented event).
    """
    event_type = EVENT_STATUSES.get(record.status)
    if event_type is None:
        raise ValueError(
            f"run {record.id!r} ended {record.status}; Plextera documents events only for "
            "COMPLETED and FAILED runs"
        )
    model = record.render(record.finished_at)
    data = model if record.status == "COMPLETED" else _failed_event_data(model)
    occurred_at = format_time(record.finished_at)
    event_id = "evt_" + ulid_like(seed, "event", record.id, event_type)
    envelope = {
        "eventId": event_id,
        "eventType": event_type,
        "occurredAt": occurred_at,
        "apiVersion": "v1",
        "data": data,
    }
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return RunEvent(event_id, event_type, occurred_at, record.id, record.workflow_id, body)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` keyed with ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def delivery_headers(
    event: RunEvent, delivery_id: str, secret: str, timestamp: int
) -> dict[str, str]:
    """The headers of one delivery attempt of ``event``, signed at ``timestamp`` (unix s)."""
    return {
        "Content-Type": "application/json",
        "X-Plextera-Delivery-Id": delivery_id,
        "X-Plextera-Event-Id": event.event_id,
        "X-Plextera-Event-Type": event.event_type,
        "X-Plextera-Event-Occurred-At": event.occurred_at,
        "X-Plextera-Api-Version": "v1",
        "X-Plextera-Signature": signature(event.body, secret, timestamp),
    }


def _failed_event_data(model: Mapping[str, Any]) -> dict[str, Any]:
    """A FAILED run in the shape of the vendor's ``workflow.run.failed`` example."""
    data: dict[str, Any] = {
        "runId": model["id"],
        "workflowId": model["workflow"]["id"],
        "status": model["status"],
        "createdAt": model["createdAt"],
        "updatedAt": model["updatedAt"],
        "completedAt": model.get("completedAt"),
        "workflow": dict(model["workflow"]),
        "progress": dict(model["progress"]),
        "steps": [
            {key: value for key, value in step.items() if key != "output"}
            for step in model["steps"]
        ],
    }
    if "error" in model:
        data["error"] = dict(model["error"])
    return data
