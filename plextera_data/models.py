"""The run model: :class:`Run`, :class:`Step`, :class:`RunError`, and the terminal statuses.

Parsing is tolerant: unknown fields, statuses and step types are kept (``raw`` always holds the
JSON as received), missing fields become ``None``. The vendor's failed-event example names the run
``runId`` (with ``workflowId``) where the GET model says ``id``: both are accepted here.

This module is the one place that knows the run JSON's field names. Code that reads raw runs
without parsing them (:func:`~plextera_data.flatten.flatten`) goes through the accessors and field
sets below: :func:`run_id_of`, :func:`workflow_id_of`, :func:`run_parts`, :func:`step_parts`,
:func:`run_extras`, :func:`step_extras`, :data:`RUN_PARTS`, :data:`RUN_SCALAR_FIELDS`,
:data:`STEP_SCALAR_FIELDS`.

Parsing goes only as far as it is asked: :meth:`Run.from_dict` reads the run's own fields and
leaves its steps as JSON until :attr:`Run.steps` is first read.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

__all__ = [
    "RUN_FIELDS",
    "RUN_PARTS",
    "RUN_SCALAR_FIELDS",
    "STEP_FIELDS",
    "STEP_SCALAR_FIELDS",
    "SUBOBJECT_FIELDS",
    "TERMINAL_STATUSES",
    "Run",
    "RunError",
    "RunHead",
    "Step",
    "has_steps",
    "is_terminal",
    "parse_timestamp",
    "run_extras",
    "run_id_of",
    "run_parts",
    "run_payload",
    "step_extras",
    "step_parts",
    "workflow_id_of",
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
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


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


# -- the run model's JSON, field by field -------------------------------------------------------
# The only place that names the fields of the run JSON. `flatten` reads raw runs through these
# constants and accessors, so a field the vendor renames or adds is changed here once.

_RUN_ID, _RUN_ID_IN_EVENTS, _WORKFLOW_ID_IN_EVENTS = "id", "runId", "workflowId"
_WORKFLOW, _PROGRESS, _ERROR, _STEPS = "workflow", "progress", "error", "steps"
_OUTPUT, _NESTED_RUNS = "output", "nestedRuns"

#: The top-level fields of a run model that :class:`Run` reads as they are, by attribute.
RUN_SCALAR_FIELDS: dict[str, str] = {
    "status": "status",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "started_at": "startedAt",
    "completed_at": "completedAt",
    "duration_ms": "durationMs",
    "computed_duration_ms": "computedDurationMs",
}

#: The fields of a step object that :class:`Step` reads as they are, by attribute.
STEP_SCALAR_FIELDS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "type": "type",
    "status": "status",
    "message": "message",
}

#: The members of the run model's sub-objects that are read, by the field holding the object.
SUBOBJECT_FIELDS: dict[str, frozenset[str]] = {
    _WORKFLOW: frozenset({"id", "name"}),
    _PROGRESS: frozenset({"stepsCompleted", "stepsTotal"}),
    _ERROR: frozenset({"code", "message"}),
    _NESTED_RUNS: frozenset({"count", "data"}),
}

#: Every top-level field of a run model that is read; others are kept as extras.
RUN_FIELDS: frozenset[str] = frozenset(
    {_RUN_ID, _RUN_ID_IN_EVENTS, _WORKFLOW_ID_IN_EVENTS, _WORKFLOW, _PROGRESS, _ERROR, _STEPS}
    | set(RUN_SCALAR_FIELDS.values())
)

#: Every field of a step object that is read; others are kept as extras.
STEP_FIELDS: frozenset[str] = frozenset({_OUTPUT, _NESTED_RUNS} | set(STEP_SCALAR_FIELDS.values()))

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _object(value: Any) -> Mapping[str, Any]:
    """``value`` when it is an object, else an empty one (plain dicts tested first: checking
    against the ``Mapping`` ABC costs more than the rest of reading a step)."""
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return _EMPTY


def _is_object(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def run_payload(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run inside ``obj``: an event envelope (``{"eventType", "data": run}``) or a bare run."""
    data = obj.get("data")
    if isinstance(data, Mapping) and ("eventType" in obj or "eventId" in obj):
        return data
    return obj


def run_id_of(raw: Mapping[str, Any]) -> Any:
    """The run's id as given: ``id`` (the GET model) or ``runId`` (the failed event)."""
    run_id = raw.get(_RUN_ID)
    return raw.get(_RUN_ID_IN_EVENTS) if run_id is None else run_id


def workflow_id_of(raw: Mapping[str, Any]) -> Any:
    """The workflow's id as given: ``workflow.id`` (the GET model) or ``workflowId`` (events)."""
    workflow_id = _object(raw.get(_WORKFLOW)).get("id")
    return raw.get(_WORKFLOW_ID_IN_EVENTS) if workflow_id is None else workflow_id


_WORKFLOW_FIELDS = SUBOBJECT_FIELDS[_WORKFLOW]
_PROGRESS_FIELDS = SUBOBJECT_FIELDS[_PROGRESS]
_ERROR_FIELDS = SUBOBJECT_FIELDS[_ERROR]


