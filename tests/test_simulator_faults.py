"""Injected faults, each seen by a raw httpx client, with the simulator's request counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from plextera_data.simulator import Fault, Simulator, parse_faults
from plextera_data.simulator.server import SimulatorServer

KEY = "sk_sim_faults"
AUTH = {"Authorization": f"api-key {KEY}"}


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=11, speed=None, api_key=KEY)


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as served:
        yield served


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=10) as http:
        yield http


def test_rate_limit_answers_429_with_retry_after_and_creates_nothing(
    sim: Simulator, client: httpx.Client
) -> None:
    sim.set_faults([Fault("rate_limit", method="POST", requests={1}, retry_after=3)])
    limited = client.post(
        "/workflows/daily-lab-loader/runs", json={}, headers={"X-Request-Id": "r1"}
    )
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.headers["x-request-id"] == "r1"
    assert limited.json()["error"] == {
        "code": "RATE_LIMITED",
        "message": "Too many requests; retry after the Retry-After delay.",
        "requestId": "r1",
        "retryable": True,
    }
    accepted = client.post("/workflows/daily-lab-loader/runs", json={})
    assert accepted.status_code == 202
    assert sim.stats.post_attempts == {"daily-lab-loader": 2}
    assert sim.stats.posts == {"daily-lab-loader": 1}
    assert sim.stats.faults == {"rate_limit": 1}
    assert sim.stats.by_status == {429: 1, 202: 1}


def test_retry_after_may_be_an_http_date(sim: Simulator, client: httpx.Client) -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    sim.set_faults([Fault("rate_limit", retry_after=date)])
    assert client.get("/workflow-runs").headers["retry-after"] == date


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_use_the_envelope_and_are_retryable(
    sim: Simulator, client: httpx.Client, status: int
) -> None:
    run_id = sim.start_run("daily-lab-loader")
    sim.set_faults([Fault("server_error", method="GET", status=status)])
    response = client.get(f"/workflow-runs/{run_id}")
    assert response.status_code == status
    assert response.json()["error"]["retryable"] is True
    assert response.json()["error"]["code"] in {
        "INTERNAL_ERROR",
        "BAD_GATEWAY",
        "SERVICE_UNAVAILABLE",
    }
    assert client.post("/workflows/daily-lab-loader/runs", json={}).status_code == 202
    assert sim.stats.gets == {run_id: 1}


def test_drop_before_processing_creates_no_run(sim: Simulator, client: httpx.Client) -> None:
    sim.set_faults([Fault("drop", method="POST", requests={1})])
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/workflows/daily-lab-loader/runs", json={"row": 1})
    assert sim.stats.post_attempts == {"daily-lab-loader": 1}
    assert sim.stats.posts == {}
    assert sim.created_runs() == []
    assert 500 not in sim.stats.by_status
    # the next request, on a new connection, goes through
    assert client.post("/workflows/daily-lab-loader/runs", json={"row": 1}).status_code == 202


def test_drop_after_processing_is_the_ambiguous_case(sim: Simulator, client: httpx.Client) -> None:
    sim.set_faults([Fault("drop", method="POST", after_processing=True)])
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/workflows/daily-lab-loader/runs", json={"row": 1})
    assert sim.stats.posts == {"daily-lab-loader": 1}  # the run exists although no answer came
    assert [run_input for _, run_input in sim.created_runs()] == [{"row": 1}]
    assert sim.stats.faults == {"drop": 1}
    assert sum(sim.stats.by_status.values()) == 0


def test_malformed_answers_are_2xx_and_not_json(sim: Simulator, client: httpx.Client) -> None:
    run_id = sim.start_run("daily-lab-loader")
    sim.set_faults([Fault("malformed")])
    started = client.post("/workflows/daily-lab-loader/runs", json={})
    polled = client.get(f"/workflow-runs/{run_id}")
    missing = client.get("/workflow-runs/unknown")
    for response in (started, polled, missing):
        assert 200 <= response.status_code < 300
        assert response.headers["content-type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert started.status_code == 202
    assert started.text.startswith('{"id":')
    assert missing.text == '{"id": "abc", "status": '
    assert sim.stats.posts == {"daily-lab-loader": 1}  # processed, then garbled


def test_slow_answers_still_answer(sim: Simulator, client: httpx.Client) -> None:
    sim.set_faults([Fault("slow", delay=0.01)])
    assert client.get("/workflow-runs").status_code == 200
    assert sim.stats.faults == {"slow": 1}


def test_slow_answer_trips_a_client_read_timeout(sim: Simulator, server: SimulatorServer) -> None:
    sim.set_faults([Fault("slow", delay=5.0, requests={1})])
    with (
        httpx.Client(base_url=server.base_url, headers=AUTH, timeout=0.2) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.get("/workflow-runs")


def test_fault_selection_by_ordinal_method_and_path(sim: Simulator, client: httpx.Client) -> None:
    run_id = sim.start_run("daily-lab-loader")
    fault = Fault("server_error", method="GET", path="/workflow-runs/", requests={2, 4})
    sim.faults.append(fault)  # the list may be changed in place
    statuses = [client.get(f"/workflow-runs/{run_id}").status_code for _ in range(5)]
    assert statuses == [200, 500, 200, 500, 200]
    assert client.get("/workflow-runs").status_code == 200  # path not matched
    assert client.post("/workflows/daily-lab-loader/runs", json={}).status_code == 202
    assert (fault.matched, fault.hits) == (5, 2)


def test_rate_faults_are_reproducible_under_a_seed() -> None:
    def pattern(seed: int) -> list[int]:
        sim = Simulator(seed=seed, speed=None, faults=[Fault("server_error", rate=0.3)])

        async def go() -> list[int]:
            async with httpx.AsyncClient(
                transport=sim.transport(),
                base_url=sim.in_process_base_url,
                headers={"Authorization": f"api-key {sim.api_key}"},
            ) as http:
                return [(await http.get("/workflow-runs")).status_code for _ in range(40)]

        return asyncio.run(go())

    first = pattern(5)
    assert first == pattern(5)
    assert 0 < first.count(500) < 40
    assert first != pattern(6)


def test_in_process_drop_surfaces_as_a_transport_error() -> None:
    sim = Simulator(seed=1, speed=None, faults=[Fault("drop", after_processing=True)])

    async def go() -> None:
        async with httpx.AsyncClient(
            transport=sim.transport(),
            base_url=sim.in_process_base_url,
            headers={"Authorization": f"api-key {sim.api_key}"},
        ) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post("/workflows/daily-lab-loader/runs", json={})

    asyncio.run(go())
    assert sim.stats.posts == {"daily-lab-loader": 1}


def test_parse_faults() -> None:
    faults = parse_faults("rate_limit:0.05, server_error=503:0.01,drop:#2+5:post,slow=1.5:1")
    assert [f.kind for f in faults] == ["rate_limit", "server_error", "drop", "slow"]
    assert faults[0].rate == 0.05
    assert faults[1].status == 503
    assert faults[2].requests == frozenset({2, 5})
    assert faults[2].method == "POST"
    assert faults[3].delay == 1.5
    assert parse_faults("") == []
    for bad in ("explode:0.1", "rate_limit", "drop:2.0", "drop=1:0.1"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_faults(bad)


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("boom")
    with pytest.raises(ValueError, match="5xx"):
        Fault("server_error", status=404)
    with pytest.raises(ValueError, match="method"):
        Fault("drop", method="PUT")
