"""The pacer's policy, on a fake clock: the shared pause after a 429, one decrease per burst,
isolated 429s against a storm, the floor, recovery paced by Retry-After, the rate cap, and the
rate learned from a token bucket (but not from 429s that come at random).

No wall-clock timing: the pacer gets a clock that moves only when a test (or the pacer's own
sleep) moves it, and requests are driven by hand: acquire, answer, release.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from plextera_data.pacing import MAX_RECOVER_EVERY, Pacer


class FakeTime:
    """A clock that moves only when told; ``sleep`` moves it to the sleeper's wake-up time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, wake)


def make(time: FakeTime, **kwargs: Any) -> Pacer:
    return Pacer(clock=time.clock, sleep=time.sleep, **kwargs)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def send_round(
    pacer: Pacer,
    time: FakeTime,
    limited: Callable[[int], bool],
    *,
    rtt: float = 0.1,
    retry_after: float | None = 1.0,
) -> int:
    """As many requests as the cap allows, at once (waiting out any pause first); they come back
    ``rtt`` s later, answer ``i`` of the round a 429 when ``limited(i)``. Returns the count."""
    count = pacer.limit
    for _ in range(count):
        await pacer.acquire()
    time.now += rtt
    for i in range(count):
        if limited(i):
            pacer.on_rate_limited(retry_after)
        else:
            pacer.on_success()
    for _ in range(count):
        pacer.release()
    return count


def never(i: int) -> bool:
    return False


def always(i: int) -> bool:
    return True


# ------------------------------------------------------------------ the shared pause


def test_one_429_pauses_every_request_for_its_retry_after() -> None:
    time = FakeTime()
    pacer = make(time)

    async def scenario() -> list[float]:
        await pacer.acquire()
        pacer.on_rate_limited(2.5)
        pacer.release()
        admitted: list[float] = []

        async def request() -> None:
            await pacer.acquire()
            admitted.append(time.now)
            pacer.release()

        await asyncio.gather(*(request() for _ in range(5)))
        return admitted

    admitted = run(scenario())
    assert admitted == [2.5] * 5  # all five waited, none longer than asked
    assert pacer.paused_until == 2.5
    assert pacer.rate_limited == 1


def test_a_later_429_extends_the_pause_and_a_shorter_one_never_cuts_it() -> None:
    time = FakeTime()
    pacer = make(time)
    pacer.on_rate_limited(2.0)
    time.now = 1.5
    pacer.on_rate_limited(2.0)
    assert pacer.paused_until == 3.5
    pacer.on_rate_limited(0.5)
    assert pacer.paused_until == 3.5


def test_without_retry_after_the_pause_is_one_second() -> None:
    time = FakeTime()
    pacer = make(time)
    pacer.on_rate_limited(None)
    assert pacer.paused_until == 1.0
    time.now = 5.0
    pacer.on_rate_limited(None)
    assert pacer.paused_until == 6.0


def test_retry_after_zero_is_no_pause() -> None:
    time = FakeTime()
    pacer = make(time)
    time.now = 5.0
    pacer.on_rate_limited(0)
    assert pacer.paused_until == 5.0
    assert pacer.paused_for() == 0.0
    assert pacer.rate_limited == 1


def test_acquire_waits_for_a_free_slot() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=2)

    async def scenario() -> list[str]:
        order: list[str] = []
        await pacer.acquire()
        await pacer.acquire()

        async def third() -> None:
            await pacer.acquire()
            order.append("third admitted")

        task = asyncio.create_task(third())
        for _ in range(3):
            await asyncio.sleep(0)
        order.append("slot released")
        pacer.release()
        await task
        return order

    assert run(scenario()) == ["slot released", "third admitted"]
    assert pacer.in_flight == 2


# ------------------------------------------------------------------ decreases


def test_a_window_of_nothing_but_429s_divides_the_cap_by_four_once() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    assert run(send_round(pacer, time, always)) == 16
    assert pacer.rate_limited == 16
    assert pacer.decreases == 1  # one burst, one decrease: not one per 429
    assert pacer.limit == 4