def run_parts(raw: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of a run model as given (no conversion), in the order of :data:`RUN_PARTS`:
    ``(id, workflow id, workflow name, steps completed, steps total, error code, error message,
    steps, extras)`` and then the scalar fields of :data:`RUN_SCALAR_FIELDS`. ``steps`` is the
    list of step objects (``[]`` when the field is not a list); ``extras`` what is not read
    (:func:`run_extras`)."""
    # Written out for plain dicts (what json.loads gives): flatten reads every run through here.
    get = raw.get
    workflow, progress, error, steps = get(_WORKFLOW), get(_PROGRESS), get(_ERROR), get(_STEPS)
    whole = raw.keys() <= RUN_FIELDS
    if type(workflow) is dict:
        whole = whole and workflow.keys() <= _WORKFLOW_FIELDS
    else:
        whole = whole and workflow is None
        workflow = _object(workflow)
    if type(progress) is dict:
        whole = whole and progress.keys() <= _PROGRESS_FIELDS
    else:
        whole = whole and progress is None
        progress = _object(progress)
    if type(error) is dict:
        whole = whole and error.keys() <= _ERROR_FIELDS
    else:
        whole = whole and error is None
        error = _object(error)
    if type(steps) is not list and not isinstance(steps, list):
        whole = whole and steps is None
        steps = []
    run_id = get(_RUN_ID)
    workflow_id = workflow.get("id")
    return (
        get(_RUN_ID_IN_EVENTS) if run_id is None else run_id,
        get(_WORKFLOW_ID_IN_EVENTS) if workflow_id is None else workflow_id,
        workflow.get("name"),
        progress.get("stepsCompleted"),
        progress.get("stepsTotal"),
        error.get("code"),
        error.get("message"),
        steps,
        None if whole else run_extras(raw),
        get(_STATUS),
        get(_CREATED_AT),
        get(_UPDATED_AT),
        get(_STARTED_AT),
        get(_COMPLETED_AT),
        get(_DURATION_MS),
        get(_COMPUTED_DURATION_MS),
    )


#: What :func:`run_parts` gives, by position.
RUN_PARTS: tuple[str, ...] = (
    "id",
    "workflow_id",
    "workflow_name",
    "steps_completed",
    "steps_total",
    "error_code",
    "error_message",
    "steps",
    "extras",
    *RUN_SCALAR_FIELDS,
)
(
    _STATUS,
    _CREATED_AT,
    _UPDATED_AT,
    _STARTED_AT,
    _COMPLETED_AT,
    _DURATION_MS,
    _COMPUTED_DURATION_MS,
) = RUN_SCALAR_FIELDS.values()

_NESTED_RUN_FIELDS = SUBOBJECT_FIELDS[_NESTED_RUNS]
# Most steps start no nested run: they share this empty sequence (no list made per step).
_NO_RUNS: tuple[()] = ()


StepParts = tuple[
    tuple[Any, Any, Any, Any], Any, Any, Any, Sequence[Mapping[str, Any]], dict[str, Any] | None
]


def step_parts(step: Mapping[str, Any]) -> StepParts:
    """``((id, name, type, status), message, output, nested run count as declared, nested run
    objects listed, extras)`` of a step object, as given; ``extras`` is what is not read
    (:func:`step_extras`)."""
    get = step.get
    nested = get(_NESTED_RUNS)
    if type(nested) is dict:  # as the API sends it: the rest of the tests are skipped
        read_whole = nested.keys() <= _NESTED_RUN_FIELDS
    else:
        read_whole = nested is None
        nested = _object(nested)
    extras = None if read_whole and step.keys() <= STEP_FIELDS else step_extras(step)
    items = nested.get("data")
    children = (
        [item for item in items if type(item) is dict or isinstance(item, Mapping)]
        if type(items) is list and items
        else _NO_RUNS
    )
    return (
        (get(_STEP_ID), get(_STEP_NAME), get(_STEP_TYPE), get(_STEP_STATUS)),
        get(_STEP_MESSAGE),
        get(_OUTPUT),
        nested.get("count"),
        children,
        extras,
    )


_STEP_ID, _STEP_NAME, _STEP_TYPE, _STEP_STATUS, _STEP_MESSAGE = STEP_SCALAR_FIELDS.values()


def has_steps(raw: Mapping[str, Any]) -> bool:
    """True when the run model lists at least one step object (not only a summary of the run)."""
    steps = raw.get(_STEPS)
    return isinstance(steps, list) and any(_is_object(step) for step in steps)


def _unknown(value: Any, known: frozenset[str]) -> Any:
    """What in a sub-object is not read: its unknown members, or the value itself when it is not
    an object at all; ``None`` when everything is known."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return value
    if value.keys() <= known:
        return None
    return {key: item for key, item in value.items() if key not in known} or None


def _extras(
    raw: Mapping[str, Any], known: frozenset[str], objects: tuple[str, ...]
) -> dict[str, Any] | None:
    extra: dict[str, Any] | None = None
    if not raw.keys() <= known:
        extra = {key: value for key, value in raw.items() if key not in known}
    for name in objects:
        unknown = _unknown(raw.get(name), SUBOBJECT_FIELDS[name])
        if unknown is not None:
            extra = {} if extra is None else extra
            extra[name] = unknown
    return extra


_RUN_OBJECTS = (_WORKFLOW, _PROGRESS, _ERROR)
_STEP_OBJECTS = (_NESTED_RUNS,)


def run_extras(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parts of a run model that are not read: unknown fields, unknown members of
    ``workflow``/``progress``/``error`` (or the whole value when it is not an object), and
    ``steps`` when it is not a list; ``None`` when there are none."""
    extra = _extras(raw, RUN_FIELDS, _RUN_OBJECTS)
    steps = raw.get(_STEPS)
    if steps is not None and not isinstance(steps, list):
        extra = {} if extra is None else extra
        extra[_STEPS] = steps
    return extra


def step_extras(step: Mapping[str, Any]) -> dict[str, Any] | None:
    """The unknown fields of a step object (and unknown members of ``nestedRuns``), or ``None``."""
    return _extras(step, STEP_FIELDS, _STEP_OBJECTS)


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


_T = TypeVar("_T")


class _Parsed(Generic[_T]):
    """A list field parsed from its raw JSON on first access, then kept (a data descriptor).

    ``Run.from_dict`` stores the raw list; reading the attribute parses it once. Assigning a list
    (or passing one to the constructor) stores it as is. Equality, ``repr`` and
    :func:`dataclasses.replace` read the attribute, so they see parsed values.
    """

    def __init__(self, parse: Callable[[list[Any]], list[_T]]) -> None:
        self._parse = parse
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> tuple[()]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> list[_T]: ...
    def __get__(self, obj: object | None, owner: type) -> list[_T] | tuple[()]:
        if obj is None:
            return ()  # the dataclass default: an empty list per instance (see __set__)
        value = obj.__dict__[self._slot]
        if type(value) is _Raw:
            value = obj.__dict__[self._slot] = self._parse(value.items)
        return value

    def __set__(self, obj: object, value: list[_T] | tuple[()] | _Raw) -> None:
        obj.__dict__[self._slot] = [] if isinstance(value, tuple) else value


class _Raw:
    """Raw JSON items waiting for :class:`_Parsed` to parse them."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


def _parse_steps(items: list[Any]) -> list[Step]:
    return [Step.from_dict(item) for item in items]


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
        (step_id, name, kind, status), message, output, count, children, _ = step_parts(data)
        return cls(
            id=_str_or_none(step_id),
            name=_str_or_none(name),
            type=_str_or_none(kind),
            status=_str_or_none(status),
            message=_str_or_none(message),
            output=output,
            nested_run_count=_int_or_none(count),
            nested_runs=[Run.from_dict(child) for child in children],
            raw=dict(data),
        )


@dataclass
class Run:
    """A workflow run as the API describes it (GET model, create answer, nested run or event).

    ``raw`` keeps the JSON exactly as received, including fields this version does not know.
    ``steps`` are parsed from ``raw`` when first read.
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
    steps: _Parsed[Step] = _Parsed(_parse_steps)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        """Parse a run model, an event's ``data``, or a whole event envelope (steps: on first
        access of :attr:`steps`)."""
        data = run_payload(data)
        (
            run_id,
            workflow_id,
            workflow_name,
            done,
            total,
            _code,
            _message,
            steps,
            _extras,
            status,
            created,
            updated,
            started,
            completed,
            duration,
            computed_duration,
        ) = run_parts(data)
        return cls(
            id=_str_or_none(run_id),
            status=_str_or_none(status),
            workflow_id=_str_or_none(workflow_id),
            workflow_name=_str_or_none(workflow_name),
            created_at=parse_timestamp(created),
            updated_at=parse_timestamp(updated),
            started_at=parse_timestamp(started),
            completed_at=parse_timestamp(completed),
            steps_completed=_int_or_none(done),
            steps_total=_int_or_none(total),
            duration_ms=_int_or_none(duration),
            computed_duration_ms=_int_or_none(computed_duration),
            error=RunError.from_dict(data.get(_ERROR)),
            steps=_Raw(steps),
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


@dataclass(slots=True)
class RunHead:
    """A run answer read only as far as a start needs: the run's id, status and ``createdAt``.

    What :meth:`AsyncClient.start_run_head <plextera_data.client.AsyncClient.start_run_head>`
    returns: a batch's sender reads no more of a start's answer (its steps, progress and other
    times wait for the first poll). ``raw`` is the answer as received; :meth:`run` parses all
    of it.
    """

    id: str | None
    status: str | None
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunHead:
        """The head of a run model (or of an event's run, as :meth:`Run.from_dict` reads it)."""
        data = run_payload(data)
        get, fields = data.get, RUN_SCALAR_FIELDS
        return cls(
            id=_str_or_none(run_id_of(data)),
            status=_str_or_none(get(fields["status"])),
            created_at=parse_timestamp(get(fields["created_at"])),
            raw=data if type(data) is dict else dict(data),
        )

    def run(self) -> Run:
        """The whole answer as a :class:`Run`."""
        return Run.from_dict(self.raw)


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
