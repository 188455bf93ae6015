"""Client-side rate limiting for the Flex Web Service.

IBKR allows 1 request per second and 10 requests per minute per token, counting both endpoints.
``RateLimiter`` enforces any set of sliding windows, thread-safely, with an injectable clock and sleep;
``shared_limiter(token)`` returns the one limiter of a token in this process (keyed by a hash, never
by the token itself).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most ``max_requests`` requests within any sliding window of ``window_s`` seconds."""

    max_requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.window_s <= 0:
            raise ValueError(
                f"invalid rate limit {self!r}: need max_requests >= 1 and window_s > 0"
            )


IBKR_RATE_LIMITS: tuple[RateLimit, ...] = (RateLimit(1, 1.0), RateLimit(10, 60.0))


def token_key(token: str) -> str:
    """Stable, non-reversible key for a token (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def wait_needed(history: Sequence[float], limits: Sequence[RateLimit], now: float) -> float:
    """Seconds from ``now`` until one more request fits every limit, given the (ascending) clock
    times of earlier requests; 0.0 when it fits now. A request at time ``s`` counts in the window
    ``(now - window_s, now]``."""
    wait = 0.0
    for limit in limits:
        recent = [t for t in history if t > now - limit.window_s]
        if len(recent) >= limit.max_requests:
            oldest_blocking = recent[len(recent) - limit.max_requests]
            wait = max(wait, oldest_blocking + limit.window_s - now)
    return wait


class RateLimiter:
    """Blocks callers so that admitted requests respect every ``RateLimit``.

    ``margin_s`` is added to each computed wait to absorb clock/latency skew against the server.
    Thread-safe: concurrent callers are admitted one at a time in a consistent order.
    """

    def __init__(
        self,
        limits: Sequence[RateLimit] = IBKR_RATE_LIMITS,
        *,
        margin_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not limits:
            raise ValueError("RateLimiter needs at least one RateLimit")
        self.limits = tuple(limits)
        self.margin_s = margin_s
        self._clock = clock
        self._sleep = sleep
        self._horizon = max(limit.window_s for limit in self.limits)
        self._history: deque[float] = deque()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(limits={self.limits!r}, margin_s={self.margin_s})"

    def delay(self) -> float:
        """Seconds a request made now would have to wait (no side effect)."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            wait = wait_needed(self._history, self.limits, now)
            return wait + self.margin_s if wait > 0 else 0.0

    def acquire(self) -> float:
        """Wait until a request is allowed, record it, and return the clock time it was admitted."""
        while True:
            with self._lock:
                now = self._clock()
                self._prune(now)
                wait = wait_needed(self._history, self.limits, now)
                if wait <= 0:
                    self._history.append(now)
                    return now
            self._sleep(wait + self.margin_s)

    def _prune(self, now: float) -> None:
        while self._history and self._history[0] <= now - self._horizon:
            self._history.popleft()


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(token: str) -> RateLimiter:
    """The process-wide ``RateLimiter`` (IBKR limits) of ``token``, created on first use."""
    key = token_key(token)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter()
        return limiter
