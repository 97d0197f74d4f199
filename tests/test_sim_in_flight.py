"""The simulator counts the requests it is handling at once (``stats.in_flight``) and the most
ever (``stats.max_in_flight``), so a test can prove a client never exceeded a cap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from plextera_data.simulator import Simulator
from plextera_data.simulator.app import API_PREFIX

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start_scope(sim: Simulator, workflow_id: str) -> dict[str, Any]:
    path = f"{API_PREFIX}/workflows/{workflow_id}/runs"
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"authorization", f"api-key {sim.api_key}".encode()),
            (b"content-type", b"application/json"),
        ],
    }


async def test_requests_held_open_count_as_in_flight_until_answered() -> None:
    sim = Simulator(seed=0, speed=None)
    release = asyncio.Event()
    waiting = asyncio.Event()
    statuses: list[int] = []
    asked: list[int] = []

    async def receive() -> dict[str, Any]:
        asked.append(1)  # the app asks for the body after it counted the request
        if len(asked) == 5:
            waiting.set()
        await release.wait()  # the body arrives only when the test says so
        return {"type": "http.request", "body": json.dumps({"n": 1}).encode()}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    requests = [
        asyncio.ensure_future(sim.app(start_scope(sim, "daily-lab-loader"), receive, send))
        for _ in range(5)
    ]
    await waiting.wait()  # every request has reached the app and waits for its body
    assert (sim.stats.in_flight, sim.stats.max_in_flight) == (5, 5)

    release.set()
    await asyncio.gather(*requests)
    assert statuses == [202] * 5
    assert (sim.stats.in_flight, sim.stats.max_in_flight) == (0, 5)

    sim.stats.reset()
    assert sim.stats.max_in_flight == 0


async def test_one_request_at_a_time_peaks_at_one_and_errors_count_too() -> None:
    sim = Simulator(seed=0, speed=None)
    async with httpx.AsyncClient(
        transport=sim.transport(), base_url=sim.in_process_base_url
    ) as http:
        headers = {"Authorization": f"api-key {sim.api_key}"}
        for _ in range(3):
            answer = await http.post("/workflows/daily-lab-loader/runs", json={}, headers=headers)
            assert answer.status_code == 202
        assert (await http.get("/workflow-runs/nope", headers=headers)).status_code == 404
        assert (await http.get("/workflow-runs/nope")).status_code == 401
    assert sim.stats.requests == 5
    assert (sim.stats.in_flight, sim.stats.max_in_flight) == (0, 1)
