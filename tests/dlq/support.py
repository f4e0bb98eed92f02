"""Shared helpers of the dead-letter tests: a clock the tests move, a recording handler, and
running a processor until it has nothing left to do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import logstore
from logstore import TopicPartition
from logstore.dlq import RetryingProcessor, RetryPolicy
from logstore.dlq.topics import read_partitions

START_MS = 1_700_000_000_000


class Clock:
    """Milliseconds since the epoch, moved by the test only."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class Handler:
    """Records every call; ``fail(record, attempt)`` returns an exception to raise (or None).
    ``attempt`` counts the calls for that (key, value), from 1."""

    def __init__(self, fail: Callable[[Any, int], BaseException | None] | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, Any]] = []
        self.ok: list[tuple[Any, Any]] = []

    def __call__(self, record: Any) -> None:
        item = (record.key, record.value)
        self.calls.append(item)
        exc = self.fail(record, self.calls.count(item)) if self.fail is not None else None
        if exc is not None:
            raise exc
        self.ok.append(item)

    def attempts(self, value: Any) -> int:
        return sum(1 for _, v in self.calls if v == value)

    def handled_values(self, key: Any) -> list[Any]:
        return [v for k, v in self.ok if k == key]


def send(store: logstore.Store, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
         partition: int | None = 0, headers: list[tuple[str, bytes | None]] | None = None) -> list[int]:
    with store.producer() as producer:
        return [producer.send(topic, value=v, key=k, partition=partition, headers=headers).get().offset
                for k, v in records]


def make_processor(store: logstore.Store, topic: str, handler: Any, clock: Clock, *,
                   start: dict[TopicPartition, int] | None = None, **options: Any) -> RetryingProcessor:
    """A processor over a fresh consumer of every partition of ``topic`` (group_id=None)."""
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign(store.topic_partitions([topic]))
    for tp, offset in (start or {}).items():
        consumer.seek(tp, offset)
    options.setdefault("policy", RetryPolicy(max_attempts=3, backoff_ms=100, multiplier=2.0, max_backoff_ms=1000))
    return RetryingProcessor(store, consumer, handler, clock=clock, **options)


def settle(proc: RetryingProcessor, clock: Clock, step_ms: int = 1000, rounds: int = 30) -> int:
    """run_once, moving the clock by ``step_ms`` between runs, until a run does nothing and no
    retry waits; returns the number of runs."""
    idle = 0
    for n in range(1, rounds + 1):
        done = proc.run_once(0)
        idle = 0 if done or any(proc.pending().values()) or proc.blocked() else idle + 1
        if idle == 2:  # twice: a run may only have caught up with a partition that joined
            return n
        clock.advance(step_ms)
    raise AssertionError(f"still busy after {rounds} runs: pending {proc.pending()}")


def topic_records(store: logstore.Store, topic: str) -> list[Any]:
    return list(read_partitions(store, store.topic_partitions([topic])))


def our_headers(record: Any, prefix: str = "logstore.dlq.") -> list[tuple[str, bytes | None]]:
    return [(n, v) for n, v in record.headers if n.startswith(prefix)]
