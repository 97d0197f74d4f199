"""Benchmark: the submission pacer under injected 429s, the previous policy against the current.

    python bench/bench_pacing.py [--rows 5000] [--latency 0.1] [--retry-after 1] [--seed 7]
                                 [--capacity 40] [--scenarios '5%@0,40/s truthful']
                                 [--pacers current]

Submits ``--rows`` rows with ``px.submit`` (async twin, no journal, concurrency 16) to the
in-process simulator with 0 %, 1 %, 5 % and 20 % of POSTs answered 429 at random
(``Retry-After`` ``--retry-after`` s, the simulator's ``Fault("rate_limit", rate=...)``), 5 %
with ``Retry-After: 0`` (``5%@0``: isolated 429s, "send it again now"); in a *storm*: every POST
answered 429 from t=5 s to t=15 s; and against a server that takes at most ``--capacity`` POSTs
per second (a token bucket in the transport wrapper, one second deep, 429 beyond it), where
sending faster than the server takes only earns 429s: its ``Retry-After`` is ``--retry-after``
(``40/s``: 1 s, what a bucket that writes whole seconds says) or the truthful seconds until its
next token (``40/s truthful``). Contenders: the pacer's policy as it was before
(``LegacyPacer``, on the current admission code), the current one, and the current one with
``recover_every=0``. Run it with another checkout's library first on ``PYTHONPATH`` to compare
that library's pacer (``--pacers current``).

Time is simulated: the event loop's clock jumps to the next timer whenever nothing is ready
(``bench_poll.VirtualTimeLoop``), the simulator reads that clock, and the pacer is given it. The
in-process simulator answers instantly, so a transport wrapper adds a round trip of
``--latency`` s (uniform 0.5-1.5x, seeded) to every request; without it, concurrency would not
matter. Every pacer gets the same simulator seed and the same scenarios in the same run, so the
comparison is exact and repeatable, not noisy.

Reported per scenario and pacer: simulated seconds to submit every row, of which paused (covered
by some 429's ``Retry-After``), wall seconds, mean
requests in flight (time-weighted, at the transport), 429s received, POSTs sent, answers other
than 429 per simulated second (``ok/s``), rows accepted
and rows accounted for (accepted + uncertain + failed; must equal the rows), plus rows that gave
up after ten 429s (the client's ``RetryPolicy(max_retries=9)``, the figure the submission
engine used before it followed the client's policy). Every run also checks that no row started
two runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

import plextera_data as px
from plextera_data.ledger import SUBMISSION_FAILED, SUBMISSION_UNCERTAIN
from plextera_data.pacing import Pacer
from plextera_data.retry import RetryPolicy
from plextera_data.simulator import Fault, Simulator, StepSpec, Workflow
from plextera_data.simulator.app import error_body

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_poll import LoopClock, VirtualTimeLoop

submit_module = importlib.import_module("plextera_data.submit")

ECHO = Workflow(
    "echo", "Echo", steps=(StepSpec("Echo", "web_function", duration=1.0),), start_delay=0.0
)
STORM = (5.0, 15.0)  # simulated seconds during which every POST is answered 429


class LegacyPacer(Pacer):
    """The pacer's policy as shipped before this benchmark (commit c7108b4), for comparison:
    halves the cap on the first 429 of each pause, +1 after every 20 successes in a row, floor
    1. Admission (pause, cap, slots) is the current pacer's; only the policy differs."""

    def __init__(
        self,
        *,
        max_in_flight: int = 16,
        min_in_flight: int = 1,
        recover_after: int = 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(
            max_in_flight=max_in_flight, min_in_flight=min_in_flight, clock=clock, sleep=sleep
        )
        self.recover_after = recover_after
        self._successes = 0

    def on_success(self) -> None:
        self._successes += 1
        if self._successes >= self.recover_after:
            self._successes = 0
            if self.limit < self.max_in_flight:
                self.limit += 1

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.rate_limited += 1
        self._successes = 0
        wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
        now = self._clock()
        already_paused = now < self.paused_until
        self.paused_until = max(self.paused_until, now + wait)
        if already_paused:
            return
        self.limit = max(self.min_in_flight, self.limit // 2)


class MeteredTransport(httpx.AsyncBaseTransport):
    """Adds a seeded round-trip time on the virtual clock; counts requests, 429s, in flight."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        loop: asyncio.AbstractEventLoop,
        latency: float,
        seed: int,
    ) -> None:
        self.inner = inner
        self.loop = loop
        self.latency = latency
        self.rng = random.Random(seed)
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.area = 0.0  # integral of requests in flight over simulated time
        self._last = 0.0
        self.limited_at: list[tuple[float, float]] = []  # when each 429 came, its Retry-After
        self.capacity: float | None = None  # POSTs per second the "server" accepts (token bucket)
        self.retry_after = 1.0
        self.truthful = False  # the bucket's Retry-After: the seconds until its next token
        self._tokens = 0.0
        self._refilled = 0.0

    def _over_capacity(self) -> float | None:
        """A token bucket of ``capacity`` POSTs per second (burst: one second's worth): ``None``
        if a token was taken, else the seconds until the next one."""
        if self.capacity is None:
            return None
        now = self.loop.time()
        self._tokens = min(self.capacity, self._tokens + (now - self._refilled) * self.capacity)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.capacity

    def _tick(self, delta: int) -> None:
        now = self.loop.time()
        self.area += self.in_flight * (now - self._last)
        self._last = now
        self.in_flight += delta

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self._tick(+1)
        try:
            half = self.latency * self.rng.uniform(0.5, 1.5) / 2
            await asyncio.sleep(half)
            wait = self._over_capacity()
            if wait is not None:
                rid = request.headers.get("X-Request-Id", "")
                shown = f"{max(wait, 0.001):.3f}" if self.truthful else f"{self.retry_after:g}"
                response = httpx.Response(
                    429,
                    json=error_body(429, "Too many requests.", rid),
                    headers={"Retry-After": shown, "X-Request-Id": rid},
                )
            else:
                response = await self.inner.handle_async_request(request)
            await asyncio.sleep(half)
        finally:
            self._tick(-1)
        self.statuses[response.status_code] += 1
        if response.status_code == 429:
            retry_after = float(response.headers.get("Retry-After") or 1.0)
            self.limited_at.append((self.loop.time(), retry_after))
        return response

    def paused(self) -> float:
        """Simulated seconds covered by some 429's Retry-After (the batch's pauses)."""
        total, end = 0.0, float("-inf")
        for t, retry_after in self.limited_at:
            start, stop = max(t, end), t + retry_after
            if stop > start:
                total += stop - start
            end = max(end, stop)
        return total


def the_frame(n: int) -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(n)]
    return pd.DataFrame({"rowId": ids, "value": range(n)}, index=ids)


def measure(
    pacer_factory: Callable[..., Any], scenario: str, args: argparse.Namespace
) -> dict[str, Any]:
    loop = VirtualTimeLoop()
    asyncio.set_event_loop(loop)
    storm = scenario == "storm"
    random_share, retry_after = 0.0, args.retry_after
    if "%" in scenario:
        share, _, after = scenario.partition("%")
        random_share = float(share) / 100
        retry_after = float(after.removeprefix("@")) if after else retry_after
    fault = Fault("rate_limit", method="POST", rate=random_share, retry_after=retry_after)
    sim = Simulator(seed=args.seed, workflows=[ECHO], faults=[fault], clock=LoopClock(loop))
    transport = MeteredTransport(sim.transport(), loop, args.latency, args.seed)
    transport.retry_after = retry_after
    if "/s" in scenario:
        capacity, _, how = scenario.partition("/s")
        transport.capacity = float(capacity)
        transport.truthful = how.strip() == "truthful"
    client = px.AsyncClient(
        api_key=sim.api_key,
        base_url=sim.in_process_base_url,
        transport=transport,
        retry=RetryPolicy(max_retries=9),
    )
    pacers: list[Any] = []

    def make_pacer(*, max_in_flight: int) -> Any:
        pacers.append(pacer_factory(max_in_flight=max_in_flight, clock=loop.time))
        return pacers[-1]

    if storm:
        loop.call_at(STORM[0], setattr, fault, "rate", 1.0)
        loop.call_at(STORM[1], setattr, fault, "rate", 0.0)
    frame = the_frame(args.rows)
    original = submit_module.Pacer
    submit_module.Pacer = make_pacer
    wall = time.perf_counter()
    try:
        batch = loop.run_until_complete(
            submit_module.submit_async(frame, "echo", client=client, progress=False, concurrency=16)
        )
        simulated = loop.time()
        transport._tick(0)
        loop.run_until_complete(client.aclose())
    finally:
        submit_module.Pacer = original
        loop.close()
    wall = time.perf_counter() - wall
    status = batch.status
    accepted = int(status["run_id"].notna().sum())
    uncertain = int((status["status"] == SUBMISSION_UNCERTAIN).sum())
    failed = int((status["status"] == SUBMISSION_FAILED).sum())
    started = Counter(body["rowId"] for _, body in sim.created_runs("echo"))
    assert not started or max(started.values()) == 1, "a row started two runs"
    assert len(started) == accepted
    assert transport.requests == int(status["attempts"].sum())
    assert transport.statuses[429] == pacers[0].rate_limited
    return {
        "simulated": simulated,
        "wall": wall,
        "paused": transport.paused(),
        "mean_in_flight": transport.area / simulated if simulated else 0.0,
        "429s": transport.statuses[429],
        "requests": transport.requests,
        "ok_per_s": (transport.requests - transport.statuses[429]) / simulated,
        "accepted": accepted,
        "accounted": accepted + uncertain + failed,
        "gave_up": failed,
    }


def scenario_label(scenario: str, args: argparse.Namespace) -> str:
    if scenario == "storm":
        return f"storm: every POST, {STORM[0]:g}-{STORM[1]:g} s"
    if "/s" in scenario:
        capacity, _, how = scenario.partition("/s")
        after = (
            "truthful Retry-After"
            if how.strip() == "truthful"
            else f"Retry-After {args.retry_after:g}"
        )
        return f"server takes {capacity} POSTs/s, {after}"
    share, _, after = scenario.partition("%")
    after = after.removeprefix("@") or f"{args.retry_after:g}"
    return f"{share} % of POSTs, Retry-After {after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.1, help="round trip, simulated s")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--capacity", type=float, default=40.0, help="POSTs/s, last scenarios")
    parser.add_argument("--scenarios", help="comma-separated subset, e.g. '5%%@0,40/s truthful'")
    parser.add_argument("--pacers", help="comma-separated subset of the contenders' names")
    args = parser.parse_args()
    contenders: dict[str, Callable[..., Any]] = {
        "previous": LegacyPacer,
        "current": Pacer,
        # The same policy without pacing recovery by Retry-After: +1 per clean window.
        "current, recover_every=0": functools.partial(Pacer, recover_every=0.0),
    }
    if args.pacers:
        contenders = {k: v for k, v in contenders.items() if k in args.pacers.split(",")}
    capacity = f"{args.capacity:g}/s"
    scenarios = ["0%", "1%", "5%", "20%", "5%@0", "storm", capacity, f"{capacity} truthful"]
    if args.scenarios:
        scenarios = args.scenarios.split(",")
    print(
        f"{args.rows} rows, concurrency 16, round trip {args.latency:g} s (0.5-1.5x), "
        f"Retry-After {args.retry_after:g} s, seed {args.seed}; virtual clock\n"
    )
    print(
        "| 429s | pacer | simulated s | paused s | wall s | mean in flight | 429s received "
        "| requests | ok/s | accepted | accounted | gave up |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario in scenarios:
        label = scenario_label(scenario, args)
        for name, factory in contenders.items():
            r = measure(factory, scenario, args)
            print(
                f"| {label} | {name} | {r['simulated']:.1f} | {r['paused']:.1f} | "
                f"{r['wall']:.1f} | "
                f"{r['mean_in_flight']:.2f} | {r['429s']} | {r['requests']} | "
                f"{r['ok_per_s']:.1f} | {r['accepted']} | "
                f"{r['accounted']}/{args.rows} | {r['gave_up']} |",
                flush=True,
            )
    print(f"\n(run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
