"""The client against the simulator, served on loopback and in-process.

Each fault kind is checked by what the simulator counted: how many POSTs were attempted, how
many runs were created, how many GETs a run received. Simulated time is manual (``speed=None``)
and the client's sleep advances it, so nothing here waits on the wall clock except the one
``slow`` fault, whose delay (3 s) is far longer than the client's timeout (1 s), itself far longer
than a healthy answer on loopback.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from plextera_data import errors
from plextera_data.client import AsyncClient, Client
from plextera_data.retry import RetryPolicy

# The ``slow`` fault's answer comes far later than the client's timeout, and the timeout is long
# enough for a healthy loopback answer on a loaded machine (the retried GET must get one).
CLIENT_TIMEOUT = 1.0
SLOW_ANSWER = 3.0

simulator = pytest.importorskip("plextera_data.simulator")
Fault = simulator.Fault
Simulator = simulator.Simulator


class SimSleep:
    """The client's sleep: records each delay and moves the simulator's clock by it."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.sim.clock.advance(seconds)


@pytest.fixture
def sim() -> Any:
    return Simulator(seed=7, speed=None)


@pytest.fixture
def served(sim: Any) -> Iterator[Any]:
    with sim.serve() as server:
        yield server


@pytest.fixture
def sleep(sim: Any) -> SimSleep:
    return SimSleep(sim)


@pytest.fixture
def client(sim: Any, served: Any, sleep: SimSleep) -> Iterator[Client]:
    with Client(
        api_key=served.api_key,
        base_url=served.base_url,
        retry=RetryPolicy(jitter=0),
        sleep=sleep,
        timeout=5.0,
    ) as c:
        yield c


def only_run(sim: Any, workflow_id: str) -> tuple[str, dict[str, Any]]:
    runs = sim.created_runs(workflow_id)
    assert len(runs) == 1
    return runs[0]


# --------------------------------------------------------------------------- happy paths


def test_json_start_and_wait_to_completed(sim: Any, client: Client) -> None:
    run = client.start_run("daily-lab-loader", json={"customerId": "customer-42"})
    assert run.status == "PROCESSING"
    assert run.workflow_id == "daily-lab-loader"
    done = client.wait(run.id or "", poll_interval=1.0)
    assert done.status == "COMPLETED"
    assert done.steps[0].name == "Extract Lab Result"
    assert set(done.steps[0].output) >= {"extractionId", "fieldCount"}
    run_id, run_input = only_run(sim, "daily-lab-loader")
    assert run_id == run.id
    assert run_input == {"customerId": "customer-42"}
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert sim.stats.gets[run_id] >= 1
    assert sim.stats.gets_after_terminal[run_id] == 0  # wait stops at the first terminal answer


def test_multipart_start_reaches_the_workflow_as_documented(sim: Any, client: Client) -> None:
    run = client.start_run(
        "incoming-claim",
        fields={
            "claimId": "claim-42",
            "state": "XX",  # not a state: the routing step fails
            "payload": {"amount": 12.5},
            "note": None,
            "count": 2,
        },
        files={"document": ("claim.pdf", b"%PDF-1.4 claim")},
    )
    _, run_input = only_run(sim, "incoming-claim")
    assert run_input["claimId"] == "claim-42"
    assert run_input["payload"] == {"amount": 12.5}  # application/json part parsed as JSON
    assert run_input["note"] is None  # None travels as JSON null
    assert run_input["count"] == "2"  # numbers are plain text parts
    [node] = run_input["document"]  # files become file-node arrays
    assert node["name"] == "claim.pdf"
    assert node["mimeType"] == "application/pdf"
    assert node["sizeBytes"] == len(b"%PDF-1.4 claim")
    done = client.wait(run.id or "")
    assert done.status == "FAILED"
    assert done.error is not None
    assert done.failed_step is not None


def test_list_runs(client: Client) -> None:
    started = [client.start_run("daily-lab-loader", json={"i": i}).id for i in range(3)]
    page = client.list_runs()
    assert {r.id for r in page.runs} == set(started)
    assert page.total_items == 3


def test_in_process_transport(sim: Any) -> None:
    sleep = SimSleep(sim)

    async def main() -> str | None:
        async with AsyncClient(
            api_key=sim.api_key,
            base_url=sim.in_process_base_url,
            transport=sim.transport(),
            sleep=sleep,
        ) as client:
            run = await client.start_run("daily-lab-loader", json={"customerId": "c"})
            return (await client.wait(run.id or "")).status

    import asyncio

    assert asyncio.run(main()) == "COMPLETED"
    assert sim.stats.posts["daily-lab-loader"] == 1


# --------------------------------------------------------------------------- faults: POST


