"""The run model: :class:`Run`, :class:`Step`, :class:`RunError`, and the terminal statuses.

Parsing is tolerant: unknown fields, statuses and step types are kept (``raw`` always holds the
JSON as received), missing fields become ``None``. The vendor's failed-event example names the run
``runId`` (with ``workflowId``) where the GET model says ``id``: both are accepted here, and this is
the one place that knows it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "Run",
    "RunError",
    "Step",
    "is_terminal",
    "parse_timestamp",
    "run_payload",
]

#: Statuses after which a run never changes (the vendor's reference: stop polling on these).
#: Any other status (``PROCESSING``, ``QUEUED`` or one we have never seen) means "not finished".
TERMINAL_STATUSES: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CLOSED"})

#: Terminal statuses that count as a failure for ``raise_on_failure`` and exit codes.
FAILURE_STATUSES: frozenset[str] = frozenset({"FAILED", "CLOSED"})


def is_terminal(status: str | None) -> bool:
    """True when ``status`` is one of :data:`TERMINAL_STATUSES`."""
    return status in TERMINAL_STATUSES


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string (``2024-01-15T09:30:00Z``) as an aware UTC datetime; else ``None``."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def run_payload(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run inside ``obj``: an event envelope (``{"eventType", "data": run}``) or a bare run."""
    data = obj.get("data")
    if isinstance(data, Mapping) and ("eventType" in obj or "eventId" in obj):
        return data
    return obj


@dataclass(frozen=True)
class RunError:
    """A failed run's ``error``: a processing failure, not an HTTP error."""

    code: str | None
    message: str | None

    @classmethod
    def from_dict(cls, data: Any) -> RunError | None:
        if not isinstance(data, Mapping):
            return None
        return cls(code=_str_or_none(data.get("code")), message=_str_or_none(data.get("message")))


@dataclass
class Step:
    """One executed step of a run, with its output and the nested runs it started."""

    id: str | None
    name: str | None
    type: str | None
    status: str | None
    message: str | None = None
    output: Any = None
    nested_run_count: int | None = None
    nested_runs: list[Run] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> Step:
        """Parse a step object; a non-object (the vendor's schema example shows ``[null]``) gives
        an empty step whose ``raw`` is empty."""
        if not isinstance(data, Mapping):
            return cls(id=None, name=None, type=None, status=None, raw={})
        nested = data.get("nestedRuns")
        count: int | None = None
        runs: list[Run] = []
        if isinstance(nested, Mapping):
            count = _int_or_none(nested.get("count"))
            items = nested.get("data")
            if isinstance(items, list):
                runs = [Run.from_dict(item) for item in items if isinstance(item, Mapping)]
        return cls(
            id=_str_or_none(data.get("id")),
            name=_str_or_none(data.get("name")),
            type=_str_or_none(data.get("type")),
            status=_str_or_none(data.get("status")),
            message=_str_or_none(data.get("message")),
            output=data.get("output"),
            nested_run_count=count,
            nested_runs=runs,
            raw=dict(data),
        )


@dataclass
class Run:
    """A workflow run as the API describes it (GET model, create answer, nested run or event).

    ``raw`` keeps the JSON exactly as received, including fields this version does not know.
    """

    id: str | None
    status: str | None
    workflow_id: str | None = None
    workflow_name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    steps_completed: int | None = None
    steps_total: int | None = None
    duration_ms: int | None = None
    computed_duration_ms: int | None = None
    error: RunError | None = None
    steps: list[Step] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        """Parse a run model, an event's ``data``, or a whole event envelope."""
        data = run_payload(data)
        workflow = data.get("workflow")
        workflow = workflow if isinstance(workflow, Mapping) else {}
        progress = data.get("progress")
        progress = progress if isinstance(progress, Mapping) else {}
        steps = data.get("steps")
        return cls(
            id=_str_or_none(data.get("id", data.get("runId"))),
            status=_str_or_none(data.get("status")),
            workflow_id=_str_or_none(workflow.get("id", data.get("workflowId"))),
            workflow_name=_str_or_none(workflow.get("name")),
            created_at=parse_timestamp(data.get("createdAt")),
            updated_at=parse_timestamp(data.get("updatedAt")),
            started_at=parse_timestamp(data.get("startedAt")),
            completed_at=parse_timestamp(data.get("completedAt")),
            steps_completed=_int_or_none(progress.get("stepsCompleted")),
            steps_total=_int_or_none(progress.get("stepsTotal")),
            duration_ms=_int_or_none(data.get("durationMs")),
            computed_duration_ms=_int_or_none(data.get("computedDurationMs")),
            error=RunError.from_dict(data.get("error")),
            steps=[Step.from_dict(step) for step in steps] if isinstance(steps, list) else [],
            raw=dict(data),
        )

    @property
    def is_terminal(self) -> bool:
        """True once the run is ``COMPLETED``, ``FAILED`` or ``CLOSED``."""
        return is_terminal(self.status)

    @property
    def failed(self) -> bool:
        """True when the run ended ``FAILED`` or ``CLOSED``."""
        return self.status in FAILURE_STATUSES

    @property
    def failed_step(self) -> Step | None:
        """The first step whose status is ``FAILED``, if any."""
        return next((step for step in self.steps if step.status == "FAILED"), None)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = (
            f"<b>Run</b> <code>{esc(str(self.id))}</code> &middot; "
            f"<b>{esc(str(self.status))}</b> &middot; workflow "
            f"<code>{esc(str(self.workflow_id))}</code>"
        )
        if self.workflow_name:
            head += f" ({esc(self.workflow_name)})"
        if self.error is not None:
            head += (
                f"<br>error <code>{esc(str(self.error.code))}</code>: "
                f"{esc(str(self.error.message))}"
            )
        rows = []
        for index, step in enumerate(self.steps):
            output = json.dumps(step.output, ensure_ascii=False, default=str)
            if len(output) > 120:
                output = output[:117] + "..."
            nested = "" if not step.nested_run_count else str(step.nested_run_count)
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{esc(str(cell))}</td>"
                    for cell in (
                        index,
                        step.id,
                        step.name,
                        step.type,
                        step.status,
                        nested,
                        step.message or "",
                        output,
                    )
                )
                + "</tr>"
            )
        if not rows:
            return f"<div>{head}</div>"
        header = "".join(
            f"<th>{name}</th>"
            for name in ("#", "id", "name", "type", "status", "nested", "message", "output")
        )
        return (
            f"<div>{head}<table><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )


# --------------------------------------------------------------------------- files


@dataclass
class File:
    """A file held by the File Service: the answer of ``POST /files`` (``client.upload_file``).

    ``id`` is what a workflow payload references (``{"document": {"fileId": file.id}}``);
    ``created_at`` is given by some deployments only. ``raw`` keeps the JSON as received.
    """

    id: str | None
    name: str | None
    mime_type: str | None
    size: int | None
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> File:
        """Parse the File Service's file JSON; missing fields become ``None``."""
        return cls(
            id=_str_or_none(data.get("id")),
            name=_str_or_none(data.get("name")),
            mime_type=_str_or_none(data.get("mimeType")),
            size=_int_or_none(data.get("sizeBytes")),
            created_at=parse_timestamp(data.get("createdAt")),
            raw=dict(data),
        )


__all__ += ["File"]
