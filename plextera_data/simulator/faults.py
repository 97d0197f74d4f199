"""Fault injection: rate limits, a token-bucket throttle, server errors, slow answers, dropped
connections, bad bodies."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["FAULT_KINDS", "Fault", "FaultHit", "FaultPlan", "parse_faults"]

#: The kinds of fault the simulator can inject.
FAULT_KINDS = ("rate_limit", "throttle", "server_error", "slow", "drop", "malformed")


@dataclass
class Fault:
    """A fault to inject on matching requests.

    ``kind``: ``"rate_limit"`` (429 with ``Retry-After: retry_after``), ``"throttle"`` (a token
    bucket: ``per_second`` requests a second, bursts of up to ``burst``; a request finding the
    bucket empty gets 429 with a truthful ``Retry-After``: the seconds until a token is back,
    to the millisecond), ``"server_error"``
    (``status`` 500, 502 or 503; default 500), ``"slow"`` (answers after ``delay`` **wall**
    seconds), ``"drop"`` (closes the connection with no HTTP answer; with ``after_processing=True``
    the request was carried out first, so a start did create its run), ``"malformed"`` (a 2xx
    answer whose body is cut-off JSON; the request was carried out).

    Which requests: ``method`` (``"POST"``, ``"GET"`` or ``None`` for both) and ``path`` (a
    substring of the path, e.g. ``"/workflow-runs"``; ``None`` for all) select the matching
    requests; then ``requests`` (1-based numbers among the matching requests) or ``rate`` (the
    probability per matching request, drawn from the simulator's seeded RNG) pick the ones hit.
    With neither, every matching request is hit. ``retry_after`` may be a number of seconds or an
    HTTP date string, sent as is. A throttle takes a token from every matching request (``rate``
    and ``requests`` do not apply) and keeps **wall-clock** time, like a gateway; ``timer``
    (default ``time.monotonic``) is there for tests.
    """

    kind: str
    method: str | None = None
    rate: float | None = None
    requests: Iterable[int] | None = None
    status: int | None = None
    retry_after: float | str = 1.0
    delay: float = 0.0
    after_processing: bool = False
    path: str | None = None
    per_second: float | None = None
    burst: float | None = None
    timer: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    matched: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)
    _tokens: float = field(default=0.0, init=False, repr=False, compare=False)
    _refilled: float | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")
        if self.method is not None:
            self.method = self.method.upper()
            if self.method not in ("GET", "POST"):
                raise ValueError(f"fault method must be 'GET', 'POST' or None, not {self.method!r}")
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, not {self.rate!r}")
        if self.requests is not None:
            self.requests = frozenset(int(n) for n in self.requests)
        if self.kind == "server_error":
            self.status = self.status or 500
            if not 500 <= self.status <= 599:
                raise ValueError(f"server_error status must be 5xx, not {self.status!r}")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if self.kind == "throttle":
            if self.per_second is None or self.per_second <= 0:
                raise ValueError("a throttle needs per_second > 0 (requests a second)")
            if self.burst is None:
                self.burst = max(1.0, float(self.per_second))
            if self.burst < 1:
                raise ValueError("a throttle's burst must be at least 1")
            self._tokens = float(self.burst)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method.upper() != self.method:
            return False
        return self.path is None or self.path in path

    def _take_token(self) -> float | None:
        """Throttle: take a token (``None``) or say in how many seconds one is back."""
        now = self.timer()
        rate, burst = float(self.per_second or 1.0), float(self.burst or 1.0)
        if self._refilled is not None:
            self._tokens = min(burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return math.ceil((1.0 - self._tokens) / rate * 1000) / 1000


@dataclass(frozen=True)
class FaultHit:
    """The fault that hit one request, and the ``Retry-After`` to send (for a 429)."""

    fault: Fault
    retry_after: float | str

    @property
    def kind(self) -> str:
        return self.fault.kind


class FaultPlan:
    """Decides, thread-safely and reproducibly, which fault (if any) hits each request."""

    def __init__(self, seed: int | str, faults: Sequence[Fault] = ()) -> None:
        self.faults: list[Fault] = list(faults)
        self._rng = random.Random(f"{seed}:faults")
        self._lock = threading.Lock()

    def pick(self, method: str, path: str) -> FaultHit | None:
        """The first fault that hits this request; every matching fault counts the request."""
        chosen: FaultHit | None = None
        with self._lock:
            for fault in list(self.faults):
                if not fault.matches(method, path):
                    continue
                fault.matched += 1
                retry_after = fault.retry_after
                if fault.kind == "throttle":
                    wait = fault._take_token()
                    hit = wait is not None
                    retry_after = wait if wait is not None else 0.0
                elif fault.requests is not None:
                    hit = fault.matched in fault.requests
                elif fault.rate is not None:
                    hit = self._rng.random() < fault.rate
                else:
                    hit = True
                if hit and chosen is None:
                    fault.hits += 1
                    chosen = FaultHit(fault, retry_after)
        return chosen


def parse_faults(spec: str) -> list[Fault]:
    """Faults from a compact text, for command-line flags.

    Items are separated by commas; each is ``kind:what[:METHOD]`` where ``what`` is a rate
    (``0.05``) or ``#`` and request numbers joined by ``+`` (``#1+3``). A ``server_error`` may
    name its status as ``server_error=503``, a ``slow`` fault its delay as ``slow=2.5``, a
    ``rate_limit`` its ``Retry-After`` as ``rate_limit=0``. For a ``throttle``, ``what`` is the
    requests a second and ``=`` gives the burst: ``throttle=10:40``.

        parse_faults("rate_limit=0:0.05,server_error=503:0.01,drop:#2:POST,throttle:40")
    """
    faults: list[Fault] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        pieces = item.split(":")
        if len(pieces) not in (2, 3):
            raise ValueError(f"bad fault {item!r}: write kind:rate or kind:#n+m, e.g. drop:0.1")
        head, what = pieces[0], pieces[1]
        method = pieces[2].upper() if len(pieces) == 3 else None
        kind, _, argument = head.partition("=")
        kwargs: dict[str, object] = {"method": method}
        if argument:
            if kind == "server_error":
                kwargs["status"] = int(argument)
            elif kind == "slow":
                kwargs["delay"] = float(argument)
            elif kind == "rate_limit":
                kwargs["retry_after"] = float(argument)
            elif kind == "throttle":
                kwargs["burst"] = float(argument)
            else:
                raise ValueError(f"fault kind {kind!r} takes no '=' argument ({item!r})")
        if kind == "throttle":
            kwargs["per_second"] = float(what)
        elif what.startswith("#"):
            kwargs["requests"] = {int(n) for n in what[1:].split("+") if n}
        else:
            kwargs["rate"] = float(what)
        faults.append(Fault(kind, **kwargs))  # type: ignore[arg-type]
    return faults
