"""Flattening runs as the simulator serves them: nested runs two levels deep, expand_nested."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from plextera_data.client import Client
from plextera_data.flatten import Tables, flatten

simulator = pytest.importorskip("plextera_data.simulator")


@pytest.fixture
def sim() -> Any:
    return simulator.Simulator(seed=7, speed=None)


@pytest.fixture
def client(sim: Any) -> Iterator[Client]:
    with sim.serve() as server, Client(api_key=server.api_key, base_url=server.base_url) as c:
        yield c


def _summarise(run: dict[str, Any]) -> dict[str, Any]:
    """The run with each nested run cut down to a summary (no steps), as events may give it."""
    summary = copy.deepcopy(run)
    for step in summary["steps"]:
        for child in step["nestedRuns"]["data"]:
            child["steps"] = []
    return summary


def test_nested_runs_from_the_simulator_and_expand_nested(sim: Any, client: Client) -> None:
    claims = [{"claimId": "a", "state": "CT"}, {"claimId": "b", "state": "NY"}]
    started = client.start_run("claims-batch", json={"claims": claims})
    sim.clock.advance(3600)
    run = client.get_run(started.id or "")
    assert run.status == "COMPLETED"

    full = flatten([run], row_keys={run.id: "batch-1"})
    runs = full.runs
    assert runs["depth"].max() == 2
    assert (runs["root_run_id"] == run.id).all()
    assert (runs["row_key"] == "batch-1").all()
    children = runs[runs["depth"] == 1]
    assert children["workflow_id"].tolist() == ["claim-review", "claim-review"]
    claim_ids = full.outputs.query("depth == 1 and path == 'claimId'")["value_str"]
    assert claim_ids.tolist() == ["a", "b"]
    assert (full.steps["nested_run_count"] == full.steps["nested_runs_seen"]).all()

    summarised = flatten([_summarise(run.raw)], row_keys={run.id: "batch-1"})
    assert len(summarised.runs) == 1 + len(children), "summaries hide the grandchildren"
    gets_before = dict(sim.stats.gets)
    expanded = flatten(
        [_summarise(run.raw)], row_keys={run.id: "batch-1"}, expand_nested=True, client=client
    )
    fetched = {rid for rid, count in sim.stats.gets.items() if count > gets_before.get(rid, 0)}
    assert fetched == set(children["run_id"])
    for name in Tables.TABLE_NAMES:
        pd.testing.assert_frame_equal(getattr(expanded, name), getattr(full, name))
