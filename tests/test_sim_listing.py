"""``GET /workflow-runs``: every run, newest first, documented paging, stable while runs arrive."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plextera_data.simulator import Simulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=5, speed=None)


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sim.transport(),
        base_url=sim.in_process_base_url,
        headers={"Authorization": f"api-key {sim.api_key}"},
    ) as client:
        yield client


async def _start(http: httpx.AsyncClient, workflow_id: str, body: dict[str, Any]) -> str:
    answer = await http.post(f"/workflows/{workflow_id}/runs", json=body)
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    return run_id


async def _page(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await http.get("/workflow-runs", params=params)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


@pytest.mark.anyio
async def test_every_workflow_newest_first_ties_in_reverse_creation_order(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    workflows = ["daily-lab-loader", "incoming-claim", "variable-duration", "claims-batch"]
    started = []
    for n in range(30):
        started.append(await _start(http, workflows[n % 4], {"n": n}))
        if n % 3 == 0:
            sim.clock.advance(0.5)  # the others share a createdAt with their neighbour
    page = await _page(http, size=100)
    assert [run["id"] for run in page["data"]] == started[::-1]
    created = [run["createdAt"] for run in page["data"]]
    assert created == sorted(created, reverse=True)
    assert len(set(created)) < len(created)  # ties exist, and kept creation order
    assert {run["workflow"]["id"] for run in page["data"]} == set(workflows)
    assert page["pageInfo"] == {"page": 1, "size": 100, "totalItems": 30, "totalPages": 1}
    assert len(sim.runs) > 30  # claims-batch made nested runs; they are not listed


@pytest.mark.anyio
async def test_paging_defaults_limits_and_page_info(http: httpx.AsyncClient) -> None:
    started = [await _start(http, "daily-lab-loader", {"n": n}) for n in range(45)]
    first = await _page(http)
    assert first["pageInfo"] == {"page": 1, "size": 20, "totalItems": 45, "totalPages": 3}
    third = await _page(http, page=3)
    assert [run["id"] for run in third["data"]] == started[4::-1]
    assert (await _page(http, page=4))["data"] == []
    biggest = await _page(http, size=100)
    assert len(biggest["data"]) == 45
    for bad in ({"page": 0}, {"size": 0}, {"size": 101}, {"page": "x"}, {"asOf": "nope"}):
        answer = await http.get("/workflow-runs", params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.anyio
async def test_runs_created_while_paging_as_of_a_run_skip_and_repeat_nothing(
    http: httpx.AsyncClient,
) -> None:
    older = [await _start(http, "daily-lab-loader", {"n": n}) for n in range(53)]
    first = await _page(http, size=10)
    as_of = first["data"][0]["id"]
    seen = [run["id"] for run in first["data"]]
    page = 2
    rng = random.Random(1)
    while True:
        for _ in range(rng.randint(0, 4)):  # other clients keep creating runs meanwhile
            await _start(http, "incoming-claim", {"late": rng.random()})
        answer = await _page(http, size=10, page=page, asOf=as_of)
        assert answer["pageInfo"]["totalItems"] == 53  # as of the first page
        if not answer["data"]:
            break
        seen.extend(run["id"] for run in answer["data"])
        page += 1
    assert seen == older[::-1]  # each older run exactly once, in order


@pytest.mark.anyio
async def test_without_as_of_new_runs_shift_pages_but_never_skip_one(
    http: httpx.AsyncClient,
) -> None:
    older = [await _start(http, "daily-lab-loader", {"n": n}) for n in range(30)]
    first = await _page(http, size=10)
    for n in range(3):
        await _start(http, "daily-lab-loader", {"late": n})
    second = await _page(http, size=10, page=2)
    grew = second["pageInfo"]["totalItems"] - first["pageInfo"]["totalItems"]
    assert grew == 3
    # Page 2 now starts 3 places earlier: its first 3 runs were the end of page 1.
    assert [run["id"] for run in second["data"][:grew]] == [
        run["id"] for run in first["data"][-grew:]
    ]
    listed = {run["id"] for run in first["data"] + second["data"]}
    assert set(older[-17:]) <= listed  # nothing between skipped


@pytest.mark.anyio
async def test_concurrent_creation_and_paging_as_of(http: httpx.AsyncClient) -> None:
    older = [await _start(http, "daily-lab-loader", {"n": n}) for n in range(200)]
    first = await _page(http, size=25)
    as_of = first["data"][0]["id"]

    async def creator() -> None:
        for n in range(60):
            await _start(http, "daily-lab-loader", {"concurrent": n})

    async def pager() -> list[str]:
        ids = [run["id"] for run in first["data"]]
        for page in range(2, 9):
            answer = await _page(http, size=25, page=page, asOf=as_of)
            ids.extend(run["id"] for run in answer["data"])
        return ids

    _, listed = await asyncio.gather(creator(), pager())
    assert listed == older[::-1]
    assert (await _page(http, size=1))["pageInfo"]["totalItems"] == 260


@pytest.mark.anyio
async def test_filters_status_and_workflow(sim: Simulator, http: httpx.AsyncClient) -> None:
    short = await _start(http, "variable-duration", {"durationSeconds": 5})
    long = await _start(http, "variable-duration", {"durationSeconds": 500})
    lab = await _start(http, "daily-lab-loader", {})
    sim.clock.advance(60)
    done = await _page(http, status="completed")
    assert {run["id"] for run in done["data"]} == {short, lab}
    both = await _page(http, status="COMPLETED,PROCESSING", workflowId="variable-duration")
    assert [run["id"] for run in both["data"]] == [long, short]
    assert both["pageInfo"]["totalItems"] == 2
