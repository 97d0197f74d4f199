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


class FakeTimer:
    """A monotonic clock moved by hand, for the throttle."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_is_a_token_bucket_with_a_truthful_retry_after(sim: Simulator) -> None:
    timer = FakeTimer()
    sim.set_faults([Fault("throttle", per_second=40, burst=5, timer=timer)])

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=sim.transport(), base_url=sim.in_process_base_url, headers=AUTH
        ) as http:
            answers = [await http.get("/workflow-runs") for _ in range(6)]  # burst of 5, then 429
            timer.now += 0.010  # 0.4 of a token back
            answers.append(await http.get("/workflow-runs"))
            timer.now += 0.015  # a whole token back: exactly what Retry-After said
            answers.append(await http.get("/workflow-runs"))
            timer.now += 10  # the bucket refills to its burst, no further
            answers += [await http.get("/workflow-runs") for _ in range(6)]
            return answers

    answers = asyncio.run(go())
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * 5 + [429, 429, 200] + [200] * 5 + [429]
    assert answers[5].headers["retry-after"] == "0.025"  # 1 token at 40/s
    assert answers[6].headers["retry-after"] == "0.015"
    assert answers[5].json()["error"]["code"] == "RATE_LIMITED"
    assert sim.stats.faults == {"throttle": 3}
    assert sim.stats.answers[("list_runs", 429)] == 3


def test_throttle_holds_the_rate_over_time(sim: Simulator) -> None:
    timer = FakeTimer()
    sim.set_faults([Fault("throttle", per_second=40, timer=timer)])  # burst: one second's worth
    picked = 0
    for _ in range(2000):  # 200 requests/s offered for 10 s
        timer.now += 0.005
        picked += sim.pick_fault("GET", "/api/public/v1/workflow-runs") is None
    assert 40 * 10 <= picked <= 40 * 10 + 40  # the rate, plus the first second's burst


def test_throttle_in_parse_faults_and_its_checks() -> None:
    [bucket] = parse_faults("throttle=10:40:POST")
    assert (bucket.kind, bucket.per_second, bucket.burst) == ("throttle", 40, 10)
    assert bucket.method == "POST"
    assert parse_faults("throttle:40")[0].burst == 40
    assert parse_faults("rate_limit=0:0.05")[0].retry_after == 0
    with pytest.raises(ValueError, match="per_second"):
        Fault("throttle")
    with pytest.raises(ValueError, match="burst"):
        Fault("throttle", per_second=5, burst=0.5)


def test_retry_after_zero_is_sent_as_zero(sim: Simulator, client: httpx.Client) -> None:
    sim.set_faults([Fault("rate_limit", method="POST", rate=1.0, retry_after=0)])
    answer = client.post("/workflows/daily-lab-loader/runs", json={})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "0"


def test_the_fault_mix_of_the_benchmarks_at_its_rates() -> None:
    """5 % of POSTs 429 (Retry-After 0), 1 % of POSTs 500, 5 % of GETs failing (500, dropped,
    malformed) and 1 % 429: each kind at about its rate, no run created by a refused POST."""
    faults = parse_faults(
        "rate_limit=0:0.05:POST,server_error:0.01:POST,"
        "server_error:0.0167:GET,drop:0.0167:GET,malformed:0.0167:GET,rate_limit=0:0.01:GET"
    )
    sim = Simulator(seed=3, speed=None, faults=faults)
    run_id = sim.start_run("daily-lab-loader")

    async def go() -> tuple[int, int]:
        created = failed_gets = 0
        async with httpx.AsyncClient(
            transport=sim.transport(),
            base_url=sim.in_process_base_url,
            headers={"Authorization": f"api-key {sim.api_key}"},
        ) as http:
            for n in range(4000):
                answer = await http.post("/workflows/daily-lab-loader/runs", json={"n": n})
                created += answer.status_code == 202
                try:
                    polled = await http.get(f"/workflow-runs/{run_id}")
                    polled.json()
                    failed_gets += polled.status_code != 200
                except (httpx.RemoteProtocolError, json.JSONDecodeError):
                    failed_gets += 1
        return created, failed_gets

    created, failed_gets = asyncio.run(go())
    assert sim.stats.total_posts == created
    assert 0.92 < created / 4000 < 0.96  # about 6 % refused
    assert 0.04 < failed_gets / 4000 < 0.08  # about 6 % of GETs failed
    assert not sim.stats.started_twice
    assert sim.stats.by_kind == {"start": 4000, "get_run": 4000}