def test_an_isolated_429_trims_the_cap_a_little() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    run(send_round(pacer, time, lambda i: i == 7))
    # 16 * (1 - 1/16 * 0.75) = 15.25
    assert pacer.limit == 15
    assert pacer.decreases == 1


def test_answers_to_requests_sent_before_a_decrease_do_not_count() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=4)

    async def scenario() -> None:
        for _ in range(4):  # A, B, C, D
            await pacer.acquire()
        pacer.on_success()  # A
        pacer.release()
        await pacer.acquire()  # E, sent before the 429s came back
        for _ in range(3):  # B, C, D: the window (4 answers) closes with 3/4 429s
            pacer.on_rate_limited(1.0)
        assert pacer.decreases == 1
        assert pacer.limit == 1  # 4 * (1 - 3/4 * 0.75) = 1.75
        pacer.on_rate_limited(1.0)  # E: sent at the old pace, no second decrease
        for _ in range(4):
            pacer.release()
        assert pacer.decreases == 1
        assert pacer.rate_limited == 4
        assert pacer.in_flight == 0
        # A request sent after the decrease counts again.
        await pacer.acquire()
        pacer.on_rate_limited(1.0)
        pacer.release()
        assert pacer.decreases == 2

    run(scenario())


def test_a_storm_backs_off_to_the_floor_in_a_few_round_trips() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)

    async def storm(seconds: float) -> list[int]:
        sent = []
        end = time.now + seconds
        while time.now < end:
            sent.append(await send_round(pacer, time, always))
        return sent

    sent = run(storm(9.5))
    # Each round waits out the previous round's Retry-After (1 s) first.
    assert sent[:4] == [16, 4, 1, 1]
    assert set(sent[2:]) == {1}
    assert len(sent) == 10
    assert pacer.rate_limited == sum(sent) == 16 + 4 + 8


def test_the_floor_holds_in_a_storm() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16, min_in_flight=3)

    async def storm() -> None:
        for _ in range(6):
            await send_round(pacer, time, always)

    run(storm())
    assert pacer.limit == 3
    assert pacer.decreases == 6


# ------------------------------------------------------------------ isolated 429s vs increases


def every_20th(start: int) -> Callable[[int], bool]:
    """429 for every 20th answer overall, the round starting at answer ``start``."""
    return lambda i: (start + i) % 20 == 19


def test_isolated_429s_do_not_collapse_the_cap() -> None:
    """One answer in 20 is a 429 (5 %), each pausing the batch for 1 s: the cap stays high
    (the previous policy, halving on each pause and +1 per 20 successes, fell to 1)."""
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    answers = 0
    caps: list[int] = []

    async def drive() -> None:
        nonlocal answers
        while answers < 4000:
            answers += await send_round(pacer, time, every_20th(answers))
            caps.append(pacer.limit)

    run(drive())
    assert pacer.rate_limited == 200
    assert min(caps) >= 8
    assert sum(caps[-50:]) / 50 >= 9


def test_recovery_adds_one_per_clean_window_at_most_once_per_retry_after() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)

    async def scenario() -> list[int]:
        for _ in range(3):
            await send_round(pacer, time, always, retry_after=2.0)
        assert pacer.limit == 1
        caps = []
        for _ in range(12):  # clean rounds, 0.5 s each
            await send_round(pacer, time, never, rtt=0.5)
            caps.append(pacer.limit)
        return caps

    caps = run(scenario())
    # The last decrease was at the end of the third storm round; its 2 s pause is waited out
    # by the first clean round (which then takes 0.5 s): 2.5 s after it, +1; then every 2 s.
    assert caps == [2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]


