"""Shared fixtures and helpers of the consumer-group tests: a store in tmp_path, a recording
rebalance listener, a round-robin driver that polls several consumers from one thread (keeping
every record each returned), and waits on conditions with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import TopicPartition
from logstore.groups.coordinator import Group
from logstore.groups.membership import ConsumerRebalanceListener

# session timeouts in the tests that do not expect members to die: long enough that a slow CI
# machine never times a member out by accident
QUIET = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 100}
# for the tests that let members die: a dead member is noticed within a fraction of a second
FAST_DEATH = {"session_timeout_ms": 500, "heartbeat_interval_ms": 50}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[logstore.Store]:
    s = logstore.open(tmp_path / "data", cleaner=False)
    yield s
    s.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def fill(store: logstore.Store, topic: str, per_partition: int, start: int = 0) -> None:
    """``per_partition`` records on every partition of ``topic``: value b"<p>-<i>", key b"k<i>"."""
    producer = store.producer()
    for p in range(store.partitions_for(topic)):
        for i in range(start, start + per_partition):
            producer.send(topic, b"%d-%d" % (p, i), key=b"k%d" % i, partition=p)
    producer.close()


def partitions(topic: str, count: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in range(count)}


def group(store: logstore.Store, group_id: str) -> Group:
    """The coordinator's live view of ``group_id`` (white box: state, generation, members)."""
    return store._group_coordinator()._groups[group_id]


class RecordingListener(ConsumerRebalanceListener):
    """Records every callback as (kind, partitions), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append(("revoked", frozenset(revoked)))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append(("assigned", frozenset(assigned)))

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.events.append(("lost", frozenset(lost)))

    def union(self, kind: str) -> set[TopicPartition]:
        return {tp for k, tps in self.events if k == kind for tp in tps}

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def clear(self) -> None:
        self.events.clear()


class Driver:
    """Polls consumers round-robin from one thread; ``received[i]`` keeps what consumer ``i``
    returned. With ``commit`` every poll that returned records is followed by ``commit()``."""

    def __init__(self, consumers: Iterable[logstore.Consumer], commit: bool = False) -> None:
        self.consumers = list(consumers)
        self.received: list[list[Any]] = [[] for _ in self.consumers]
        self.commit = commit

    def add(self, consumer: logstore.Consumer) -> int:
        self.consumers.append(consumer)
        self.received.append([])
        return len(self.consumers) - 1

    def poll_round(self, timeout: float = 0.005) -> int:
        n = 0
        for i, c in enumerate(self.consumers):
            if c.closed:
                continue
            records = c.poll(timeout)
            self.received[i].extend(records)
            n += len(records)
            if records and self.commit:
                c.commit()
        return n

    def run_until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll_round()
            if condition():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; consumers: {self.consumers}")

    def live(self) -> list[logstore.Consumer]:
        return [c for c in self.consumers if not c.closed]

    def settled(self, store: logstore.Store, group_id: str, expected: set[TopicPartition]) -> bool:
        """The group is Stable, its members are exactly the live consumers of it, every one has taken the
        current generation, and their assignments split ``expected`` with no overlap."""
        g = group(store, group_id)
        live = [c for c in self.live() if c.group_id == group_id]
        if g.state != "Stable" or {c.member_id for c in live} != set(g.members):
            return False
        if any(c.generation != g.generation for c in live):
            return False
        owned = [tp for c in live for tp in c.assignment()]
        return len(owned) == len(set(owned)) and set(owned) == expected

    def settle(self, store: logstore.Store, group_id: str, expected: set[TopicPartition],
               timeout: float = 10.0) -> None:
        self.run_until(lambda: self.settled(store, group_id, expected), f"group {group_id} to settle on "
                       f"{sorted(expected)}", timeout)

    def drain_until_count(self, index: int, count: int, timeout: float = 10.0) -> None:
        self.run_until(lambda: len(self.received[index]) >= count, f"consumer {index} to receive {count} records",
                       timeout)


def positions(records: Iterable[Any]) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of records, in the order given."""
    return [(r.topic, r.partition, r.offset) for r in records]
