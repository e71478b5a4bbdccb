"""The request loop shared by ``batch`` and ``offline-eval``: bounded concurrency, retries, exactly once.

Every item ends in exactly one :class:`Outcome` - ``ok``, ``error`` (permanent failure, or transient
failures until the deadline) or ``skipped`` (the file could not be prepared client-side) - because a
batch report that silently drops or doubles images cannot be trusted for evaluation. Each item is
owned by one worker from start to finish and retries happen inside that worker, so an item can never
be answered twice, however the server misbehaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from client.core.transport import ErrorInfo, classify

# Images per request by default (``--request-batch``): enough to share a request's fixed cost, few
# enough that a request that must be split image by image (one bad file in it) stays cheap.
DEFAULT_REQUEST_BATCH = 16
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
    transient: bool = False  # an error that outlasted the retry deadline: the server's, not the item's


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


async def _attempts(
    send: Callable[[], Awaitable[T]], policy: RetryPolicy, pacer: _Pacer, rng: random.Random
) -> Outcome[T]:
    """One request, retried on transient errors until the policy's deadline; never more than once ok."""
    started, attempt, retries = time.monotonic(), 0, Counter()
    while True:
        attempt += 1
        await pacer.wait()
        t0 = time.perf_counter()
        try:
            value = await send()
        except Exception as exc:
            info: ErrorInfo = classify(exc)
        else:
            return Outcome("ok", value, (time.perf_counter() - t0) * 1000.0, attempt, retries=retries)
        if not info.transient:
            return Outcome("error", None, None, attempt, info.kind, info.message, retries)
        pause = policy.backoff(attempt, rng)
        if time.monotonic() + pause - started > policy.deadline_s:
            message = (
                f"gave up after {attempt} attempts in {time.monotonic() - started:.1f} s: {info.message}"
            )
            return Outcome("error", None, None, attempt, info.kind, message, retries, transient=True)
        retries[info.kind] += 1
        await asyncio.sleep(pause)


def _prepared(item: Any, prepare: Callable[[Any], P]) -> tuple[P | None, Outcome | None]:
    try:
        return prepare(item), None
    except Exception as exc:
        return None, Outcome("skipped", error_kind="unreadable", error=" ".join(str(exc).split()))


async def run_all(
    items: Sequence[Any],
    prepare: Callable[[Any], P],
    send: Callable[[list[P]], Awaitable[list[T]]],
    concurrency: int,
    policy: RetryPolicy | None = None,
    on_done: Callable[[int, Outcome[T]], None] | None = None,
    max_rps: float | None = None,
    seed: int = 0,
    request_batch: int = 1,
) -> list[Outcome[T]]:
    """Process ``items`` with ``concurrency`` workers; return one outcome per item, in item order.

    Up to ``request_batch`` prepared items travel in one request (``send`` takes a list and returns
    one value per item, in order). A request that fails permanently with several items in it is
    retried item by item, so one bad image costs only its own prediction and is reported by name;
    a transient failure retries the whole request, which cannot answer any item twice because each
    request's items are owned by one worker until they finish.

    Args:
        prepare: item -> payload, run once per item; an exception here marks the item ``skipped``.
        send: payloads -> values, awaited per attempt; exceptions are classified and maybe retried.
        on_done: called once per item as it finishes (progress bars, live counters).
        max_rps: optional cap on request starts per second (attempts, including retries).
    """
    if concurrency < 1 or request_batch < 1:
        raise ValueError(f"concurrency and request_batch must be >= 1, got {concurrency}, {request_batch}")
    results: list[Outcome[T] | None] = [None] * len(items)
    chunks = [list(range(i, min(i + request_batch, len(items)))) for i in range(0, len(items), request_batch)]
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    pacer, rng = _Pacer(max_rps), random.Random(seed)
    policy = policy or RetryPolicy()

    def finish(i: int, outcome: Outcome[T]) -> None:
        if results[i] is not None:  # cannot happen: each index belongs to one chunk, dequeued once
            raise AssertionError(f"item {i} finished twice")
        results[i] = outcome
        if on_done is not None:
            on_done(i, outcome)

    async def chunk_of(indices: list[int]) -> None:
        payloads: list[tuple[int, P]] = []
        for i in indices:
            payload, skipped = _prepared(items[i], prepare)
            if skipped is not None:
                finish(i, skipped)
            else:
                payloads.append((i, payload))  # type: ignore[arg-type]
        if not payloads:
            return
        batch = [p for _, p in payloads]
        out = await _attempts(lambda: send(batch), policy, pacer, rng)
        if out.status == "ok":
            values = list(out.value or [])
            if len(values) != len(payloads):
                raise AssertionError(f"send returned {len(values)} values for {len(payloads)} items")
            for (i, _), value in zip(payloads, values, strict=True):
                finish(i, Outcome("ok", value, out.latency_ms, out.attempts, retries=out.retries))
            return
        if len(payloads) == 1 or out.transient:
            for i, _ in payloads:
                finish(i, dataclasses.replace(out, retries=Counter(out.retries)))
            return
        for i, payload in payloads:  # a permanent error in a shared request: find the item(s) to blame
            single = await _attempts(lambda p=payload: send([p]), policy, pacer, rng)
            if single.status == "ok":
                single.value = single.value[0]  # type: ignore[index]
            single.attempts += out.attempts
            finish(i, single)

    async def worker() -> None:
        while True:
            try:
                indices = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await chunk_of(indices)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(chunks))))))
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise AssertionError(f"{len(missing)} items never finished (first: {missing[:5]})")
    return results  # type: ignore[return-value]
