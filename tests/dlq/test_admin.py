"""DeadLetterQueue: list with filters, get, replay (original topic, another topic, rate, dry run)
and discard, statuses kept in the compacted status topic, and bad input that writes nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest

import logstore
from logstore import TopicPartition
from logstore.dlq import DeadLetterQueue, EntryFilter, RetryPolicy, headers as h
from logstore.errors import (
    DeadLetterError,
    DeadLetterStatusError,
    InvalidArgumentError,
    UnknownDeadLetterError,
    UnknownTopicError,
)

from .support import START_MS, Clock, Handler, make_processor, send, settle, topic_records


class Timeout(Exception):
    pass


def failing(record: Any, attempt: int) -> BaseException | None:
    if record.value.startswith(b"t"):
        return Timeout("slow")
    if record.value.startswith(b"v"):
        return ValueError("bad value")
    return None


@pytest.fixture
def queue(store: logstore.Store, clock: Clock) -> DeadLetterQueue:
    """orders (2 partitions) with five dead letters: 0:0..0:2 from partition 0, 1:0..1:1 from 1,
    failed 1 s apart (t*: Timeout, v*: ValueError)."""
    store.create_topic("orders", 2)
    proc = make_processor(store, "orders", Handler(failing), clock, policy=RetryPolicy(max_attempts=1))
    for value, partition, key in ((b"t1", 0, b"a"), (b"v1", 1, b"b"), (b"t2", 0, b"a"), (b"v2", 1, b"c"),
                                  (b"t3", 0, None)):
        send(store, "orders", [(key, value)], partition=partition, headers=[("h", value)])
        proc.run_once(0)
        clock.advance(1000)
    proc.close()
    return DeadLetterQueue(store, "orders", clock=clock, sleep=lambda s: None)


def ends(store: logstore.Store) -> dict[TopicPartition, int]:
    return {tp: store.end_offset(tp) for tp in store.topic_partitions(pattern=re.compile(".*"))}


def test_list_shows_every_entry_oldest_first(queue: DeadLetterQueue) -> None:
    entries = queue.list()
    assert [(e.id, e.value) for e in entries] == [("0:0", b"t1"), ("1:0", b"v1"), ("0:1", b"t2"), ("1:1", b"v2"),
                                                  ("0:2", b"t3")]
    first = entries[0]
    assert first.status == "pending"
    assert first.original_topic == "orders" and first.original_partition == 0 and first.original_offset == 0
    assert first.exception_class == f"{__name__}.Timeout" and first.exception_message == "slow"
    assert first.attempts == 1 and first.reason == "exhausted" and first.replay_count == 0
    assert first.headers == [("h", b"t1")]
    assert first.failed_at == START_MS
    assert "Timeout: slow" in (first.stacktrace or "")


def test_list_filters(queue: DeadLetterQueue) -> None:
    def ids(where: EntryFilter, **kw: Any) -> list[str]:
        return [e.id for e in queue.list(where, **kw)]

    assert ids(EntryFilter(exception="ValueError")) == ["1:0", "1:1"]
    assert ids(EntryFilter(exception=f"{__name__}.Timeout")) == ["0:0", "0:1", "0:2"]
    assert ids(EntryFilter(exception="Time")) == []
    assert ids(EntryFilter(key="a")) == ["0:0", "0:1"]
    assert ids(EntryFilter(key=b"c")) == ["1:1"]
    assert ids(EntryFilter(since_ms=START_MS + 1000, until_ms=START_MS + 3000)) == ["1:0", "0:1"]
    assert ids(EntryFilter(original_topic="orders"), limit=2) == ["0:0", "1:0"]
    assert ids(EntryFilter(original_topic="other")) == []
    assert ids(EntryFilter(statuses=("parked",))) == []


def test_get_by_id(queue: DeadLetterQueue) -> None:
    assert queue.get("1:1").value == b"v2"
    with pytest.raises(UnknownDeadLetterError, match="no entry 1:5"):
        queue.get("1:5")
    with pytest.raises(UnknownDeadLetterError):
        queue.get("7:0")
    with pytest.raises(InvalidArgumentError, match="partition:offset"):
        queue.get("1-1")


def test_replay_to_the_original_topic(store: logstore.Store, queue: DeadLetterQueue, clock: Clock) -> None:
    results = queue.replay(["0:1", "1:0"])
    assert [(r.id, r.topic, r.partition) for r in results] == [("0:1", "orders", 0), ("1:0", "orders", 1)]
    written = {(r.partition, r.offset): r for r in topic_records(store, "orders")}
    for result, dead in zip(results, (queue.get("0:1"), queue.get("1:0"))):
        assert result.offset is not None
        record = written[(result.partition, result.offset)]
        assert (record.key, record.value) == (dead.key, dead.value)
        assert record.timestamp == dead.original_timestamp  # the event keeps its time
        assert record.headers == dead.headers + [(h.REPLAY_OF, f"orders.dlq/{dead.id}".encode()),
                                                 (h.REPLAY_COUNT, b"1")]
        assert dead.status == "replayed"
        assert dead.status_detail["to"] == "orders" and dead.status_detail["offset"] == result.offset
    # replayed entries are still listed (with their status), and not replayed again by a filter
    assert [e.id for e in queue.replay(dry_run=True)] == ["0:0", "1:1", "0:2"]

    # the consumer handles the replayed records now: nothing new in the dead-letter topic
    handler = Handler()
    proc = make_processor(store, "orders", handler, clock,
                          start={TopicPartition("orders", 0): 3, TopicPartition("orders", 1): 2})
    settle(proc, clock)
    assert sorted(handler.ok) == [(b"a", b"t2"), (b"b", b"v1")]
    assert len(topic_records(store, "orders.dlq")) == 5


def test_replay_all_pending_by_filter_at_a_rate(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    store.create_topic("elsewhere", 3)
    proc = make_processor(store, "orders", Handler(lambda r, n: ValueError("x")), clock,
                          policy=RetryPolicy(max_attempts=1))
    send(store, "orders", [(b"k%d" % i, b"v%d" % i) for i in range(4)])
    settle(proc, clock)
    sleeps: list[float] = []
    queue = DeadLetterQueue(store, "orders.dlq", sleep=sleeps.append)
    queue.discard(["0:3"])
    results = queue.replay(EntryFilter(exception="ValueError"), to="elsewhere", rate=20)
    assert [r.id for r in results] == ["0:0", "0:1", "0:2"]
    assert sleeps == [0.05, 0.05]
    assert sorted(r.value for r in topic_records(store, "elsewhere")) == [b"v0", b"v1", b"v2"]
    assert queue.replay() == []  # nothing pending is left


def test_dry_run_writes_nothing(store: logstore.Store, queue: DeadLetterQueue) -> None:
    before = ends(store)
    planned = queue.replay(dry_run=True)
    assert [(r.id, r.partition, r.offset) for r in planned] == [("0:0", 0, None), ("1:0", 1, None), ("0:1", 0, None),
                                                                ("1:1", 1, None), ("0:2", 0, None)]
    assert queue.discard(["0:0"], dry_run=True) == ["0:0"]
    assert ends(store) == before
    assert "orders.dlq.status" not in store.list_topics()


def test_discard_hides_entries_and_survives_a_restart(tmp_path: Any, clock: Clock) -> None:
    store = logstore.open(tmp_path / "data", cleaner=False)
    store.create_topic("orders", 1)
    proc = make_processor(store, "orders", Handler(lambda r, n: ValueError("x")), clock,
                          policy=RetryPolicy(max_attempts=1))
    send(store, "orders", [(b"a", b"1"), (b"b", b"2")])
    settle(proc, clock)
    queue = DeadLetterQueue(store, "orders")
    assert queue.discard(["0:1", "0:1"]) == ["0:1"]
    assert queue.discard(["0:1"]) == []  # already discarded: nothing written again
    assert [e.id for e in queue.list()] == ["0:0"]
    assert store.topic_config("orders.dlq.status").cleanup_policy == "compact"
    store.close()

    store = logstore.open(tmp_path / "data", cleaner=False)
    queue = DeadLetterQueue(store, "orders")
    assert [e.id for e in queue.list()] == ["0:0"]
    assert [e.id for e in queue.list(EntryFilter(statuses=("discarded",)))] == ["0:1"]
    with pytest.raises(DeadLetterStatusError, match="0:1"):
        queue.replay(["0:0", "0:1"])
    assert store.end_offset(TopicPartition("orders", 0)) == 2  # nothing replayed, not even 0:0
    store.close()


def test_a_re_created_dlq_topic_does_not_inherit_statuses(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    proc = make_processor(store, "orders", Handler(lambda r, n: ValueError("x")), clock,
                          policy=RetryPolicy(max_attempts=1))
    send(store, "orders", [(b"a", b"1")])
    settle(proc, clock)
    DeadLetterQueue(store, "orders").discard(["0:0"])
    proc.close()
    store.delete_topic("orders.dlq")
    proc = make_processor(store, "orders", Handler(lambda r, n: ValueError("x")), clock,
                          policy=RetryPolicy(max_attempts=1))
    settle(proc, clock)  # a new consumer: offset 0 fails again into the new dlq topic
    assert [(e.id, e.status) for e in DeadLetterQueue(store, "orders").list()] == [("0:0", "pending")]


@pytest.mark.parametrize("call, error", [
    (lambda q: q.replay(["0:0", "zzz"]), InvalidArgumentError),
    (lambda q: q.replay(["0:0", "0:99"]), UnknownDeadLetterError),
    (lambda q: q.replay(["0:0"], to="nowhere"), UnknownTopicError),
    (lambda q: q.replay(["0:0"], rate=0), InvalidArgumentError),
    (lambda q: q.replay(["0:0"], rate=float("inf")), InvalidArgumentError),
    (lambda q: q.replay("0:0"), InvalidArgumentError),
    (lambda q: q.replay([]), InvalidArgumentError),
    (lambda q: q.discard(["0:0", "9:9"]), UnknownDeadLetterError),
    (lambda q: q.discard(None), InvalidArgumentError),
    (lambda q: q.list(limit=-1), InvalidArgumentError),
    (lambda q: q.list(EntryFilter(statuses=("gone",))), InvalidArgumentError),
    (lambda q: q.list({"exception": "x"}), InvalidArgumentError),
])
def test_bad_input_raises_and_writes_nothing(store: logstore.Store, queue: DeadLetterQueue, call: Any,
                                             error: type[Exception]) -> None:
    before = ends(store)
    with pytest.raises(error):
        call(queue)
    assert ends(store) == before
    assert "orders.dlq.status" not in store.list_topics()


def test_errors_are_dead_letter_errors_where_they_are_ours() -> None:
    assert issubclass(UnknownDeadLetterError, DeadLetterError) and issubclass(UnknownDeadLetterError, KeyError)
    assert issubclass(DeadLetterStatusError, InvalidArgumentError)
    assert str(UnknownDeadLetterError("no entry 1:2")) == "no entry 1:2"


def test_a_topic_without_dead_letters(store: logstore.Store) -> None:
    store.create_topic("orders", 1)
    with pytest.raises(UnknownTopicError, match="orders.dlq"):
        DeadLetterQueue(store, "orders")
    with pytest.raises(InvalidArgumentError):
        DeadLetterQueue(store, 5)  # type: ignore[arg-type]
