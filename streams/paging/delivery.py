"""Delivering to one route: a bounded queue, a rate limit, a circuit breaker, timeouts and
retries with exponential backoff and full jitter (from an injected RNG).

One :class:`RouteRunner` per route, each its own asyncio task: a slow or hanging receiver
holds up only its own queue. What an attempt costs:
  1. the breaker: after ``BREAKER_FAILURES`` failures in a row the route waits
     ``BREAKER_COOLDOWN_S`` before one trial request (no hammering a receiver that is down);
  2. the rate limit: a token bucket of the route's events per minute (PagerDuty about
     120/min per routing key, Slack one message a second);
  3. the request, bounded by the route's ``timeout_s``;
  4. the answer: 2xx done; 429, 408, 5xx, a timeout or a broken connection are retried after
     ``Retry-After`` when the receiver gives one, else ``uniform(0, min(cap, base * 2**n))``;
     any other 4xx is final (retrying would fail the same way).
After ``max_attempts`` the caller dead-letters the notice with the last error. Errors never
carry the URL or a secret (each secret's value is replaced by ``***``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tokenbrake.streams.paging.receivers import Notice, Request, build, classify
from tokenbrake.streams.paging.routes import Route, Secrets

BREAKER_FAILURES = 5
BREAKER_COOLDOWN_S = 30.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0


@dataclass(slots=True)
class Job:
    series: str
    route_id: str
    action: str  # trigger | resolve
    notice: Notice
    repost: bool = False  # an Alertmanager re-post: one attempt, never dead-lettered


@dataclass(slots=True)
class Outcome:
    ok: bool
    attempts: int
    status: int | None = None
    answer: str = ""  # the receiver's body (truncated, redacted)
    error: str | None = None
    final: bool = False  # a 4xx: retrying cannot help


class TokenBucket:
    """``per_minute`` events a minute, in bursts of at most ``burst``."""

    def __init__(self, per_minute: int, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = per_minute / 60.0, burst, clock
        self.tokens, self.at = float(burst), clock()

    def wait_s(self) -> float:
        """Seconds until a token is free (0: take it now)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class Breaker:
    """Closed until ``failures`` failures in a row; then open for ``cooldown_s``; then one trial."""

    def __init__(self, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.streak, self.opened_at = 0, None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.cooldown_s else "half_open"

    def wait_s(self) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def success(self) -> None:
        self.streak, self.opened_at = 0, None

    def failure(self) -> None:
        self.streak += 1
        if self.streak >= self.failures:
            self.opened_at = self.clock()  # (again, after a failed trial)


def backoff_s(attempt: int, rng: random.Random, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**(attempt-1))).

    >>> r = random.Random(1); [round(backoff_s(n, r), 3) for n in (1, 2, 3)]
    [0.067, 0.847, 1.528]
    """
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_after_s(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(RETRY_AFTER_CAP_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class RouteRunner:
    def __init__(self, route: Route, secrets: Secrets, session: aiohttp.ClientSession, rng: random.Random,
                 on_done: Callable[[Job, Outcome], Awaitable[None]], queue_max: int = 1000,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.route, self.secrets, self.session, self.rng = route, secrets, session, rng
        self.on_done, self.clock, self.sleep = on_done, clock, sleep
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_max)
        self.bucket = TokenBucket(route.per_minute, clock=clock)
        self.breaker = Breaker(clock=clock)
        self.busy = False
        self._secret_values = [v.get_secret_value() for v in secrets.values.values() if v.get_secret_value()]

    def offer(self, job: Job) -> bool:
        """Queue ``job``; False when the queue is full (the caller offers it again later)."""
        try:
            self.queue.put_nowait(job)
            return True
        except asyncio.QueueFull:
            return False

    async def run(self) -> None:
        while True:
            job = await self.queue.get()
            self.busy = True
            try:
                outcome = await self.deliver(job.notice, 1 if job.repost else self.route.max_attempts)
                await self.on_done(job, outcome)
            finally:
                self.busy = False

    def redact(self, text: str) -> str:
        for value in self._secret_values:
            text = text.replace(value, "***")
        return text

    async def deliver(self, notice: Notice, max_attempts: int) -> Outcome:
        request = build(self.route.kind, notice, self.secrets)
        outcome = Outcome(ok=False, attempts=0)
        for attempt in range(1, max_attempts + 1):
            await self.sleep(self.breaker.wait_s())
            wait = self.bucket.wait_s()
            while wait > 0:
                await self.sleep(wait)
                wait = self.bucket.wait_s()
            self.bucket.take()
            outcome.attempts = attempt
            delay = None
            try:
                status, body, headers = await self._post(request)
            except TimeoutError:
                outcome.error = f"timeout after {self.route.timeout_s:g}s"
            except (aiohttp.ClientError, OSError) as exc:  # the text may name the URL: only the type
                outcome.error = f"connection failed ({type(exc).__name__})"
            else:
                outcome.status, outcome.answer = status, self.redact(body[:500])
                verdict = classify(status)
                if verdict == "ok":
                    self.breaker.success()
                    outcome.ok, outcome.error = True, None
                    return outcome
                outcome.error = f"HTTP {status}: {outcome.answer[:200]}".rstrip(": ")
                if verdict == "permanent":
                    outcome.final = True
                    return outcome
                delay = retry_after_s(headers) if status == 429 else None
            self.breaker.failure()
            if attempt < max_attempts:
                await self.sleep(delay if delay is not None else backoff_s(attempt, self.rng))
        return outcome

    async def _post(self, request: Request) -> tuple[int, str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.route.timeout_s)
        async with asyncio.timeout(self.route.timeout_s):
            async with self.session.post(request.url, data=request.body, headers=request.headers,
                                         timeout=timeout, allow_redirects=False) as resp:
                return resp.status, await resp.text(errors="replace"), resp.headers
