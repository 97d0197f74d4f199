"""When and how long to wait before sending a request again: :class:`RetryPolicy` and helpers.

This module is the one home of the retry rules. The client applies them to every call it makes
(with its own ``RetryPolicy``); code that sends with ``retry=False`` and retries by itself (the
batch engines) asks the same policy through :meth:`RetryPolicy.next_wait`, so there is one set of
rules whichever layer retries:

* A **read** (GET) is retried on 429 (waiting for ``Retry-After``), on 5xx, on any error whose
  envelope says ``retryable: true``, on connection errors and timeouts, and on a 2xx whose body is
  not the documented JSON (:func:`is_retryable_for_get`).
* A **creating request** (starting a run, uploading a file) is retried only when nothing can have
  been created: on 429 and when the connection could not be opened, so the request was never sent
  (:func:`is_retryable_for_post`). The vendor states that creation is not idempotent; a 5xx, a
  timeout or a dropped connection after sending leaves the outcome unknown, and the error says so
  (``may_have_created``).
* At most ``max_retries`` retries after the first attempt: ``RetryPolicy(max_retries=0)`` means
  exactly one attempt.
* Waits grow exponentially from ``initial_backoff`` up to ``max_backoff``, with jitter so that
  many clients do not retry in step. A ``Retry-After`` header (seconds or an HTTP date) is
  honoured as given, ``0`` (or a date in the past) meaning "at once", capped at
  ``max_retry_after`` seconds (60 s by default): a server asking for longer is retried after the
  cap, and that retry counts like any other.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from plextera_data.errors import (
    APIConnectionError,
    APIStatusError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
)

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RetryPolicy",
    "SleepFunction",
    "is_retryable_for_get",
    "is_retryable_for_post",
    "parse_retry_after",
    "retry_async",
]

logger = logging.getLogger("plextera_data")

T = TypeVar("T")

#: An async sleep: ``await sleep(seconds)``. Tests pass a fake that records the delays.
SleepFunction = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry, as a small value object (like ``httpx.Timeout``).

    ``max_retries``: retries after the first attempt (0 disables retrying).
    ``initial_backoff``, ``max_backoff``: the exponential wait ``initial * 2**attempt``, capped.
    ``max_retry_after``: the longest ``Retry-After`` honoured, in seconds.
    ``jitter``: the fraction of each backoff that is random (0 = none, 1 = "full jitter");
    the wait is ``backoff * (1 - jitter * U)`` with ``U`` uniform in ``[0, 1)``.

        >>> RetryPolicy(max_retries=2, jitter=0).backoff(3)
        4.0
    """

    max_retries: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    jitter: float = 0.25
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff and retry-after limits must be >= 0 seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt + 1`` (``attempt`` counts from 0), jittered."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** max(0, attempt))
        if self.jitter:
            base *= 1.0 - self.jitter * self.rng.random()
        return base

    def delay(self, exc: BaseException, attempt: int) -> float:
        """The wait before retrying after ``exc``: ``Retry-After`` if the error has one (capped at
        ``max_retry_after``; ``0`` is no wait), else :meth:`backoff`."""
        retry_after = self.capped_retry_after(getattr(exc, "retry_after", None))
        return retry_after if retry_after is not None else self.backoff(attempt)

    def capped_retry_after(self, retry_after: object) -> float | None:
        """A server's ``Retry-After`` in seconds, capped at ``max_retry_after``; ``None`` if the
        value is missing or not a number of seconds >= 0. ``0`` stays ``0``."""
        if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
            return None
        if not retry_after >= 0:  # also rejects NaN
            return None
        return min(float(retry_after), self.max_retry_after)

    def next_wait(self, exc: BaseException, retries: int, *, creates: bool) -> float | None:
        """Seconds to wait before sending again after ``exc``, or ``None``: do not send again.

        ``retries`` is how many retries this request has had so far (0 after the first attempt);
        ``creates`` says whether the request creates something (a start, an upload), which picks
        :func:`is_retryable_for_post` over :func:`is_retryable_for_get`. This is what code that
        sends with ``retry=False`` and retries by itself should ask.

            >>> from plextera_data.errors import ServerError
            >>> exc = ServerError(status_code=503, method="GET", path="/workflow-runs/r")
            >>> RetryPolicy(jitter=0).next_wait(exc, 0, creates=False)
            0.5
            >>> print(RetryPolicy(jitter=0).next_wait(exc, 0, creates=True))
            None
        """
        should_retry = is_retryable_for_post if creates else is_retryable_for_get
        return self._wait(exc, retries, should_retry)

    def _wait(
        self, exc: BaseException, retries: int, should_retry: Callable[[BaseException], bool]
    ) -> float | None:
        if retries >= self.max_retries or not should_retry(exc):
            return None
        return self.delay(exc, retries)


#: The policy used when none is given.
DEFAULT_RETRY_POLICY = RetryPolicy()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.

    Returns ``None`` for a missing or unreadable value, and never a negative number (a date in
    the past gives ``0.0``). ``now`` (aware UTC) is for tests.

        >>> parse_retry_after("2")
        2.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT",
        ...                   now=datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC))
        30.0
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def is_retryable_for_get(exc: BaseException) -> bool:
    """True when a GET that failed with ``exc`` may be sent again.

    429, 5xx, ``retryable: true``, connection errors and timeouts, malformed 2xx bodies.
    """
    if isinstance(exc, RateLimitError | ServerError):
        return True
    if isinstance(exc, APIStatusError):
        return exc.retryable is True
    return isinstance(exc, APIConnectionError | MalformedResponseError)


def is_retryable_for_post(exc: BaseException, *, retry_rate_limits: bool = True) -> bool:
    """True when a start (POST) that failed with ``exc`` cannot have created a run.

    Only a 429 (if ``retry_rate_limits``) and a connection that was never opened qualify.
    """
    if isinstance(exc, RateLimitError):
        return retry_rate_limits
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    return False


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    should_retry: Callable[[BaseException], bool],
    sleep: SleepFunction | None = None,
    describe: str = "request",
) -> T:
    """Call ``attempt()`` until it succeeds, retrying errors ``should_retry`` accepts.

    At most ``policy.max_retries`` retries (0: one attempt); waits come from
    :meth:`RetryPolicy.delay` and are slept with ``sleep`` (``asyncio.sleep`` by default), a wait
    of 0 included. The last error is raised unchanged.
    """
    do_sleep = sleep if sleep is not None else asyncio.sleep
    retries = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            wait = policy._wait(exc, retries, should_retry)
            if wait is None:
                raise
            retries += 1
            logger.info(
                "Retrying %s in %.2f s (retry %d of %d) after %s: %s",
                describe,
                wait,
                retries,
                policy.max_retries,
                type(exc).__name__,
                exc,
            )
            await do_sleep(wait)