def test_recover_every_overrides_retry_after() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16, recover_every=0.0)

    async def scenario() -> list[int]:
        await send_round(pacer, time, always, retry_after=30.0)
        caps = []
        for _ in range(5):
            await send_round(pacer, time, never)
            caps.append(pacer.limit)
        return caps

    assert run(scenario()) == [5, 6, 7, 8, 9]  # +1 per clean window of `limit` answers


def test_a_long_retry_after_paces_recovery_at_most_every_ten_seconds() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)

    async def scenario() -> list[int]:
        await send_round(pacer, time, always, retry_after=600.0)  # cap 4, paused to t=600.1
        caps = []
        for _ in range(40):  # clean rounds of 1 s
            await send_round(pacer, time, never, rtt=1.0)
            caps.append(pacer.limit)
        return caps

    caps = run(scenario())
    assert caps[0] == 5  # 601 s after the decrease
    assert caps[-1] == 5 + 39 // int(MAX_RECOVER_EVERY)


def test_the_cap_never_exceeds_max_in_flight() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=4, recover_every=0.0)

    async def scenario() -> None:
        for _ in range(10):
            await send_round(pacer, time, never)

    run(scenario())
    assert pacer.limit == 4
    assert pacer.decreases == 0


# ------------------------------------------------------------------ settings


def test_setting_the_limit_directly_as_the_poller_does() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    pacer.max_in_flight = pacer.limit = 3
    assert pacer.limit == 3
    assert run(send_round(pacer, time, always)) == 3
    assert pacer.decreases == 1  # the window followed the new cap: 3 answers
    assert pacer.limit == 1


def test_the_rate_cap_spaces_requests_and_follows_decreases() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=4, max_per_second=10.0, recover_every=0.0)

    async def scenario() -> list[float]:
        admitted = []
        for _ in range(4):
            await pacer.acquire()
            admitted.append(time.now)
        return admitted

    assert run(scenario()) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    time.now += 0.1
    for _ in range(4):
        pacer.on_rate_limited(1.0)
    for _ in range(4):
        pacer.release()
    assert pacer.rate == pytest.approx(2.5)  # 10 * 0.25, as the cap went 4 -> 1
    assert pacer.limit == 1
    run(send_round(pacer, time, never))
    assert pacer.limit == 2
    assert pacer.rate == pytest.approx(5.0)  # grew by one slot's share of 10/s


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
        ({"max_per_second": 0}, "max_per_second must be positive"),
        ({"decrease": 0.0}, "decrease must be between 0 and 1"),
        ({"decrease": 1.0}, "decrease must be between 0 and 1"),
        ({"recover_every": -1.0}, "recover_every must not be negative"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pacer(**kwargs)


# ------------------------------------------------------------------ isolated 429s vs a rate limit


class Bucket:
    """A server's token bucket on the fake clock: ``rate`` tokens per second, ``burst`` deep.
    Called with the time a request arrives: ``None`` (answered) or the truthful Retry-After."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self.tokens = self.burst
        self.at = 0.0

    def __call__(self, now: float) -> float | None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


async def drive(
    pacer: Pacer,
    time: FakeTime,
    server: Callable[[float], float | None],
    seconds: float = float("inf"),
    *,
    requests: int | None = None,
    rtt: float = 0.005,
) -> Counter[str]:
    """One request at a time, as fast as the pacer lets them go, for ``seconds`` of the fake
    clock (or ``requests`` answers); each reaches ``server`` half a round trip after it leaves.
    Counts the answers."""
    answers: Counter[str] = Counter()
    end = time.now + seconds
    while time.now < end and (requests is None or answers.total() < requests):
        await pacer.acquire()
        time.now += rtt
        retry_after = server(time.now - rtt / 2)
        if retry_after is None:
            pacer.on_success()
            answers["ok"] += 1
        else:
            pacer.on_rate_limited(retry_after)
            answers["429"] += 1
        pacer.release()
    return answers


def test_isolated_429s_with_retry_after_zero_move_no_cap() -> None:
    """5 % of answers are 429 asking for no wait: no pause, no decrease, no rate learned."""
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    rng = random.Random(3)

    async def scenario() -> Counter[str]:
        return await drive(pacer, time, lambda now: 0.0 if rng.random() < 0.05 else None, 10.0)

    answers = run(scenario())
    assert answers["429"] > 50
    assert pacer.rate_limited == answers["429"]
    assert pacer.rate_limits == 0
    assert pacer.decreases == 0
    assert pacer.limit == 16
    assert pacer.rate is None
    assert time.sleeps == []  # never paused, never spaced


def test_a_storm_of_retry_after_zero_is_a_rate_limit() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    for _ in range(8):
        run(send_round(pacer, time, always, retry_after=0.0))
    assert pacer.rate_limits > 0
    assert pacer.decreases > 0
    assert pacer.limit < 16


def test_the_rate_of_a_token_bucket_is_learned() -> None:
    """Answers come back in 5 ms, so even one request at a time is 200 per second: only a
    rate cap can hold the batch to the server's 40 per second."""
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    bucket = Bucket(40.0)
    answers = run(drive(pacer, time, bucket, 60.0))
    assert pacer.measured_rate == pytest.approx(40.0, rel=0.05)
    assert pacer.learned_rate is not None
    assert 0.9 * 40 <= pacer.learned_rate <= 1.1 * 40
    assert answers["ok"] / 60.0 >= 0.95 * 40  # the burst of 40 included
    assert answers["429"] / answers.total() <= 0.02
    # Learned, the cap keeps rate limits rare.
    more = run(drive(pacer, time, bucket, 60.0))
    assert more["ok"] / 60.0 >= 0.9 * 40
    assert more["429"] / more.total() <= 0.01


def test_without_learning_the_same_bucket_answers_half_the_requests_429() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16, learn_rate=False)
    answers = run(drive(pacer, time, Bucket(40.0), 60.0))
    assert pacer.learned_rate is None
    assert answers["429"] / answers.total() > 0.3


