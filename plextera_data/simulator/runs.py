"""Simulated runs: planned once when created, rendered as the vendor's run model at any time.

A run's whole life (when each step starts and ends, how it ends, its outputs, its nested runs) is
decided when the run is created, from the seed and the run's *plan key*, and never from the order in
which runs arrived. The JSON a GET returns is then a pure function of the plan and the simulated
time, so it is deterministic.

The plan key of a top-level run is ``(workflow id, input digest, occurrence)``:

- the input digest (:func:`input_digest`) is a SHA-256 of the input as canonical JSON (object keys
  sorted, so key order does not matter). Multipart starts are digested the same way, their text
  fields and JSON parts as they are, and each uploaded file by the SHA-256 of its bytes instead of
  its File Service id (which follows arrival order). The file's name, media type and size stay in.
- the occurrence counts earlier runs of the same workflow with the same digest: the first gets 0,
  the next 1, and so on. Identical inputs therefore get *different* plans, as independent runs of a
  real service would (a flaky step can fail for one and not the other), and the set of plans they
  get does not depend on arrival order. Which of several identical requests gets which occurrence
  does follow arrival order: the server cannot tell them apart, and neither can a caller.

A nested run's key is its parent's key, the step id and its index within the step. The creation
time (``createdAt``) is still the simulated time of arrival; everything else is relative to it.

Input flags under ``"simulate"`` force outcomes (JSON body, or a multipart JSON part):

- ``{"fail": true}``: the run fails at step ``failStep`` (1-based, default the last step) with
  ``failMessage`` (default: the step's failure message) and error code ``failCode``.
- ``{"close": true}``: the run ends ``CLOSED`` after ``closeAfterStep`` completed steps (default:
  all but the last).
- ``{"durationSeconds": x}``: the steps' durations are scaled to add up to ``x`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from plextera_data.simulator.clock import format_time
from plextera_data.simulator.files import Document, StoredFile, file_reference
from plextera_data.simulator.ids import hex_id
from plextera_data.simulator.workflows import Input, NestedSpec, StepSpec, Workflow

__all__ = ["FILE_NOT_FOUND", "Planner", "RunRecord", "StepPlan", "input_digest", "plan_key"]

SIMULATED_FAILURE = "Simulated failure requested by the input."

#: The run error of a step whose document names a file the File Service does not hold.
FILE_NOT_FOUND = "FILE_NOT_FOUND"


@dataclass
class StepPlan:
    """When one step runs and how it ends. ``start is None``: the run ended before this step."""

    index: int
    id: str
    name: str
    type: str
    start: datetime | None = None
    end: datetime | None = None
    status: str = "COMPLETED"
    output: Any = None
    message: str | None = None
    nested: list[RunRecord] = field(default_factory=list)

    @property
    def executed(self) -> bool:
        return self.start is not None


@dataclass
class RunRecord:
    """One simulated run (top-level or nested) with its planned life.

    ``input`` is the JSON body, or the multipart fields with file nodes. ``status`` is the
    terminal status it will reach at ``finished_at``.
    """

    id: str
    workflow_id: str
    workflow_name: str
    input: dict[str, Any]
    created_at: datetime
    started_at: datetime
    finished_at: datetime
    status: str
    error: dict[str, str] | None
    steps: list[StepPlan]
    studio_duration_ms: int
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    depth: int = 0

    def visible(self, now: datetime) -> bool:
        """True once the run exists (nested runs appear when their parent step starts)."""
        return now >= self.created_at

    def status_at(self, now: datetime) -> str:
        """``PROCESSING`` until :attr:`finished_at`, then the terminal status."""
        return self.status if now >= self.finished_at else "PROCESSING"

    def is_terminal_at(self, now: datetime) -> bool:
        return now >= self.finished_at

    def render(self, now: datetime) -> dict[str, Any]:
        """The run model (GET /workflow-runs/{id}) as it stands at simulated time ``now``."""
        terminal = now >= self.finished_at
        moments = [self.created_at, self.started_at, self.finished_at]
        steps: list[dict[str, Any]] = []
        completed = 0
        for step in self.steps:
            if not step.executed and terminal:
                continue  # a finished run lists the steps it executed (vendor's failed example)
            rendered = _render_step(step, now)
            if rendered["status"] == "COMPLETED":
                completed += 1
            steps.append(rendered)
            if step.start is not None and step.end is not None:
                moments.extend((step.start, step.end))
        model: dict[str, Any] = {
            "id": self.id,
            "status": self.status_at(now),
            "workflow": {"id": self.workflow_id, "name": self.workflow_name},
            "createdAt": format_time(self.created_at),
            "updatedAt": format_time(max(m for m in moments if m <= now)),
        }
        if now >= self.started_at:
            model["startedAt"] = format_time(self.started_at)
        if terminal:
            model["completedAt"] = format_time(self.finished_at)
            if self.error is not None:
                model["error"] = dict(self.error)
        model["progress"] = {"stepsCompleted": completed, "stepsTotal": len(self.steps)}
        if terminal:
            model["durationMs"] = self.studio_duration_ms
            model["computedDurationMs"] = _ms(self.finished_at - self.started_at)
        else:
            model["durationMs"] = max(0, _ms(now - self.started_at))
        model["steps"] = steps
        return model


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _render_step(step: StepPlan, now: datetime) -> dict[str, Any]:
    if step.start is None or step.end is None or now < step.start:
        status = "QUEUED"
    elif now < step.end:
        status = "PROCESSING"
    else:
        status = step.status
    rendered: dict[str, Any] = {
        "id": step.id,
        "name": step.name,
        "type": step.type,
        "status": status,
    }
    if status == "FAILED" and step.message:
        rendered["message"] = step.message
    rendered["output"] = step.output if status == "COMPLETED" else None
    nested = [run.render(now) for run in step.nested if run.visible(now)]
    rendered["nestedRuns"] = {"count": len(nested), "data": nested}
    return rendered


def _simulate_flags(run_input: Mapping[str, Any]) -> Mapping[str, Any]:
    flags = run_input.get("simulate")
    return flags if isinstance(flags, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int_flag(value: Any, default: int) -> int:
    number = _number(value)
    return int(number) if number is not None else default


def _durations(
    workflow: Workflow,
    run_input: Mapping[str, Any],
    flags: Mapping[str, Any],
    step_rngs: list[random.Random],
) -> list[float]:
    """Each step's planned seconds, scaled to ``durationSeconds`` when the input asks, in whole
    milliseconds (so the planned times equal the rendered timestamps)."""
    durations = [
        spec.duration_for(run_input, step_rngs[i]) for i, spec in enumerate(workflow.steps)
    ]
    wanted = _number(flags.get("durationSeconds"))
    if wanted is not None and wanted >= 0 and sum(durations) > 0:
        scale = wanted / sum(durations)
        durations = [d * scale for d in durations]
    return [round(d, 3) for d in durations]


def _forced_failure(flags: Mapping[str, Any], spec: StepSpec) -> dict[str, str]:
    """The error the ``simulate`` flags ask for at this step."""
    message = str(flags.get("failMessage") or spec.fail_message or SIMULATED_FAILURE)
    return {"code": str(flags.get("failCode") or spec.fail_code), "message": message}


def _canonical(value: Any, file_digests: Mapping[str, str]) -> Any:
    """``value`` as plain JSON with sorted string keys, stored file ids swapped for their digest."""
    if isinstance(value, Mapping):
        items = ((str(key), _canonical(item, file_digests)) for key, item in value.items())
        return dict(sorted(items))
    if isinstance(value, list | tuple):
        return [_canonical(item, file_digests) for item in value]
    if isinstance(value, str):
        digest = file_digests.get(value)
        return value if digest is None else f"sha256:{digest}"
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)  # start_run() takes any mapping; keep the digest defined


def input_digest(
    run_input: Mapping[str, Any], file_digests: Mapping[str, str] | None = None
) -> str:
    """SHA-256 (hex) of a run's input as canonical JSON, independent of key order.

    ``file_digests`` maps stored file ids to the SHA-256 of their bytes: a string equal to such an
    id (a multipart file node's ``id``, or a ``fileId`` sent in JSON) is digested as the file's
    content, so the same upload gives the same digest whatever id the File Service handed out.
    """
    canonical = _canonical(run_input, file_digests or {})
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_key(workflow_id: str, digest: str, occurrence: int) -> str:
    """The plan key of a top-level run: the ``occurrence``-th run of ``workflow_id`` with input
    ``digest`` (0 for the first)."""
    return json.dumps([workflow_id, digest, occurrence], ensure_ascii=False)


class Planner:
    """Plans runs of the registered workflows, deterministically from ``seed`` and a plan key.

    The same seed and key give the same plan, whatever the run id and whenever the run is created
    (times are relative to ``created_at``). Keys come from :func:`plan_key`.
    """

    def __init__(
        self,
        seed: int | str,
        workflows: Mapping[str, Workflow],
        find_file: Callable[[str], StoredFile | None] | None = None,
    ) -> None:
        self.seed = seed
        self.workflows = workflows
        self.find_file = find_file or (lambda file_id: None)

    def plan(
        self,
        workflow: Workflow,
        run_input: dict[str, Any],
        run_id: str,
        created_at: datetime,
        *,
        key: str,
        parent_run_id: str | None = None,
        parent_step_id: str | None = None,
        depth: int = 0,
    ) -> RunRecord:
        """Decide the whole life of one run (and, recursively, of its nested runs).

        ``key`` (see :func:`plan_key`) seeds every random draw; ``run_id`` only names the run
        (and its nested runs, whose ids derive from it).
        """
        if depth > 10:
            raise RecursionError(f"nested workflows more than 10 levels deep at {workflow.id!r}")
        rng = random.Random(f"{self.seed}:{key}")
        flags = _simulate_flags(run_input)
        n_steps = len(workflow.steps)
        fail_at = _int_flag(flags.get("failStep"), n_steps) - 1 if flags.get("fail") else None
        close_after = (
            _int_flag(flags.get("closeAfterStep"), max(0, n_steps - 1))
            if flags.get("close")
            else None
        )
        step_rngs = [random.Random(f"{self.seed}:{key}:{i}") for i in range(n_steps)]
        durations = _durations(workflow, run_input, flags, step_rngs)
        created_at = created_at.replace(microsecond=created_at.microsecond // 1000 * 1000)
        delay = round(workflow.start_delay_for(run_input, rng), 3)
        started_at = created_at + timedelta(seconds=delay)
        moment = started_at
        status = "COMPLETED"
        error: dict[str, str] | None = None
        steps = [
            StepPlan(index=i, id=f"step_{i + 1:02d}", name=spec.name, type=spec.type)
            for i, spec in enumerate(workflow.steps)
        ]
        for i, (spec, plan) in enumerate(zip(workflow.steps, steps, strict=True)):
            if close_after is not None and i >= close_after:
                status = "CLOSED"
                break
            plan.start = moment
            plan.end = moment + timedelta(seconds=durations[i])
            if spec.nested is not None:
                plan.nested = self._plan_nested(
                    spec.nested, run_input, step_rngs[i], run_id, plan, key, depth
                )
                if plan.nested:
                    last = max(child.finished_at for child in plan.nested)
                    plan.end = last + timedelta(seconds=durations[i])
            forced = _forced_failure(flags, spec) if fail_at == i else None
            error = self._settle(plan, spec, run_input, step_rngs[i], forced)
            moment = plan.end
            if error is not None:
                status = "FAILED"
                break
        return RunRecord(
            id=run_id,
            workflow_id=workflow.id,
            workflow_name=workflow.name,
            input=run_input,
            created_at=created_at,
            started_at=started_at,
            finished_at=moment,
            status=status,
            error=error,
            steps=steps,
            studio_duration_ms=sum(round(durations[p.index] * 1000) for p in steps if p.executed),
            parent_run_id=parent_run_id,
            parent_step_id=parent_step_id,
            depth=depth,
        )

    def _plan_nested(
        self,
        nested: NestedSpec,
        run_input: Input,
        step_rng: random.Random,
        run_id: str,
        step: StepPlan,
        key: str,
        depth: int,
    ) -> list[RunRecord]:
        """The nested runs a step starts, all created when the step starts."""
        child_workflow = self.workflows.get(nested.workflow_id)
        if child_workflow is None:
            raise KeyError(
                f"step {step.name!r} nests unknown workflow {nested.workflow_id!r}; "
                "add it with Simulator.add_workflow"
            )
        assert step.start is not None
        return [
            self.plan(
                child_workflow,
                nested.input_for(run_input, k),
                hex_id(self.seed, run_id, step.id, k),
                step.start,
                key=json.dumps([key, step.id, k], ensure_ascii=False),
                parent_run_id=run_id,
                parent_step_id=step.id,
                depth=depth + 1,
            )
            for k in range(nested.count_for(run_input, step_rng))
        ]

    def _settle(
        self,
        plan: StepPlan,
        spec: StepSpec,
        run_input: Input,
        step_rng: random.Random,
        forced: dict[str, str] | None,
    ) -> dict[str, str] | None:
        """How an executed step ends: set its status, message and output; the run's ``error``
        if it failed. In order: a forced failure, a nested run that did not complete, the
        document it cannot open, the step's own failure rule."""
        failure = forced
        document: Document | None = None
        not_completed = sum(child.status != "COMPLETED" for child in plan.nested)
        if failure is None and not_completed:
            message = f"{not_completed} of {len(plan.nested)} nested runs did not complete."
            failure = {"code": spec.fail_code, "message": message}
        if failure is None and spec.document is not None:
            document, failure = self._open_document(spec, run_input)
        if failure is None:
            message_or_none = spec.failure_for(run_input, step_rng)
            if message_or_none is not None:
                failure = {"code": spec.fail_code, "message": message_or_none}
        if failure is not None:
            plan.status = "FAILED"
            plan.message = failure["message"]
            return failure
        plan.output = spec.output_for(run_input, step_rng, document)
        if plan.output is None and spec.nested is not None:
            plan.output = {
                "nestedRunIds": [child.id for child in plan.nested],
                "completed": len(plan.nested),
            }
        return None

    def _open_document(
        self, spec: StepSpec, run_input: Input
    ) -> tuple[Document | None, dict[str, str] | None]:
        """The document a step reads from its input, or why it cannot: no document under that
        name (the step's own failure), or a file id the File Service does not hold."""
        file_id = file_reference(run_input.get(spec.document or ""))
        if file_id is None:
            message = spec.fail_message or "The run's input holds no document."
            return None, {"code": spec.fail_code, "message": message}
        stored = self.find_file(file_id)
        if stored is None:
            message = f"File {file_id!r} was not found in this workspace."
            return None, {"code": FILE_NOT_FOUND, "message": message}
        return Document.open(stored), None

    def walk(self, record: RunRecord) -> list[RunRecord]:
        """``record`` and all its nested runs, depth first."""
        found = [record]
        for step in record.steps:
            for child in step.nested:
                found.extend(self.walk(child))
        return found
