"""RetryingProcessor: blocking and retry-topic retries, key parking (also across a restart),
dead letters (exactly max_attempts, byte-for-byte records, bounded headers, decode errors),
committable offsets, topic creation, and bad input that raises before anything is written."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import logstore
from logstore import TopicPartition
from logstore.dlq import DeadLetterQueue, RetryingProcessor, RetryPolicy, headers as h
from logstore.errors import ConfigError, DeadLetterPublishError

from .support import Clock, Handler, make_processor, our_headers, send, settle, topic_records

T0 = TopicPartition("orders", 0)
T1 = TopicPartition("orders", 1)


def poison(key: bytes) -> Any:
    return lambda record, attempt: ValueError(f"cannot handle {record.value!r}") if record.key == key else None


def fail_times(value: bytes, times: int) -> Any:
    return lambda record, attempt: RuntimeError("flaky") if record.value == value and attempt <= times else None


# -- the poison message -------------------------------------------------------------------------


def test_poison_reaches_the_dlq_after_exactly_max_attempts_and_other_keys_flow(store: logstore.Store,
                                                                              clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"bad", b"p"), (b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    handler = Handler(poison(b"bad"))
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic")
    proc.run_once(0)
    # the other keys were handled while the poison message waits for its retry
    assert handler.ok == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert handler.attempts(b"p") == 1
    assert proc.committable() == {T0: 4}
    proc.run_once(0)
    assert handler.attempts(b"p") == 1  # not due yet: the clock has not moved
    clock.advance(100)
    proc.run_once(0)
    assert handler.attempts(b"p") == 2
    settle(proc, clock)
    assert handler.attempts(b"p") == 3
    dead = topic_records(store, "orders.dlq")
    assert [(r.key, r.value) for r in dead] == [(b"bad", b"p")]
    found = h.header_map(dead[0].headers)
    assert found[h.ATTEMPTS] == b"3"
    assert found[h.REASON] == b"exhausted"
    assert found[h.ORIGINAL_OFFSET] == b"0"
    # no loop: nothing more happens to it however long we wait
    for _ in range(5):
        clock.advance(10_000)
        proc.run_once(0)
    assert handler.attempts(b"p") == 3
    assert len(topic_records(store, "orders.dlq")) == 1
    assert proc.stats.dead_lettered == 1 and proc.stats.retried == 2
    proc.close()


def test_blocking_retry_holds_only_the_failing_partition(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 2)
    send(store, "orders", [(b"bad", b"p"), (b"a", b"after-p")], partition=0)
    send(store, "orders", [(b"b", b"1"), (b"c", b"2")], partition=1)
    handler = Handler(poison(b"bad"))
    proc = make_processor(store, "orders", handler, clock, mode="blocking")
    proc.run_once(0)
    assert (b"b", b"1") in handler.ok and (b"c", b"2") in handler.ok
    assert handler.attempts(b"after-p") == 0  # order within the partition: it waits behind the poison
    assert proc.blocked() == {T0: 0}
    assert T0 not in proc.committable()  # offset 0 is not finished
    assert proc.committable()[T1] == 2
    proc.run_once(0)
    assert handler.attempts(b"p") == 1  # the backoff has not passed
    settle(proc, clock, step_ms=100)
    assert handler.attempts(b"p") == 3
    assert handler.ok[-1] == (b"a", b"after-p")
    assert proc.committable() == {T0: 2, T1: 2}
    assert [r.value for r in topic_records(store, "orders.dlq")] == [b"p"]
    assert not store.list_topics().count("orders.retry")  # blocking mode writes no retry topic
    proc.close()


def test_blocking_retry_keeps_the_partition_order(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    handler = Handler(fail_times(b"1", 2))
    proc = make_processor(store, "orders", handler, clock, mode="blocking")
    proc.run_once(0)
    assert handler.calls == [(b"a", b"1")]
    assert proc.committable() == {}  # nothing finished yet: offset 0 is the first unfinished one
    settle(proc, clock, step_ms=100)
    assert handler.calls == [(b"a", b"1")] * 3 + [(b"b", b"2"), (b"a", b"3")]
    assert proc.committable() == {T0: 3}
    assert topic_records(store, "orders.dlq") == []


def test_zero_backoff_retries_at_once(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"1")])
    handler = Handler(fail_times(b"1", 3))
    proc = make_processor(store, "orders", handler, clock, mode="blocking",
                          policy=RetryPolicy(max_attempts=4, backoff_ms=0))
    proc.run_once(0)
    assert handler.attempts(b"1") == 4 and handler.ok == [(b"a", b"1")]


# -- key parking ------------------------------------------------------------------------------


def test_parking_keeps_each_keys_order_while_other_keys_flow(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"b", b"b2"), (b"a", b"a3"),
                           (None, b"n1")])
    handler = Handler(fail_times(b"a1", 2))
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic")
    proc.run_once(0)
    assert handler.ok == [(b"b", b"b1"), (b"b", b"b2"), (None, b"n1")]
    assert proc.stats.parked == 2
    assert proc.pending() == {T0: 3}
    settle(proc, clock)
    # a1's second retry was appended after a2 and a3 were parked: it still came first
    assert handler.handled_values(b"a") == [b"a1", b"a2", b"a3"]
    assert handler.attempts(b"a2") == handler.attempts(b"a3") == 1
    assert proc.pending() == {T0: 0}
    assert topic_records(store, "orders.dlq") == []


def test_a_shorter_delay_does_not_wait_behind_a_longer_one(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1")])
    handler = Handler(lambda r, n: RuntimeError("flaky") if (r.value == b"a1" and n <= 2) or n == 1 else None)
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic")  # 100 ms, then 200 ms
    proc.run_once(0)
    clock.advance(100)
    proc.run_once(0)  # a1's second attempt fails: due in 200 ms, at 300
    send(store, "orders", [(b"b", b"b1")])
    proc.run_once(0)  # b1's first attempt fails: due in 100 ms, at 200, though behind a1 in the retry log
    assert [r.value for r in topic_records(store, "orders.retry")] == [b"a1", b"a1", b"b1"]
    clock.advance(100)
    proc.run_once(0)
    assert handler.ok == [(b"b", b"b1")]
    clock.advance(100)
    proc.run_once(0)
    assert handler.ok == [(b"b", b"b1"), (b"a", b"a1")]


def test_without_parking_a_key_overtakes_its_retry(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2")])
    handler = Handler(fail_times(b"a1", 1))
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic", park_keys=False)
    settle(proc, clock)
    assert handler.handled_values(b"a") == [b"a2", b"a1"]
    assert proc.stats.parked == 0


def test_records_parked_behind_a_poison_message_follow_it_in_order(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2"), (b"a", b"a3")])
    handler = Handler(lambda r, n: ValueError("poison") if r.value == b"a1" else None)
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic")
    settle(proc, clock)
    assert handler.attempts(b"a1") == 3
    assert handler.ok == [(b"a", b"a2"), (b"a", b"a3")]
    assert [r.value for r in topic_records(store, "orders.dlq")] == [b"a1"]


def test_a_parked_record_that_fails_is_retried_in_turn(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2"), (b"a", b"a3")])
    handler = Handler(lambda r, n: RuntimeError("flaky") if r.value in (b"a1", b"a2") and n == 1 else None)
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic")
    settle(proc, clock)
    assert handler.handled_values(b"a") == [b"a1", b"a2", b"a3"]
    assert handler.calls == [(b"a", b"a1"), (b"a", b"a1"), (b"a", b"a2"), (b"a", b"a2"), (b"a", b"a3")]


def test_max_pending_holds_the_source_partition(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"b", b"b1")])
    handler = Handler(fail_times(b"a1", 1))
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic", max_pending=1)
    proc.run_once(0)
    assert handler.ok == []  # one record waits in retry: the partition takes no more
    assert proc.committable() == {T0: 1}
    settle(proc, clock)
    assert handler.ok == [(b"a", b"a1"), (b"b", b"b1")]


def test_parking_survives_a_restart(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2")])
    first = make_processor(store, "orders", Handler(poison(b"a")), clock, mode="retry-topic")
    first.run_once(0)
    assert first.pending() == {T0: 2}  # a1 waits for its retry, a2 is parked behind it
    committed = first.committable()
    first.close()

    send(store, "orders", [(b"a", b"a3"), (b"b", b"b1")])
    handler = Handler()
    second = make_processor(store, "orders", handler, clock, mode="retry-topic", start=committed)
    second.run_once(0)
    # rebuilt from the retry topic: key a still waits (a3 is parked), b flows
    assert handler.ok == [(b"b", b"b1")]
    assert second.pending() == {T0: 3}
    settle(second, clock)
    assert handler.ok == [(b"b", b"b1"), (b"a", b"a1"), (b"a", b"a2"), (b"a", b"a3")]
    committed = second.committable()
    second.close()

    # the checkpoint says all of the retry topic is done: a third start handles nothing again
    third_handler = Handler()
    third = make_processor(store, "orders", third_handler, clock, mode="retry-topic", start=committed)
    settle(third, clock)
    assert third_handler.calls == []
    third.close()


def test_a_source_record_delivered_again_after_a_restart_is_not_doubled(store: logstore.Store,
                                                                         clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2")])
    first = make_processor(store, "orders", Handler(poison(b"a")), clock, mode="retry-topic")
    first.run_once(0)
    first.close()
    handler = Handler(poison(b"a"))
    # the consumer starts at 0 again (nothing was committed): a1 and a2 already wait in retry, a1
    # after one failed attempt of three: it gets exactly two more
    second = make_processor(store, "orders", handler, clock, mode="retry-topic")
    settle(second, clock)
    assert handler.attempts(b"a1") == 2 and handler.attempts(b"a2") == 3
    assert [h.header_map(r.headers)[h.ATTEMPTS] for r in topic_records(store, "orders.dlq")] == [b"3", b"3"]


def test_processors_of_two_groups_share_the_retry_topic_apart(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"a1")])
    failing, fine = Handler(fail_times(b"a1", 1)), Handler()
    one = make_processor(store, "orders", failing, clock, mode="retry-topic", group="g1")
    two = make_processor(store, "orders", fine, clock, mode="retry-topic", group="g2")
    for _ in range(4):
        one.run_once(0)
        two.run_once(0)
        clock.advance(1000)
    assert failing.calls == [(b"a", b"a1")] * 2
    assert fine.calls == [(b"a", b"a1")]  # g1's retry record is not g2's business
    assert h.header_map(topic_records(store, "orders.retry")[0].headers)[h.RETRY_GROUP] == b"g1"


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letters_keep_key_value_and_headers_byte_for_byte(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 3)
    original: list[tuple[str, bytes | None]] = [("bin", b"\x00\xff\xfe"), ("dup", b"1"), ("dup", b"2"),
                                                ("null", None), ("empty", b"")]
    send(store, "orders", [(b"\x80key", b"\x00\x01value\xff")], partition=2, headers=original)
    send(store, "orders", [(None, None)], partition=2, headers=original)
    proc = make_processor(store, "orders", Handler(lambda r, n: KeyError("nope")), clock, mode="retry-topic",
                          group="billing")
    settle(proc, clock)
    dead = topic_records(store, "orders.dlq")
    assert store.partitions_for("orders.dlq") == 3
    assert [(r.partition, r.key, r.value) for r in dead] == [(2, b"\x80key", b"\x00\x01value\xff"), (2, None, None)]
    for record, offset in zip(dead, (0, 1)):
        assert [x for x in record.headers if not x[0].startswith("logstore.")] == original
        found = h.header_map(record.headers)
        assert found[h.ORIGINAL_TOPIC] == b"orders"
        assert found[h.ORIGINAL_PARTITION] == b"2"
        assert found[h.ORIGINAL_OFFSET] == str(offset).encode()
        assert found[h.GROUP] == b"billing"
        assert found[h.EXCEPTION_CLASS] == b"KeyError"
        assert found[h.EXCEPTION_MESSAGE] == b"'nope'"
        assert b"KeyError: 'nope'" in found[h.STACKTRACE]
        assert int(found[h.FIRST_FAILURE]) < int(found[h.LAST_FAILURE]) <= clock.now
        assert not any(n.startswith(h.RETRY_PREFIX) for n, _ in record.headers)


def test_decode_errors_skip_retries(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"k", b'{"n": 1}'), (b"k", b"not json"), (b"\xff", b"{}")])
    handler = Handler()
    proc = make_processor(store, "orders", handler, clock, mode="retry-topic", value_deserializer=json.loads,
                          key_deserializer=lambda b: b.decode("utf-8"))
    settle(proc, clock)
    assert handler.calls == [("k", {"n": 1})]
    dead = topic_records(store, "orders.dlq")
    assert [(r.key, r.value) for r in dead] == [(b"k", b"not json"), (b"\xff", b"{}")]
    for record, cls in zip(dead, (b"json.decoder.JSONDecodeError", b"UnicodeDecodeError")):
        found = h.header_map(record.headers)
        assert found[h.REASON] == b"decode"
        assert found[h.ATTEMPTS] == b"0"
        assert found[h.EXCEPTION_CLASS] == cls
    assert proc.stats.retried == 0


def test_fatal_exceptions_skip_retries(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"1"), (b"b", b"2")])
    handler = Handler(lambda r, n: KeyError("k") if r.value == b"1" else ValueError("v"))
    policy = RetryPolicy(max_attempts=5, backoff_ms=10, retry_on=(Exception,), fatal_on=(KeyError,))
    proc = make_processor(store, "orders", handler, clock, mode="blocking", policy=policy)
    settle(proc, clock)
    assert handler.attempts(b"1") == 1 and handler.attempts(b"2") == 5
    reasons = [(h.header_map(r.headers)[h.REASON], h.header_map(r.headers)[h.ATTEMPTS])
               for r in topic_records(store, "orders.dlq")]
    assert reasons == [(b"fatal", b"1"), (b"exhausted", b"5")]


def test_dlq_headers_stay_bounded_through_repeated_failures_and_replays(store: logstore.Store,
                                                                       clock: Clock) -> None:
    store.create_topic("orders", 1)
    original: list[tuple[str, bytes | None]] = [("trace", b"t" * 100), ("null", None)]
    send(store, "orders", [(b"k", b"v")], headers=original)

    def fail(record: Any, attempt: int) -> BaseException:
        return RuntimeError("x" * 20_000 + str(attempt))

    proc = make_processor(store, "orders", Handler(fail), clock, mode="retry-topic",
                          policy=RetryPolicy(max_attempts=2, backoff_ms=10))
    sizes = []
    for cycle in range(5):
        settle(proc, clock)
        queue = DeadLetterQueue(store, "orders", clock=clock)
        dead = topic_records(store, "orders.dlq")
        assert len(dead) == cycle + 1
        last = dead[-1]
        ours = our_headers(last)
        assert len(ours) == len({n for n, _ in ours})  # replaced, never stacked
        assert h.headers_size(ours) <= h.MAX_DLQ_HEADER_BYTES
        rest = [x for x in last.headers if not x[0].startswith(h.DLQ_PREFIX)]
        expected = original if cycle == 0 else original + [(h.REPLAY_OF, f"orders.dlq/0:{cycle - 1}".encode()),
                                                          (h.REPLAY_COUNT, str(cycle).encode())]
        assert rest == expected
        sizes.append(h.headers_size(last.headers))
        entry = queue.get(f"0:{cycle}")
        assert entry.status == ("pending" if cycle == 0 else "parked")
        if cycle:
            assert queue.replay() == []  # a parked entry is not replayed by a filter: no loop
        queue.replay([entry.id])
    assert max(sizes) - min(sizes) < 64  # only the replay marker and digits differ


@pytest.mark.parametrize("mode", ["blocking", "retry-topic"])
def test_a_dead_letter_too_large_for_the_dlq_topic_is_not_skipped(store: logstore.Store, clock: Clock,
                                                                  mode: str) -> None:
    store.create_topic("orders", 1)
    store.create_topic("orders.dlq", 1, {"max_message_bytes": 1024})
    send(store, "orders", [(b"k", b"v" * 900), (b"j", b"after")])
    handler = Handler(lambda r, n: ValueError("boom") if r.key == b"k" else None)
    proc = make_processor(store, "orders", handler, clock, mode=mode,
                          policy=RetryPolicy(max_attempts=2, backoff_ms=10))
    with pytest.raises(DeadLetterPublishError, match="max_message_bytes=1024"):
        settle(proc, clock)
    assert store.end_offset(TopicPartition("orders.dlq", 0)) == 0
    if mode == "blocking":
        assert proc.committable() == {}
        assert proc._consumer.position(T0) == 0  # moved back: the record is read again
        assert handler.attempts(b"after") == 0
    else:
        assert proc.pending() == {T0: 1}  # still waiting in the retry topic
    # once the topic takes it, the record is dead-lettered and the partition goes on
    store.alter_topic_config("orders.dlq", {"max_message_bytes": 1 << 20})
    settle(proc, clock)
    assert [r.value for r in topic_records(store, "orders.dlq")] == [b"v" * 900]
    assert handler.ok == [(b"j", b"after")]
    assert proc.committable() == {T0: 2}


def test_a_dead_letter_that_fits_once_its_stacktrace_is_cut_is_written(store: logstore.Store,
                                                                      clock: Clock) -> None:
    store.create_topic("orders", 1)
    store.create_topic("orders.dlq", 1, {"max_message_bytes": 2048})

    def deep_a(n: int) -> None:
        if n == 0:
            raise ValueError("deep")
        deep_b(n - 1)

    def deep_b(n: int) -> None:
        deep_a(n - 1)

    def handle(record: Any) -> None:
        deep_a(60)  # distinct frames: Python would fold a plain recursion

    send(store, "orders", [(b"k", b"v" * 800)])
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0])
    proc = RetryingProcessor(store, consumer, handle, policy=RetryPolicy(max_attempts=1), clock=clock)
    proc.run_once(0)
    dead = topic_records(store, "orders.dlq")
    assert [r.value for r in dead] == [b"v" * 800]
    assert len(h.header_map(dead[0].headers)[h.STACKTRACE]) < 1200
    assert h.header_map(dead[0].headers)[h.EXCEPTION_MESSAGE] == b"deep"


# -- topics and offsets -------------------------------------------------------------------------


def test_retry_and_dlq_topics_match_the_source_partitions(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 3)
    consumer = store.consumer("orders", auto_offset_reset="earliest")
    proc = RetryingProcessor(store, consumer, Handler(), mode="retry-topic", clock=clock)
    proc.run_once(0)
    assert {t: store.partitions_for(t) for t in ("orders.dlq", "orders.retry")} == {"orders.dlq": 3,
                                                                                  "orders.retry": 3}
    assert store.topic_config("orders.retry.checkpoint").cleanup_policy == "compact"
    store.create_partitions("orders", 5)
    send(store, "orders", [(b"a", b"on-4")], partition=4)
    handler_calls = settle(proc, clock)
    assert handler_calls >= 1
    assert store.partitions_for("orders.retry") == 5
    assert proc.committable()[TopicPartition("orders", 4)] == 1


def test_committable_counts_records_safely_in_the_retry_topic(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 2)
    send(store, "orders", [(b"a", b"1"), (b"a", b"2")], partition=1)
    proc = make_processor(store, "orders", Handler(poison(b"a")), clock, mode="retry-topic")
    proc.run_once(0)
    assert proc.committable() == {T1: 2}
    assert proc.pending() == {T0: 0, T1: 2}


def test_run_until_stopped(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    send(store, "orders", [(b"a", b"1"), (b"a", b"2")])
    stop = threading.Event()
    seen = []

    def handle(record: Any) -> None:
        seen.append(record.value)
        if len(seen) == 2:
            stop.set()

    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([T0])
    with RetryingProcessor(store, consumer, handle, clock=clock) as proc:
        proc.run(stop, poll_timeout=0.01)
    assert seen == [b"1", b"2"]
    with pytest.raises(logstore.LogClosedError):
        proc.run_once(0)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"mode": "later"}, {"policy": {"max_attempts": 3}}, {"max_pending": 0}, {"park_keys": "yes"},
    {"value_deserializer": "json"}, {"group": 7},
])
def test_bad_options_raise_and_write_nothing(store: logstore.Store, clock: Clock, options: dict[str, Any]) -> None:
    store.create_topic("orders", 1)
    consumer = store.consumer("orders")
    with pytest.raises(ConfigError):
        RetryingProcessor(store, consumer, Handler(), clock=clock, **options)
    assert store.list_topics() == ["orders"]


def test_a_consumer_with_deserializers_is_refused(store: logstore.Store) -> None:
    store.create_topic("orders", 1)
    consumer = store.consumer("orders", value_deserializer=json.loads)
    with pytest.raises(ConfigError, match="give it to the processor"):
        RetryingProcessor(store, consumer, Handler())
    with pytest.raises(ConfigError, match="callable"):
        RetryingProcessor(store, store.consumer("orders"), "handler")  # type: ignore[arg-type]
    assert store.list_topics() == ["orders"]


def test_reading_its_own_topics_is_refused(store: logstore.Store, clock: Clock) -> None:
    store.create_topic("orders", 1)
    store.create_topic("orders.retry", 1)
    consumer = store.consumer(pattern=r"orders.*")
    proc = RetryingProcessor(store, consumer, Handler(), mode="retry-topic", clock=clock)
    with pytest.raises(ConfigError, match="orders.retry"):
        proc.run_once(0)
    assert store.list_topics() == ["orders", "orders.retry"]


# -- consumer groups ----------------------------------------------------------------------------


def test_a_group_consumer_commits_what_is_finished_and_a_restart_resumes(store: logstore.Store,
                                                                         clock: Clock) -> None:
    store.create_topic("orders", 2)
    send(store, "orders", [(b"a", b"a1"), (b"a", b"a2")], partition=0)
    send(store, "orders", [(b"b", b"b1")], partition=1)
    consumer = store.consumer("orders", group_id="billing", enable_auto_commit=False, auto_offset_reset="earliest")
    proc = RetryingProcessor(store, consumer, Handler(poison(b"a")), mode="retry-topic", clock=clock)
    for _ in range(3):
        proc.run_once(0.05)
    assert proc.committable() == {T0: 2, T1: 1}
    assert {tp: consumer.committed(tp).offset for tp in (T0, T1)} == {T0: 2, T1: 1}
    assert proc.pending() == {T0: 2, T1: 0}
    proc.close()
    consumer.close()

    send(store, "orders", [(b"a", b"a3")], partition=0)
    handler = Handler()
    consumer = store.consumer("orders", group_id="billing", enable_auto_commit=False, auto_offset_reset="earliest")
    proc = RetryingProcessor(store, consumer, handler, mode="retry-topic", clock=clock)
    for _ in range(3):
        proc.run_once(0.05)
    assert handler.calls == []  # a3 is parked behind a1 and a2, rebuilt from the retry topic
    settle(proc, clock)
    assert handler.calls == [(b"a", b"a1"), (b"a", b"a2"), (b"a", b"a3")]
    assert consumer.committed(T0).offset == 3
    retry_group = h.header_map(topic_records(store, "orders.retry")[0].headers)[h.RETRY_GROUP]
    assert retry_group == b"billing"
    proc.close()
    consumer.close()