@pytest.mark.parametrize(
    ("before", "after", "settle"),
    [(40.0, 80.0, 60.0), (80.0, 20.0, 5.0)],
    ids=["granting more: found by probing", "granting less: followed down at once"],
)
def test_a_server_changing_its_rate_is_followed(before: float, after: float, settle: float) -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16)
    bucket = Bucket(before)
    run(drive(pacer, time, bucket, 30.0))
    bucket.rate = after
    run(drive(pacer, time, bucket, settle))
    later = run(drive(pacer, time, bucket, 30.0))
    assert later["ok"] / 30.0 >= 0.9 * after
    assert later["429"] / later.total() <= 0.02
    assert pacer.measured_rate == pytest.approx(after, rel=0.05)


def test_random_429s_asking_for_a_wait_are_not_taken_for_a_rate() -> None:
    """5 % of answers are 429 with Retry-After: 1, at random: slowing down does not make them
    rarer. The learned cap is dropped, learning suspended; the batch is about as fast as a
    pacer that never learns (the pauses cost what they cost)."""

    def timed(learn: bool) -> tuple[float, Pacer]:
        time = FakeTime()
        pacer = make(time, max_in_flight=16, learn_rate=learn)
        rng = random.Random(5)

        def server(now: float) -> float | None:
            return 1.0 if rng.random() < 0.05 else None

        run(drive(pacer, time, server, requests=3000, rtt=0.01))
        return time.now, pacer

    learning, pacer = timed(True)
    never, _ = timed(False)
    assert pacer.learner is not None
    assert pacer.learner.suspended_until > 0
    assert learning <= 1.15 * never


def test_max_per_second_stays_the_cap_when_it_is_lower() -> None:
    time = FakeTime()
    pacer = make(time, max_in_flight=16, max_per_second=30.0)
    answers = run(drive(pacer, time, Bucket(40.0), 30.0))
    assert answers["429"] == 0
    assert pacer.rate == pytest.approx(30.0)
    assert answers["ok"] == pytest.approx(30 * 30, abs=2)
