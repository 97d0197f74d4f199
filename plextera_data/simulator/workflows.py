"""Workflows defined in Python: steps with a type, a duration, an output, failure rules and nested
runs; plus the built-in workflows that reproduce the vendor page's examples.

Callables receive the run's input (the JSON body, or the multipart fields with file nodes) and a
``random.Random`` seeded from the simulator's seed and the run's plan key (workflow, input digest,
occurrence: see ``runs.plan_key``), so the same seed and inputs give the same runs, whatever order
the starts arrive in. Argument order: ``duration(rng, input)``, ``output(input, rng)`` (a step that
reads a document: ``output(input, rng, document)``), ``fail(input, rng)``,
``NestedSpec.count(input, rng)``, ``NestedSpec.input(parent_input, index)``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plextera_data.simulator.files import Document

__all__ = [
    "US_STATES",
    "NestedSpec",
    "StepSpec",
    "Workflow",
    "builtin_workflows",
]

Input = Mapping[str, Any]
DurationRule = float | Callable[[random.Random, Input], float]
OutputRule = Any  # a JSON constant or Callable[[Input, random.Random], Any]
FailRule = float | Callable[[Input, random.Random], "bool | str"]


@dataclass(frozen=True)
class NestedSpec:
    """A step that starts ``count`` nested runs of ``workflow_id`` and waits for them.

    ``count``: an int or ``callable(input, rng) -> int``. ``input``: ``callable(parent_input,
    index) -> dict`` giving each nested run's input (default ``{"parentInput": ..., "index": i}``).
    The step fails when any nested run does not complete.
    """

    workflow_id: str
    count: int | Callable[[Input, random.Random], int] = 1
    input: Callable[[Input, int], Mapping[str, Any]] | None = None

    def count_for(self, run_input: Input, rng: random.Random) -> int:
        value = self.count(run_input, rng) if callable(self.count) else self.count
        return max(0, int(value))

    def input_for(self, run_input: Input, index: int) -> dict[str, Any]:
        if self.input is None:
            return {"parentInput": dict(run_input), "index": index}
        return dict(self.input(run_input, index))


@dataclass(frozen=True)
class StepSpec:
    """One step of a workflow.

    ``duration``: seconds, or ``callable(rng, input) -> seconds``. ``output``: a JSON constant or
    ``callable(input, rng) -> JSON``, shown once the step completed. ``fail``: a probability, or
    ``callable(input, rng) -> bool | str`` (a string is the failure message). ``nested``: nested
    runs this step starts (its ``duration`` is then the time after the last nested run finished).
    ``document``: the input field holding the document this step opens (``{"fileId": ...}`` or a
    multipart file-node array). The step then fails with ``fail_code``/``fail_message`` when the
    input has none, and with ``FILE_NOT_FOUND`` when it names a file the File Service does not
    hold; its ``output`` callable gets the opened :class:`~plextera_data.simulator.files.Document`
    as a third argument.
    """

    name: str
    type: str
    duration: DurationRule = 1.0
    output: OutputRule = None
    fail: FailRule = 0.0
    fail_message: str = "The step failed."
    fail_code: str = "WORKFLOW_RUN_FAILED"
    nested: NestedSpec | None = None
    document: str | None = None

    def duration_for(self, run_input: Input, rng: random.Random) -> float:
        value = self.duration(rng, run_input) if callable(self.duration) else self.duration
        return max(0.0, float(value))

    def output_for(
        self, run_input: Input, rng: random.Random, document: Document | None = None
    ) -> Any:
        if callable(self.output):
            if self.document is not None:
                return self.output(run_input, rng, document)
            return self.output(run_input, rng)
        return _copy_json(self.output)

    def failure_for(self, run_input: Input, rng: random.Random) -> str | None:
        """The failure message if this step fails for this input, else ``None``."""
        if callable(self.fail):
            verdict = self.fail(run_input, rng)
            if isinstance(verdict, str):
                return verdict or None
            return self.fail_message if verdict else None
        if self.fail and rng.random() < float(self.fail):
            return self.fail_message
        return None


@dataclass(frozen=True)
class Workflow:
    """A workflow the simulator can run: an id (the path segment), a display name and its steps.

    ``start_delay``: simulated seconds between acceptance (``createdAt``) and ``startedAt``.
    """

    id: str
    name: str
    steps: Sequence[StepSpec] = field(default_factory=tuple)
    start_delay: DurationRule = 0.3

    def start_delay_for(self, run_input: Input, rng: random.Random) -> float:
        if callable(self.start_delay):
            return max(0.0, float(self.start_delay(rng, run_input)))
        return max(0.0, float(self.start_delay))


def _copy_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_json(item) for item in value]
    return value


def _uniform(low: float, high: float) -> Callable[[random.Random, Input], float]:
    def draw(rng: random.Random, run_input: Input) -> float:
        return rng.uniform(low, high)

    return draw


def _hex(rng: random.Random, length: int = 24) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


# --------------------------------------------------------------------------- daily-lab-loader


def _lab_result(run_input: Input, rng: random.Random) -> dict[str, Any]:
    return {"extractionId": _hex(rng), "fieldCount": rng.randint(1, 8)}


DAILY_LAB_LOADER = Workflow(
    id="daily-lab-loader",
    name="Daily Lab Loader",
    steps=(
        StepSpec(
            name="Extract Lab Result",
            type="document_insights",
            duration=_uniform(4.0, 16.0),
            output=_lab_result,
        ),
    ),
)

# --------------------------------------------------------------------------- incoming-claim

#: Two-letter codes ``incoming-claim`` routes; any other ``state`` makes its routing step fail.
_STATE_CODES = """
AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC
ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC
"""
US_STATES = frozenset(_STATE_CODES.split())


def _amount(text: str | None) -> float | None:
    """``USD 1,436.86`` -> ``1436.86``; ``None`` when there is no number."""
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", text or "")
    return float(match[0].replace(",", "")) if match else None


def _claim_fields(run_input: Input, rng: random.Random, document: Document) -> dict[str, Any]:
    """What the claim document says: its claim id, state and amount claimed (``None`` with
    confidence 0 where it says nothing, as for a scan without a text layer)."""
    said = document.fields()
    amount = _amount(said.get("Amount claimed"))
    confidence = round(rng.uniform(0.86, 0.99), 2)
    values = [
        ("claimId", said.get("Claim"), 0.99),
        ("state", said.get("State"), 0.97),
        ("amount", amount, confidence),
    ]
    return {
        "documentType": "claim",
        "pageCount": document.page_count,
        "fields": [
            {"name": name, "value": value, "confidence": score if value is not None else 0.0}
            for name, value, score in values
        ],
    }


def _route_fails(run_input: Input, rng: random.Random) -> str | bool:
    state = run_input.get("state")
    if not isinstance(state, str) or state.upper() not in US_STATES:
        return "Client endpoint rejected the request."
    return False


def _route_result(run_input: Input, rng: random.Random) -> dict[str, Any]:
    state = str(run_input.get("state", "")).lower()
    return {"queue": f"claims-{state}", "accepted": True, "statusCode": 200}


INCOMING_CLAIM = Workflow(
    id="incoming-claim",
    name="Incoming Claim",
    steps=(
        StepSpec(
            name="Extracted Document",
            type="document_insights",
            duration=_uniform(3.0, 9.0),
            output=_claim_fields,
            document="document",
            fail_code="UNSUPPORTED_DOCUMENT",
            fail_message="The document could not be processed by Document Insights.",
        ),
        StepSpec(
            name="Route Result",
            type="web_function",
            duration=_uniform(1.0, 3.0),
            output=_route_result,
            fail=_route_fails,
        ),
    ),
)

# --------------------------------------------------------------------------- nested: claims-batch


def _batch_claims(run_input: Input) -> list[Any]:
    claims = run_input.get("claims")
    return list(claims) if isinstance(claims, list) else []


def _claims_count(run_input: Input, rng: random.Random) -> int:
    claims = _batch_claims(run_input)
    return len(claims) if claims else 3


def _claim_input(run_input: Input, index: int) -> dict[str, Any]:
    claims = _batch_claims(run_input)
    if index < len(claims) and isinstance(claims[index], Mapping):
        return dict(claims[index])
    return {"claimId": f"claim-{index + 1}", "state": "CT"}


def _policy_input(run_input: Input, index: int) -> dict[str, Any]:
    return {"claimId": run_input.get("claimId"), "state": run_input.get("state")}


POLICY_LOOKUP = Workflow(
    id="policy-lookup",
    name="Policy Lookup",
    steps=(
        StepSpec(
            name="Lookup Policy",
            type="web_function",
            duration=_uniform(1.0, 2.0),
            output=lambda run_input, rng: {
                "policyNumber": f"POL-{rng.randint(100000, 999999)}",
                "active": True,
            },
        ),
    ),
)

CLAIM_REVIEW = Workflow(
    id="claim-review",
    name="Claim Review",
    steps=(
        StepSpec(
            name="Extract Claim",
            type="document_insights",
            duration=_uniform(2.0, 5.0),
            output=lambda run_input, rng: {
                "claimId": run_input.get("claimId"),
                "amount": round(rng.uniform(50.0, 5000.0), 2),
            },
        ),
        StepSpec(
            name="Check Policy",
            type="workflow",
            duration=0.5,
            nested=NestedSpec("policy-lookup", count=1, input=_policy_input),
        ),
    ),
)

CLAIMS_BATCH = Workflow(
    id="claims-batch",
    name="Claims Batch",
    steps=(
        StepSpec(
            name="Split Claims",
            type="data_transformation",
            duration=1.0,
            output=lambda run_input, rng: {"claimCount": _claims_count(run_input, rng)},
        ),
        StepSpec(
            name="Review Claims",
            type="workflow",
            duration=0.5,
            nested=NestedSpec("claim-review", count=_claims_count, input=_claim_input),
        ),
        StepSpec(
            name="Summarize",
            type="data_transformation",
            duration=1.0,
            output=lambda run_input, rng: {"reviewed": _claims_count(run_input, rng)},
        ),
    ),
)

# --------------------------------------------------------------------------- variable-duration


def _variable_duration(rng: random.Random, run_input: Input) -> float:
    requested = run_input.get("durationSeconds")
    if isinstance(requested, int | float) and not isinstance(requested, bool):
        return float(requested)
    # Log-normal spread: median about 10 s, a long tail, capped at 10 minutes.
    return min(600.0, rng.lognormvariate(2.3, 0.9))


VARIABLE_DURATION = Workflow(
    id="variable-duration",
    name="Variable Duration",
    start_delay=0.0,
    steps=(
        StepSpec(
            name="Wait",
            type="custom",
            duration=_variable_duration,
            output=lambda run_input, rng: {"echo": run_input.get("echo")},
        ),
    ),
)

# --------------------------------------------------------------------------- flaky-loader

FLAKY_LOADER = Workflow(
    id="flaky-loader",
    name="Flaky Loader",
    steps=(
        StepSpec(
            name="Extract Lab Result",
            type="document_insights",
            duration=_uniform(2.0, 6.0),
            output=_lab_result,
            fail=0.2,
            fail_code="UNSUPPORTED_DOCUMENT",
            fail_message="The document could not be processed by Document Insights.",
        ),
    ),
)


def builtin_workflows() -> list[Workflow]:
    """The workflows every :class:`~plextera_data.simulator.Simulator` starts with."""
    return [
        DAILY_LAB_LOADER,
        INCOMING_CLAIM,
        CLAIMS_BATCH,
        CLAIM_REVIEW,
        POLICY_LOOKUP,
        VARIABLE_DURATION,
        FLAKY_LOADER,
    ]
