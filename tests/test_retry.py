"""The retry policy: backoff, Retry-After parsing, which errors are retried for GET and POST."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from plextera_data import errors
from plextera_data.retry import (
    RetryPolicy,
    is_retryable_for_get,
    is_retryable_for_post,
    parse_retry_after,
    retry_async,
)

NOW = datetime(2026, 4, 7, 10, 0, 0, tzinfo=UTC)


def status_error(cls: type[errors.APIStatusError], status: int, **kw: object) -> Exception:
    return cls(status_code=status, method="GET", path="/workflow-runs/r", **kw)  # type: ignore[arg-type]


def connection_error(*, sent: bool) -> errors.APIConnectionError:
    return errors.APIConnectionError("boom", method="POST", path="/p", request_sent=sent)


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    assert parse_retry_after("Tue, 07 Apr 2026 10:00:30 GMT", now=NOW) == 30.0


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Tue, 07 Apr 2026 09:59:00 GMT", now=NOW) == 0.0


def test_parse_retry_after_http_date_defaults_to_the_current_time() -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    value = future.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 3500 < seconds <= 3600


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_initial_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=3.0, jitter=0)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=100.0, jitter=0.5, rng=random.Random(7))
    delays = [policy.backoff(3) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100  # actually random, so clients do not retry in step


def test_delay_honours_retry_after_and_caps_it() -> None:
    policy = RetryPolicy(max_retry_after=60.0, jitter=0)
    assert policy.delay(status_error(errors.RateLimitError, 429, retry_after=5.0), 0) == 5.0
    assert policy.delay(status_error(errors.RateLimitError, 429, retry_after=600.0), 0) == 60.0
    assert policy.delay(status_error(errors.RateLimitError, 429), 2) == policy.backoff(2)
    assert policy.delay(status_error(errors.ServerError, 503, retry_after=3.0), 0) == 3.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"jitter": 1.5}, {"initial_backoff": -1.0}, {"max_retry_after": -2.0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_a_frozen_value() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_retries = 9  # type: ignore[misc]
    assert RetryPolicy(max_retries=2) == RetryPolicy(max_retries=2)


# --------------------------------------------------------------------------- which errors


GET_CASES = [
    (status_error(errors.RateLimitError, 429), True),
    (status_error(errors.ServerError, 500), True),
    (status_error(errors.ServerError, 502, retryable=False), True),
    (status_error(errors.ConflictError, 409, retryable=True), True),
    (status_error(errors.ConflictError, 409, retryable=False), False),
    (status_error(errors.ConflictError, 409), False),
    (status_error(errors.NotFoundError, 404), False),
    (status_error(errors.AuthenticationError, 401), False),
    (status_error(errors.BadRequestError, 400), False),
    (connection_error(sent=True), True),
    (connection_error(sent=False), True),
    (errors.APITimeoutError("slow", method="GET", path="/p"), True),
    (errors.MalformedResponseError("bad", method="GET", path="/p"), True),
    (ValueError("not an API error"), False),
]


@pytest.mark.parametrize(("exc", "expected"), GET_CASES)
def test_is_retryable_for_get(exc: Exception, expected: bool) -> None:
    assert is_retryable_for_get(exc) is expected


POST_CASES = [
    (status_error(errors.RateLimitError, 429), True),
    (status_error(errors.ServerError, 500), False),
    (status_error(errors.ServerError, 503, retryable=True), False),
    (status_error(errors.ConflictError, 409, retryable=True), False),
    (connection_error(sent=False), True),
    (connection_error(sent=True), False),
    (errors.APITimeoutError("slow", method="POST", path="/p", request_sent=True), False),
    (errors.APITimeoutError("no conn", method="POST", path="/p", request_sent=False), True),
    (errors.MalformedResponseError("bad", method="POST", path="/p"), False),
]


@pytest.mark.parametrize(("exc", "expected"), POST_CASES)
def test_is_retryable_for_post(exc: Exception, expected: bool) -> None:
    assert is_retryable_for_post(exc) is expected


def test_post_rate_limits_can_be_left_to_the_caller() -> None:
    exc = status_error(errors.RateLimitError, 429)
    assert is_retryable_for_post(exc, retry_rate_limits=False) is False


def test_a_post_is_retried_only_when_no_run_can_exist() -> None:
    for exc, retried in POST_CASES:
        assert isinstance(exc, errors.APIError)
        if retried:
            assert exc.may_have_created is False
    # the uncertain ones are exactly those never retried
    uncertain = [exc for exc, _ in POST_CASES if getattr(exc, "may_have_created", True)]
    assert uncertain
    assert not any(is_retryable_for_post(exc) for exc in uncertain)


# --------------------------------------------------------------------------- the retry loop


def test_retry_async_retries_then_succeeds_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    sleep = FakeSleep()
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise status_error(errors.ServerError, 500)
        return "ok"

    policy = RetryPolicy(jitter=0)
    with caplog.at_level(logging.INFO, logger="plextera_data"):
        result = asyncio.run(
            retry_async(attempt, policy=policy, should_retry=is_retryable_for_get, sleep=sleep)
        )
    assert result == "ok"
    assert calls == 3
    assert sleep.delays == [0.5, 1.0]
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]
    assert "retry 1 of 4" in caplog.records[0].getMessage()


def test_retry_async_gives_up_after_max_retries() -> None:
    sleep = FakeSleep()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise status_error(errors.ServerError, 503)

    policy = RetryPolicy(max_retries=2, jitter=0)
    with pytest.raises(errors.ServerError):
        asyncio.run(
            retry_async(attempt, policy=policy, should_retry=is_retryable_for_get, sleep=sleep)
        )
    assert calls == 3
    assert sleep.delays == [0.5, 1.0]


def test_retry_async_raises_unretryable_errors_at_once() -> None:
    sleep = FakeSleep()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise status_error(errors.NotFoundError, 404)

    with pytest.raises(errors.NotFoundError):
        asyncio.run(
            retry_async(
                attempt, policy=RetryPolicy(), should_retry=is_retryable_for_get, sleep=sleep
            )
        )
    assert calls == 1
    assert sleep.delays == []


# ----------------------------------------------------------------------- zero waits, one attempt


def test_retry_after_zero_is_no_wait() -> None:
    policy = RetryPolicy(jitter=0, initial_backoff=5.0)
    limited = status_error(errors.RateLimitError, 429, retry_after=parse_retry_after("0"))
    assert policy.delay(limited, 3) == 0.0  # not the backoff, not a 1 s floor
    assert policy.next_wait(limited, 0, creates=True) == 0.0
    assert policy.next_wait(limited, 0, creates=False) == 0.0
    past = parse_retry_after("Tue, 07 Apr 2026 09:00:00 GMT", now=NOW)
    assert policy.delay(status_error(errors.RateLimitError, 429, retry_after=past), 0) == 0.0


def test_retry_async_sleeps_zero_for_retry_after_zero() -> None:
    sleep = FakeSleep()
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise status_error(errors.RateLimitError, 429, retry_after=0.0)
        return "ok"

    policy = RetryPolicy(initial_backoff=9.0)
    assert asyncio.run(
        retry_async(attempt, policy=policy, should_retry=is_retryable_for_get, sleep=sleep)
    )
    assert sleep.delays == [0.0]


@pytest.mark.parametrize("should_retry", [is_retryable_for_get, is_retryable_for_post])
def test_max_retries_zero_is_one_attempt(should_retry: Any) -> None:
    sleep = FakeSleep()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise status_error(errors.RateLimitError, 429, retry_after=0.0)

    with pytest.raises(errors.RateLimitError):
        asyncio.run(
            retry_async(
                attempt, policy=RetryPolicy(max_retries=0), should_retry=should_retry, sleep=sleep
            )
        )
    assert calls == 1
    assert sleep.delays == []


def test_next_wait_is_the_rule_for_callers_that_retry_themselves() -> None:
    policy = RetryPolicy(max_retries=2, jitter=0, max_retry_after=10.0)
    limited = status_error(errors.RateLimitError, 429, retry_after=30.0)
    server = status_error(errors.ServerError, 503)
    never_sent = connection_error(sent=False)
    sent = connection_error(sent=True)
    # a read: every transient failure, backoff or Retry-After (capped)
    assert [policy.next_wait(server, n, creates=False) for n in range(3)] == [0.5, 1.0, None]
    assert policy.next_wait(limited, 0, creates=False) == 10.0
    assert policy.next_wait(sent, 1, creates=False) == 1.0
    # a creating request: only what cannot have created anything
    assert policy.next_wait(limited, 1, creates=True) == 10.0
    assert policy.next_wait(never_sent, 0, creates=True) == 0.5
    assert policy.next_wait(server, 0, creates=True) is None
    assert policy.next_wait(sent, 0, creates=True) is None
    assert policy.next_wait(limited, 2, creates=True) is None  # retries used up
    assert RetryPolicy(max_retries=0).next_wait(limited, 0, creates=True) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (0.0, 0.0), (5, 5.0), (600.0, 60.0), (None, None), (-1.0, None), (True, None)],
)
def test_capped_retry_after(value: Any, expected: float | None) -> None:
    assert RetryPolicy().capped_retry_after(value) == expected
    assert RetryPolicy().capped_retry_after(float("nan")) is None