def test_post_server_error_is_raised_not_retried(sim: Any, client: Client) -> None:
    sim.set_faults([Fault("server_error", method="POST", status=502)])
    with pytest.raises(errors.ServerError) as info:
        client.start_run("daily-lab-loader", json={})
    assert info.value.status_code == 502
    assert info.value.may_have_created is True
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert sim.stats.posts["daily-lab-loader"] == 0


def test_post_rate_limit_is_retried_after_retry_after(
    sim: Any, client: Client, sleep: SimSleep
) -> None:
    sim.set_faults([Fault("rate_limit", method="POST", requests={1, 2}, retry_after=2.0)])
    run = client.start_run("daily-lab-loader", json={})
    assert sim.stats.post_attempts["daily-lab-loader"] == 3
    assert sim.stats.posts["daily-lab-loader"] == 1
    assert only_run(sim, "daily-lab-loader")[0] == run.id
    assert sleep.delays == [2.0, 2.0]
    assert sim.stats.by_status[429] == 2


def test_post_drop_after_processing_is_uncertain_and_not_repeated(sim: Any, client: Client) -> None:
    sim.set_faults([Fault("drop", method="POST", requests={1}, after_processing=True)])
    with pytest.raises(errors.APIConnectionError) as info:
        client.start_run("daily-lab-loader", json={"row": 1})
    assert info.value.request_sent is True
    assert info.value.may_have_created is True
    assert info.value.request_id in sim.stats.request_ids
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert len(sim.created_runs("daily-lab-loader")) == 1  # it did exist: exactly one


def test_post_drop_before_processing_is_not_repeated_either(sim: Any, client: Client) -> None:
    sim.set_faults([Fault("drop", method="POST", requests={1})])
    with pytest.raises(errors.APIConnectionError) as info:
        client.start_run("daily-lab-loader", json={})
    assert info.value.may_have_created is True  # the client cannot tell the two drops apart
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert sim.created_runs("daily-lab-loader") == []


def test_post_malformed_answer_is_not_repeated(sim: Any, client: Client) -> None:
    sim.set_faults([Fault("malformed", method="POST")])
    with pytest.raises(errors.MalformedResponseError) as info:
        client.start_run("daily-lab-loader", json={})
    assert info.value.may_have_created is True
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert len(sim.created_runs("daily-lab-loader")) == 1


def test_post_slow_answer_times_out_and_is_not_repeated(sim: Any, served: Any) -> None:
    sim.set_faults([Fault("slow", method="POST", delay=SLOW_ANSWER)])
    client = Client(api_key=served.api_key, base_url=served.base_url, timeout=CLIENT_TIMEOUT)
    with pytest.raises(errors.APITimeoutError) as info:
        client.start_run("daily-lab-loader", json={})
    assert info.value.request_sent is True
    assert info.value.may_have_created is True
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    client.close()


def test_connection_refused_is_retried_then_raised(sleep: SimSleep) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(
        api_key="sk_x",
        base_url=f"http://127.0.0.1:{port}/api/public/v1",
        retry=RetryPolicy(max_retries=2, jitter=0),
        sleep=sleep,
    )
    with pytest.raises(errors.APIConnectionError) as info:
        client.start_run("daily-lab-loader", json={})
    assert info.value.request_sent is False
    assert info.value.may_have_created is False
    assert sleep.delays == [0.5, 1.0]  # a start that never left is safe to retry
    client.close()


# --------------------------------------------------------------------------- faults: GET


def test_get_server_errors_are_retried_until_success(sim: Any, client: Client) -> None:
    run_id = sim.start_run("daily-lab-loader", {})
    sim.set_faults([Fault("server_error", method="GET", requests={1, 2, 3}, status=503)])
    assert client.get_run(run_id).id == run_id
    assert sim.stats.gets[run_id] == 4
    assert sim.stats.by_status[503] == 3


@pytest.mark.parametrize(
    "fault",
    [
        Fault("rate_limit", method="GET", requests={1}, retry_after=1.0),
        Fault("drop", method="GET", requests={1}),
        Fault("malformed", method="GET", requests={1}),
    ],
    ids=["rate_limit", "drop", "malformed"],
)
def test_get_faults_are_retried(sim: Any, client: Client, fault: Any) -> None:
    run_id = sim.start_run("daily-lab-loader", {})
    sim.set_faults([fault])
    assert client.get_run(run_id).id == run_id
    assert sim.stats.gets[run_id] == 2
    assert sim.stats.faults[fault.kind] == 1


def test_get_slow_answer_times_out_and_is_retried(sim: Any, served: Any) -> None:
    run_id = sim.start_run("daily-lab-loader", {})
    sim.set_faults([Fault("slow", method="GET", requests={1}, delay=SLOW_ANSWER)])
    with Client(
        api_key=served.api_key,
        base_url=served.base_url,
        timeout=CLIENT_TIMEOUT,
        retry=RetryPolicy(initial_backoff=0.0, jitter=0),
    ) as client:
        assert client.get_run(run_id).id == run_id
    assert sim.stats.gets[run_id] == 2


