"""The AsyncClient against httpx.MockTransport: the async face, concurrency, loops, closing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from plextera_data import errors
from plextera_data.client import AsyncClient, Client
from plextera_data.retry import RetryPolicy

KEY = "sk_test_async_SECRET"
BASE = "http://127.0.0.1/api/public/v1"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def run_json(run_id: str, status: str = "PROCESSING") -> dict[str, Any]:
    return {"id": run_id, "status": status, "workflow": {"id": "wf", "name": "Wf"}}


class Runs:
    """A tiny in-memory API: POST creates a run, each GET moves it one step towards COMPLETED."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        parts = request.url.path.split("/")
        if request.method == "POST":
            run_id = f"run_{len(self.runs)}"
            self.runs[run_id] = 0
            return httpx.Response(202, json=run_json(run_id))
        run_id = parts[-1]
        if run_id not in self.runs:
            return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "no"}})
        self.runs[run_id] += 1
        status = "COMPLETED" if self.runs[run_id] >= 3 else "PROCESSING"
        return httpx.Response(200, json=run_json(run_id, status))


def make(runs: Runs, **kwargs: Any) -> tuple[AsyncClient, FakeSleep]:
    sleep = FakeSleep()
    client = AsyncClient(
        KEY,
        BASE,
        transport=httpx.MockTransport(runs.handler),
        retry=RetryPolicy(jitter=0),
        sleep=sleep,
        **kwargs,
    )
    return client, sleep


async def test_start_get_wait_list() -> None:
    runs = Runs()
    client, sleep = make(runs)
    async with client:
        run = await client.start_run("wf", json={"x": 1})
        assert run.status == "PROCESSING"
        fetched = await client.get_run(run.id or "")
        assert fetched.id == run.id
        done = await client.wait(run.id or "", poll_interval=0.25)
        assert done.status == "COMPLETED"
        assert sleep.delays == [0.25]
    methods = [r.method for r in runs.requests]
    assert methods == ["POST", "GET", "GET", "GET"]


async def test_concurrent_calls_share_one_pool() -> None:
    runs = Runs()
    client, _ = make(runs)
    async with client:
        started = await asyncio.gather(*(client.start_run("wf", json={"i": i}) for i in range(20)))
        finished = await asyncio.gather(*(client.wait(r.id or "") for r in started))
        assert len(client._clients) == 1
    assert {r.status for r in finished} == {"COMPLETED"}
    assert len({r.id for r in started}) == 20
    assert sum(1 for r in runs.requests if r.method == "POST") == 20


async def test_not_found_is_raised_not_retried() -> None:
    runs = Runs()
    client, sleep = make(runs)
    async with client:
        with pytest.raises(errors.NotFoundError) as info:
            await client.get_run("nope")
    assert info.value.code == "NOT_FOUND"
    assert len(runs.requests) == 1
    assert sleep.delays == []


async def test_closed_client_refuses_calls() -> None:
    runs = Runs()
    client, _ = make(runs)
    async with client:
        await client.start_run("wf")
    with pytest.raises(errors.ConfigurationError, match="closed"):
        await client.start_run("wf")
    assert len(runs.requests) == 1


async def test_timeout_number_becomes_an_httpx_timeout() -> None:
    client = AsyncClient(KEY, BASE, timeout=3.0)
    assert client._timeout == httpx.Timeout(3.0)
    assert "AsyncClient(base_url=" in repr(client)
    assert KEY not in repr(client)
    await client.aclose()


def test_one_async_client_across_several_event_loops() -> None:
    runs = Runs()
    client, _ = make(runs)

    async def use() -> str | None:
        return (await client.start_run("wf")).id

    first = asyncio.run(use())
    second = asyncio.run(use())  # a new loop: a new pool, the old one's loop is closed
    assert (first, second) == ("run_0", "run_1")
    asyncio.run(client.aclose())


async def test_start_without_retry_and_upload_file() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "R"}}),
            httpx.Response(201, json={"id": "file_1", "name": "a.pdf", "sizeBytes": 4}),
        ]
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    sleep = FakeSleep()
    client = AsyncClient(KEY, BASE, transport=httpx.MockTransport(handler), sleep=sleep)
    async with client:
        with pytest.raises(errors.RateLimitError) as info:
            await client.start_run("wf", json={}, retry=False)
        assert info.value.retry_after == 0.0
        uploaded = await client.upload_file(b"%PDF", name="a.pdf")
    assert (uploaded.id, uploaded.name, uploaded.size, uploaded.mime_type) == (
        "file_1",
        "a.pdf",
        4,
        None,
    )
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/public/v1/workflows/wf/runs"),
        ("POST", "/api/public/v1/files"),
    ]
    assert sleep.delays == []


async def test_deprecated_retry_rate_limits_warns_at_the_callers_line() -> None:
    runs = Runs()
    client, _ = make(runs)
    async with client:
        with pytest.warns(DeprecationWarning, match="retry=False") as caught:
            await client.start_run("wf", retry_rate_limits=True)
    assert caught[0].filename == __file__


async def test_clock_rate_and_the_sync_face() -> None:
    client = AsyncClient(KEY, BASE, clock_rate=250.0)
    assert client.clock_rate == 250.0
    face = Client.from_async(client)
    assert face.aclient is client
    assert face.clock_rate == 250.0
    await client.aclose()
