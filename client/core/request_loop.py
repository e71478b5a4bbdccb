"""The request loop shared by ``batch`` and ``offline-eval``: bounded concurrency, retries, exactly once.

Every item ends in exactly one :class:`Outcome` - ``ok``, ``error`` (permanent failure, or transient
failures until the deadline) or ``skipped`` (the file could not be prepared client-side) - because a
batch report that silently drops or doubles images cannot be trusted for evaluation. Each item is
owned by one worker from start to finish and retries happen inside that worker, so an item can never
be answered twice, however the server misbehaves.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from client.core.transport import ErrorInfo, classify

T = TypeVar("T")
P = TypeVar("P")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient errors, until ``deadline_s`` after the first try.

    The default deadline outlasts a server restart (a few seconds for Triton to load its models) with
    room to spare; permanent errors (400 / INVALID_ARGUMENT, 404) are never retried.
    """

    deadline_s: float = 60.0
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, attempt - 1))
        return base * rng.uniform(0.5, 1.0)


@dataclass
class Outcome(Generic[T]):
    """How one item ended. ``latency_ms`` is the successful attempt's round trip."""

    status: str  # ok | error | skipped
    value: T | None = None
    latency_ms: float | None = None
    attempts: int = 0
    error_kind: str | None = None
    error: str | None = None
    retries: Counter = field(default_factory=Counter)


class _Pacer:
    """Spaces request starts ``1/rate`` seconds apart across all workers (``None``: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            self.next = max(self.next, now)
            delay, self.next = self.next - now, self.next + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


async def run_all(
    items: Sequence[Any],
    prepare: Callable[[Any], P],
    send: Callable[[P], Awaitable[T]],
    concurrency: int,
    policy: RetryPolicy | None = None,
    on_done: Callable[[int, Outcome[T]], None] | None = None,
    max_rps: float | None = None,
    seed: int = 0,
) -> list[Outcome[T]]:
    """Process ``items`` with ``concurrency`` workers; return one outcome per item, in item order.

    Args:
        prepare: item -> payload, run once per item; an exception here marks the item ``skipped``.
        send: payload -> value, awaited per attempt; exceptions are classified and maybe retried.
        on_done: called once per item as it finishes (progress bars, live counters).
        max_rps: optional cap on request starts per second (attempts, including retries).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    results: list[Outcome[T] | None] = [None] * len(items)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(items)):
        queue.put_nowait(i)
    pacer, rng = _Pacer(max_rps), random.Random(seed)
    policy = policy or RetryPolicy()

    async def one(item: Any) -> Outcome[T]:
        try:
            payload = prepare(item)
        except Exception as exc:
            return Outcome("skipped", error_kind="unreadable", error=" ".join(str(exc).split()))
        started, attempt, retries = time.monotonic(), 0, Counter()
        while True:
            attempt += 1
            await pacer.wait()
            t0 = time.perf_counter()
            try:
                value = await send(payload)
            except Exception as exc:
                info: ErrorInfo = classify(exc)
            else:
                latency = (time.perf_counter() - t0) * 1000.0
                return Outcome("ok", value, latency, attempt, retries=retries)
            if not info.transient:
                return Outcome("error", None, None, attempt, info.kind, info.message, retries)
            pause = policy.backoff(attempt, rng)
            if time.monotonic() + pause - started > policy.deadline_s:
                message = (
                    f"gave up after {attempt} attempts in {time.monotonic() - started:.1f} s: {info.message}"
                )
                return Outcome("error", None, None, attempt, info.kind, message, retries)
            retries[info.kind] += 1
            await asyncio.sleep(pause)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            outcome = await one(items[i])
            if results[i] is not None:  # cannot happen: each index is dequeued once
                raise AssertionError(f"item {i} finished twice")
            results[i] = outcome
            if on_done is not None:
                on_done(i, outcome)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(items))))))
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise AssertionError(f"{len(missing)} items never finished (first: {missing[:5]})")
    return results  # type: ignore[return-value]