def test_get_gives_up_after_the_policy(sim: Any, client: Client, sleep: SimSleep) -> None:
    run_id = sim.start_run("daily-lab-loader", {})
    sim.set_faults([Fault("server_error", method="GET")])
    with pytest.raises(errors.ServerError) as info:
        client.get_run(run_id)
    assert sim.stats.gets[run_id] == 5
    assert sleep.delays == [0.5, 1.0, 2.0, 4.0]
    assert info.value.request_id in sim.stats.request_ids


# --------------------------------------------------------------------------- errors and safety


def test_unknown_workflow_and_run_are_not_found(sim: Any, client: Client) -> None:
    with pytest.raises(errors.NotFoundError) as info:
        client.start_run("no-such-workflow", json={})
    assert info.value.code == "NOT_FOUND"
    assert info.value.request_id == sim.stats.request_ids[-1]  # our id, echoed
    with pytest.raises(errors.NotFoundError):
        client.get_run("no-such-run")


@pytest.mark.parametrize("evil", ["../admin", "..", "daily-lab-loader/../x", "a?b=c"])
def test_ids_cannot_change_the_path(sim: Any, client: Client, evil: str) -> None:
    with pytest.raises(errors.NotFoundError):
        client.start_run(evil, json={})
    with pytest.raises(errors.NotFoundError):
        client.get_run(evil)
    assert sim.created_runs() == []


def test_wrong_key_is_an_authentication_error_without_the_key(
    sim: Any, served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk_live_wrong_secret_123"
    client = Client(api_key=secret, base_url=served.base_url)
    with caplog.at_level(logging.DEBUG), pytest.raises(errors.AuthenticationError) as info:
        client.get_run("whatever")
    assert info.value.code == "UNAUTHORIZED"
    texts = [str(info.value), repr(info.value), repr(client), json.dumps(info.value.body)]
    texts += [r.getMessage() for r in caplog.records]
    assert all(secret not in text for text in texts)
    client.close()


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(errors.ConfigurationError, match="http://"):
        Client(api_key="k", base_url="http://api.plextera.com/api/public/v1")


def test_sync_client_inside_a_running_loop_against_the_served_simulator(served: Any) -> None:
    # nest-asyncio patches asyncio process-wide: do it in a child interpreter.
    script = textwrap.dedent(
        f"""
        import asyncio
        from plextera_data.client import Client

        client = Client(api_key={served.api_key!r}, base_url={served.base_url!r})

        async def notebook_cell():
            run = client.start_run("daily-lab-loader", json={{"customerId": "c"}})
            return [client.get_run(run.id).id == run.id for _ in range(3)]

        assert asyncio.run(notebook_cell()) == [True] * 3
        assert asyncio.run(notebook_cell()) == [True] * 3
        client.close()
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# --------------------------------------------------------------------------- the policy's limits


def test_max_retries_zero_is_one_attempt_per_call(sim: Any, served: Any, sleep: SimSleep) -> None:
    run_id = sim.start_run("daily-lab-loader", {})
    sim.set_faults(
        [
            Fault("rate_limit", method="POST", retry_after=0.0),
            Fault("server_error", method="GET", status=503),
        ]
    )
    with Client(
        api_key=served.api_key,
        base_url=served.base_url,
        retry=RetryPolicy(max_retries=0),
        sleep=sleep,
    ) as client:
        with pytest.raises(errors.RateLimitError):
            client.start_run("daily-lab-loader", json={})
        with pytest.raises(errors.ServerError):
            client.get_run(run_id)
        with pytest.raises(errors.RateLimitError):
            client.upload_file(b"%PDF-1.4")
    assert sim.stats.post_attempts["daily-lab-loader"] == 1
    assert sim.stats.gets[run_id] == 1
    assert sim.stats.requests == 3
    assert sleep.delays == []


def test_retry_after_zero_from_the_simulator_is_no_wait(
    sim: Any, client: Client, sleep: SimSleep
) -> None:
    sim.set_faults([Fault("rate_limit", method="POST", requests={1, 2}, retry_after=0.0)])
    client.start_run("daily-lab-loader", json={})
    assert sim.stats.post_attempts["daily-lab-loader"] == 3
    assert sleep.delays == [0.0, 0.0]


def test_upload_over_loopback_is_a_typed_file(sim: Any, client: Client) -> None:
    uploaded = client.upload_file(b"%PDF-1.4 served", name="served.pdf")
    assert uploaded.id in sim.files
    assert (uploaded.name, uploaded.mime_type, uploaded.size) == (
        "served.pdf",
        "application/pdf",
        15,
    )
