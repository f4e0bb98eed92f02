"""The embedded broker's store: topic admin, bad input (a clear error and nothing written),
persistence across close/reopen, stray partition directories, and the high watermark seam.

Every bad-input test snapshots the whole data directory (names, sizes, contents) before the call
and compares after it: an operation that fails must leave no trace on disk or in the catalogue.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

import logstore
from logstore import TopicPartition
from logstore.errors import (
    ConfigError,
    IllegalStateError,
    InvalidArgumentError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    LogClosedError,
    LogstoreError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[logstore.Store]:
    s = logstore.open(data_dir, cleaner=False)
    yield s
    s.close()


def tree(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``path``: relative name -> (size, content digest)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                data = f.read()
            out[os.path.relpath(full, path)] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def drain(consumer: logstore.Consumer, timeout: float = 0.05) -> list[Any]:
    """Everything the consumer can read now (poll until a poll comes back empty)."""
    out: list[Any] = []
    while True:
        batch = consumer.poll(timeout)
        if not batch:
            return out
        out.extend(batch)


def read_all(store: logstore.Store, topic: str) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """partition -> [(offset, key, value)] of every committed record of ``topic``."""
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign(store.topic_partitions([topic]))
    out: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {
        p: [] for p in range(store.partitions_for(topic))}
    for r in drain(consumer):
        out[r.partition].append((r.offset, r.key, r.value))
    consumer.close()
    return out


# -- topic admin ----------------------------------------------------------------------------------

def test_create_list_describe_delete(store: logstore.Store, data_dir: Path) -> None:
    desc = store.create_topic("orders", partitions=3, config={"retention.ms": 5000, "segment_bytes": 4096})
    assert desc.name == "orders" and desc.partition_count == 3
    assert [p.partition for p in desc.partitions] == [0, 1, 2]
    assert all(p.log_start_offset == p.log_end_offset == p.high_watermark == 0 for p in desc.partitions)
    assert desc.config["retention_ms"] == 5000 and desc.config["segment_bytes"] == 4096
    assert desc.overrides == {"retention_ms": 5000, "segment_bytes": 4096}
    assert len(desc.topic_id) == 32
    store.create_topic("audit")
    assert store.list_topics() == ["audit", "orders"]
    assert store.partitions_for("orders") == 3
    assert sorted(d for d in os.listdir(data_dir) if d.startswith("orders-")) == ["orders-0", "orders-1", "orders-2"]

    producer = store.producer()
    for i in range(5):
        producer.send("orders", b"v%d" % i, partition=1)
    desc = store.describe_topic("orders")
    assert [p.log_end_offset for p in desc.partitions] == [0, 5, 0]
    assert [p.high_watermark for p in desc.partitions] == [0, 5, 0]
    assert desc.partitions[1].size_bytes > 0 and desc.record_count == 5
    assert store.describe_topic("orders").topic_id == desc.topic_id  # stable

    store.delete_topic("orders")
    assert store.list_topics() == ["audit"]
    assert not [d for d in os.listdir(data_dir) if d.startswith("orders")]  # directories gone, *-delete too
    with pytest.raises(UnknownTopicError):
        store.describe_topic("orders")
    with pytest.raises(UnknownTopicError):
        producer.send("orders", b"x")
    # the same name again is a new, empty topic with a new id
    again = store.create_topic("orders", partitions=1)
    assert again.topic_id != desc.topic_id and again.partitions[0].log_end_offset == 0


def test_internal_topics_are_listed_only_on_request(store: logstore.Store) -> None:
    store.create_topic("__internal")
    store.create_topic("visible")
    assert store.list_topics() == ["visible"]
    assert store.list_topics(internal=True) == ["__internal", "visible"]


def test_create_partitions_grows_and_keeps_data(store: logstore.Store, data_dir: Path) -> None:
    store.create_topic("t", partitions=2)
    producer = store.producer()
    sent = [producer.send("t", b"v%d" % i, key=b"k%d" % i) for i in range(20)]
    desc = store.create_partitions("t", 5)
    assert desc.partition_count == 5 and store.partitions_for("t") == 5
    assert os.path.isdir(data_dir / "t-4")
    data = read_all(store, "t")
    for m in sent:
        assert data[m.partition][m.offset][2] == b"v%d" % sent.index(m)
    # the new partitions take records
    assert producer.send("t", b"new", partition=4).offset == 0
    # keys now hash over 5 partitions
    m = producer.send("t", b"x", key=b"some key")
    assert m.partition == xxhash.xxh64_intdigest(b"some key") % 5


def test_alter_topic_config_applies_and_resets(store: logstore.Store) -> None:
    store.create_topic("t", config={"retention_ms": 1000})
    full = store.alter_topic_config("t", {"segment.bytes": 2048, "retention_ms": None})
    assert full["segment_bytes"] == 2048
    assert full["retention_ms"] == 7 * 24 * 3600 * 1000  # back to the default
    desc = store.describe_topic("t")
    assert desc.overrides == {"segment_bytes": 2048}
    assert store.topic_config("t").segment_bytes == 2048
    # the open log uses the new segment size: enough data rolls segments
    plog = store.partition_log(TopicPartition("t", 0))
    producer = store.producer()
    for i in range(100):
        producer.send("t", b"%050d" % i, key=b"k")
    assert len(plog.segments()) > 1
    # a producer made before a switch to compaction sees it: keyless records are refused
    producer.send("t", b"keyless")
    store.alter_topic_config("t", {"cleanup.policy": "compact"})
    with pytest.raises(InvalidRecordError):
        producer.send("t", b"keyless")
    assert producer.send("t", b"keyed", key=b"k").offset == 101


def test_alter_max_message_bytes_applies_to_producers(store: logstore.Store) -> None:
    store.create_topic("t")
    producer = store.producer()
    producer.send("t", b"x" * 5000)
    store.alter_topic_config("t", {"max_message_bytes": 1024})
    # (a producer from before the change: see test_producer's sequence tests)
    with pytest.raises(RecordTooLargeError):
        store.producer().send("t", b"y" * 5000)
    assert store.end_offset(TopicPartition("t", 0)) == 1


def test_alter_flush_mode_applies_in_place_while_clients_keep_working(store: logstore.Store) -> None:
    """A flush mode change rewires the open logs: a producer and a consumer made before it carry
    on, nothing is lost or duplicated, and the new mode is in effect (sends wait for the fsync)."""
    store.create_topic("t", partitions=2)
    producer = store.producer()
    consumer = store.consumer("t", auto_offset_reset="earliest")
    sent = [producer.send("t", b"a%d" % i, key=b"k%d" % (i % 4)) for i in range(20)]
    first = drain(consumer)
    assert len(first) == 20
    old_log = store.partition_log(TopicPartition("t", 0))
    store.alter_topic_config("t", {"flush": "always"})
    new_log = store.partition_log(TopicPartition("t", 0))
    assert new_log is old_log and new_log.config.flush == "always" and new_log.durable_appends
    sent += [producer.send("t", b"b%d" % i, key=b"k%d" % (i % 4)) for i in range(20)]
    for p in range(2):
        plog = store.partition_log(TopicPartition("t", p))
        assert plog._synced_offset == plog.log_end_offset, "a send to a flush=always topic returned unsynced"
    store.alter_topic_config("t", {"flush": "never"})
    sent += [producer.send("t", b"c%d" % i, key=b"k%d" % (i % 4)) for i in range(20)]
    rest = drain(consumer)
    got = {(r.partition, r.offset): r.value for r in first + rest}
    assert len(got) == len(first) + len(rest) == 60, "records lost or duplicated across the reopen"
    assert {(m.partition, m.offset) for m in sent} == set(got)
    for p in range(2):
        assert store.end_offset(TopicPartition("t", p)) == sum(1 for m in sent if m.partition == p)


def test_alter_flush_mode_while_a_producer_thread_sends(store: logstore.Store) -> None:
    """A producer sending from another thread while the logs are reopened gets no error."""
    import threading

    store.create_topic("t", partitions=2)
    producer = store.producer(enable_idempotence=False)
    errors: list[BaseException] = []
    sent: list[Any] = []
    stop = threading.Event()

    def send_loop() -> None:
        i = 0
        while not stop.is_set() and len(errors) < 10:
            try:
                sent.append(producer.send("t", b"%d" % i, key=b"k%d" % (i % 3)))
            except Exception as e:  # collected: the assertion below reports them
                errors.append(e)
            i += 1

    thread = threading.Thread(target=send_loop)
    thread.start()
    try:
        for mode in ("always", "never", "interval"):
            store.alter_topic_config("t", {"flush": mode})
    finally:
        stop.set()
        thread.join()
    assert not errors, f"sends failed while the flush mode changed: {errors[:2]!r}"
    assert sum(store.end_offset(TopicPartition("t", p)) for p in range(2)) == len(sent)


# -- bad input: a clear error, nothing written ----------------------------------------------------

Check = Callable[[], None]


@pytest.fixture
def settled(store: logstore.Store, data_dir: Path) -> Check:
    """A store with topics holding data, fsynced; returns a check that the data directory (every
    file's name, size and content) and the catalogue are still exactly as now."""
    small_index = {"max_index_bytes": 4096}  # the check reads every file: keep them small
    store.create_topic("t", partitions=2, config={"max_message_bytes": 1024, **small_index})
    store.create_topic("a_b", config=small_index)
    store.create_topic("compacted", config={"cleanup_policy": "compact", **small_index})
    producer = store.producer()
    for i in range(10):
        producer.send("t", b"v%d" % i, key=b"k%d" % i)
    producer.send("compacted", b"v", key=b"k")
    store.flush()
    before = tree(data_dir)
    topics = store.list_topics(internal=True)
    descriptions = {name: store.describe_topic(name) for name in topics}

    def unchanged() -> None:
        assert tree(data_dir) == before
        assert store.list_topics(internal=True) == topics
        assert {name: store.describe_topic(name) for name in topics} == descriptions

    return unchanged


def expect_error(error: type[Exception], unchanged: Check, case: object, match: str | None,
                 call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``call(*args, **kwargs)`` raises ``error`` (matching ``match``) and leaves the store as it was."""
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    assert str(info.value), f"{case}: the error has no message"
    try:
        unchanged()
    except AssertionError as e:
        raise AssertionError(f"{case}: the failed call changed the store") from e


BAD_TOPIC_NAMES: list[Any] = ["", ".", "..", "a b", "a/b", "x" * 250, "tópico", "a\x00b", "tab\t", "a:b", 7, None,
                              b"bytes"]


def test_bad_topic_names(store: logstore.Store, settled: Check) -> None:
    for name in BAD_TOPIC_NAMES:
        expect_error(InvalidTopicError, settled, name, None, store.create_topic, name)
    # the longest legal name works (and "<name>-<partition>" fits a file name)
    store.create_topic("x" * 249, partitions=2)


def test_topic_name_collision_dot_underscore(store: logstore.Store, settled: Check) -> None:
    expect_error(InvalidTopicError, settled, "a.b", "collides", store.create_topic, "a.b")


def test_duplicate_create(store: logstore.Store, settled: Check) -> None:
    expect_error(TopicExistsError, settled, "t", None, store.create_topic, "t", partitions=5)
    expect_error(TopicExistsError, settled, "t", None, store.create_topic, "t", partitions=2)


def test_unknown_topic_or_partition(store: logstore.Store, settled: Check) -> None:
    calls: dict[str, Callable[[], Any]] = {
        "describe": lambda: store.describe_topic("nope"),
        "delete": lambda: store.delete_topic("nope"),
        "create_partitions": lambda: store.create_partitions("nope", 3),
        "alter": lambda: store.alter_topic_config("nope", {"retention_ms": 1}),
        "partitions_for": lambda: store.partitions_for("nope"),
        "topic_config": lambda: store.topic_config("nope"),
        "partition_log": lambda: store.partition_log(TopicPartition("nope", 0)),
        "partition_log-partition": lambda: store.partition_log(TopicPartition("t", 2)),
        "end_offset": lambda: store.end_offset(TopicPartition("nope", 0)),
        "send": lambda: store.producer().send("nope", b"v"),
        "send-linger": lambda: store.producer(linger_ms=5).send("nope", b"v"),
        "producer.partitions_for": lambda: store.producer().partitions_for("nope"),
        "assign": lambda: store.consumer().assign([TopicPartition("nope", 0)]),
        "assign-partition": lambda: store.consumer().assign([TopicPartition("t", 7)]),
    }
    for case, call in calls.items():
        expect_error(UnknownTopicError, settled, case, None, call)


BAD_CONFIGS: list[tuple[Any, str]] = [
    ({"no_such_key": 1}, "no_such_key"),
    ({"retention_ms": "soon"}, "retention_ms"),
    ({"segment_bytes": 10}, "segment_bytes"),
    ({"segment.bytes": -5}, "segment.bytes"),
    ({"cleanup_policy": "archive"}, "cleanup_policy"),
    ({"flush": "sometimes"}, "flush"),
    ({"max_message_bytes": True}, "max_message_bytes"),
    ({"min_cleanable_dirty_ratio": 2.0}, "min_cleanable_dirty_ratio"),
    ({"retention_ms": 1, "retention.ms": 2}, "twice"),
    ({"segment_bytes": 4096, "flush": "sometimes"}, "flush"),  # one bad key: none of it applies
    ("retention_ms=1", "mapping"),
]


def test_bad_topic_config(store: logstore.Store, settled: Check) -> None:
    for config, match in BAD_CONFIGS:
        expect_error(ConfigError, settled, config, match, store.create_topic, "new", config=config)
        expect_error(ConfigError, settled, config, match, store.alter_topic_config, "t", config)
    assert store.topic_config("t").segment_bytes == 1 << 30


def test_bad_partition_counts(store: logstore.Store, settled: Check) -> None:
    for partitions in (0, -1, True, 1.5, "2", None, 100_001):
        expect_error(InvalidPartitionsError, settled, partitions, None, store.create_topic, "new",
                     partitions=partitions)
    for total in (1, 2, 0, -3, "4", 2.5):  # "t" has 2: only growing is allowed
        expect_error(InvalidPartitionsError, settled, total, None, store.create_partitions, "t", total)


BAD_SENDS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"value": b"v", "partition": 2}, UnknownTopicError),
    ({"value": b"v", "partition": -1}, UnknownTopicError),
    ({"value": b"v", "partition": "1"}, InvalidArgumentError),
    ({"value": b"v", "partition": 1.0}, InvalidArgumentError),
    ({"value": "text"}, InvalidRecordError),
    ({"value": 42}, InvalidRecordError),
    ({"value": b"v", "key": "text"}, InvalidRecordError),
    ({"value": b"v", "key": 7}, InvalidRecordError),
    ({"value": b"v", "headers": [("h", "text")]}, InvalidRecordError),
    ({"value": b"v", "headers": [(None, b"x")]}, InvalidRecordError),
    ({"value": b"v", "headers": [(b"\xff", b"x")]}, InvalidRecordError),
    ({"value": b"v", "headers": [("only-a-key",)]}, InvalidRecordError),
    ({"value": b"v", "timestamp_ms": -1}, InvalidRecordError),
    ({"value": b"v", "timestamp_ms": "now"}, InvalidRecordError),
    ({"value": b"x" * 2000}, RecordTooLargeError),
    ({"value": b"x" * 2000, "key": b"k"}, RecordTooLargeError),
]


@pytest.mark.parametrize("linger_ms", [0, 5])
def test_bad_sends(store: logstore.Store, settled: Check, linger_ms: int) -> None:
    producer = store.producer(linger_ms=linger_ms)

    def send(kwargs: dict[str, Any]) -> None:
        result = producer.send("t", **kwargs)
        producer.flush()
        result.get(5)  # a lingering send may report the error through its future

    for kwargs, error in BAD_SENDS:
        # the fixture's producer reserved a block of producer ids with room for this one, so
        # even meta/producer_ids is unchanged
        expect_error(error, settled, kwargs, None, send, kwargs)
    expect_error(InvalidRecordError, settled, "keyless to compacted", "key",
                 lambda: producer.send("compacted", b"v").get(5))
    producer.close()


def test_bad_send_does_not_break_the_producer(store: logstore.Store) -> None:
    """A rejected record takes no sequence number: the producer's next records still go in."""
    store.create_topic("t", config={"max_message_bytes": 1024})
    for linger_ms in (0, 5):
        producer = store.producer(linger_ms=linger_ms)
        good = [producer.send("t", b"ok1", key=b"k").get(5)]
        with pytest.raises(RecordTooLargeError):
            producer.send("t", b"x" * 4000, key=b"k").get(5)
        good.append(producer.send("t", b"ok2", key=b"k").get(5))
        good.append(producer.send("t", b"ok3", key=b"k").get(5))
        producer.close()
        assert [m.offset for m in good] == [good[0].offset + i for i in range(3)], linger_ms
    values = [v for _, _, v in read_all(store, "t")[0]]
    assert values == [b"ok1", b"ok2", b"ok3"] * 2


def test_bad_client_configs(store: logstore.Store, settled: Check) -> None:
    makers: dict[str, Callable[[], Any]] = {
        "producer-unknown": lambda: store.producer(no_such_option=1),
        "producer-bootstrap": lambda: store.producer(bootstrap_servers="localhost:9092"),
        "acks": lambda: store.producer(acks=2),
        "linger": lambda: store.producer(linger_ms=-1),
        "batch_size": lambda: store.producer(batch_size=0),
        "partitioner": lambda: store.producer(partitioner="random"),
        "compression": lambda: store.producer(compression_type="gzip"),
        "serializer": lambda: store.producer(value_serializer="json"),
        "idempotence": lambda: store.producer(enable_idempotence="yes"),
        "consumer-unknown": lambda: store.consumer(no_such_option=1),
        "group_id-empty": lambda: store.consumer("t", group_id=""),
        "group_instance_id-without-group": lambda: store.consumer("t", group_instance_id="i"),
        "heartbeat-over-session": lambda: store.consumer("t", group_id="g", heartbeat_interval_ms=10_000,
                                                         session_timeout_ms=10_000),
        "assignor-unknown": lambda: store.consumer("t", group_id="g", partition_assignment_strategy="nope"),
        "auto-commit-not-bool": lambda: store.consumer("t", group_id="g", enable_auto_commit="yes"),
        "offset_reset": lambda: store.consumer(auto_offset_reset="smallest"),
        "max_poll_records": lambda: store.consumer(max_poll_records=0),
        "consumer_timeout_ms": lambda: store.consumer(consumer_timeout_ms=-5),
        "deserializer": lambda: store.consumer(value_deserializer=b"x"),
        "topics-twice": lambda: store.consumer("t", topics=["t"]),
    }
    for case, make in makers.items():
        expect_error(ConfigError, settled, case, None, make)


def test_bad_producer_config_reserves_no_producer_ids(data_dir: Path) -> None:
    with logstore.open(data_dir, cleaner=False) as s:
        with pytest.raises(ConfigError):
            s.producer(unknown=1)
        assert not (data_dir / "meta" / "producer_ids").exists()


def test_bad_consumer_calls(store: logstore.Store, settled: Check) -> None:
    consumer = store.consumer()
    with pytest.raises(IllegalStateError):
        consumer.seek(TopicPartition("t", 0), 0)  # not assigned
    consumer.assign([TopicPartition("t", 0)])
    with pytest.raises(InvalidArgumentError):
        consumer.seek(TopicPartition("t", 0), -1)
    with pytest.raises(InvalidArgumentError):
        consumer.poll(timeout=-1)
    with pytest.raises(InvalidArgumentError):
        consumer.poll(max_records=0)
    with pytest.raises(InvalidArgumentError):
        consumer.subscribe(pattern="(unclosed")
    with pytest.raises(IllegalStateError):
        consumer.subscribe()
    settled()


def test_closed_store_refuses_everything(data_dir: Path) -> None:
    s = logstore.open(data_dir, cleaner=False)
    s.create_topic("t")
    producer = s.producer()
    consumer = s.consumer("t")
    s.close()
    s.close()  # idempotent
    for call in (lambda: s.create_topic("u"), lambda: s.list_topics(), lambda: s.producer(),
                 lambda: s.consumer(), lambda: producer.send("t", b"v"), lambda: consumer.poll(0)):
        with pytest.raises(LogClosedError):
            call()


def test_a_data_directory_opens_once(data_dir: Path) -> None:
    with logstore.open(data_dir, cleaner=False):
        with pytest.raises(LogstoreError, match="already open"):
            logstore.open(data_dir, cleaner=False)
    logstore.open(data_dir, cleaner=False).close()  # released on close


def test_auto_create_topics_and_defaults(data_dir: Path) -> None:
    with logstore.open(data_dir, cleaner=False, auto_create_topics=True, default_partitions=3,
                       topic_defaults={"retention_ms": 1234}) as s:
        m = s.producer().send("fresh", b"v", key=b"k")
        assert s.partitions_for("fresh") == 3
        assert m.partition == xxhash.xxh64_intdigest(b"k") % 3
        assert s.topic_config("fresh").retention_ms == 1234
        assert s.create_topic("explicit").config["retention_ms"] == 1234
    with logstore.open(data_dir, cleaner=False) as s:  # auto-create off by default
        with pytest.raises(UnknownTopicError):
            s.producer().send("other", b"v")
        assert s.list_topics() == ["explicit", "fresh"]


# -- persistence ------------------------------------------------------------------------------------

def test_topics_configs_and_data_survive_reopen(data_dir: Path) -> None:
    with logstore.open(data_dir, cleaner=False) as s:
        s.create_topic("orders", partitions=4, config={"segment_bytes": 1024, "retention.bytes": 10**9})
        s.create_topic("compacted", config={"cleanup_policy": "compact", "message_timestamp_type": "LogAppendTime"})
        s.create_topic("__internal", partitions=2)
        s.create_partitions("__internal", 3)
        s.alter_topic_config("orders", {"flush": "never"})
        producer = s.producer()
        sent = [(producer.send("orders", b"v%d" % i, key=b"k%d" % (i % 11),
                               headers=[("i", b"%d" % i)], timestamp_ms=1_000_000 + i), i) for i in range(300)]
        producer.send("compacted", b"x", key=b"y")
        descriptions = {n: s.describe_topic(n) for n in s.list_topics(internal=True)}
        first_pid = producer.producer_id
    with logstore.open(data_dir, cleaner=False) as s:
        assert s.list_topics(internal=True) == ["__internal", "compacted", "orders"]
        assert {n: s.describe_topic(n) for n in s.list_topics(internal=True)} == descriptions
        assert s.topic_config("orders").flush == "never"
        assert s.topic_config("compacted").message_timestamp_type == "log_append_time"
        consumer = s.consumer("orders", auto_offset_reset="earliest")
        got = {(r.partition, r.offset): r for r in drain(consumer)}
        assert len(got) == 300
        for m, i in sent:
            r = got[(m.partition, m.offset)]
            assert (r.key, r.value, r.headers, r.timestamp) == (b"k%d" % (i % 11), b"v%d" % i, [("i", b"%d" % i)],
                                                               1_000_000 + i)
        # keys still map to the same partitions, offsets continue
        producer = s.producer()
        for m, i in sent[:20]:
            again = producer.send("orders", b"again", key=b"k%d" % (i % 11))
            assert again.partition == m.partition
            assert again.offset >= descriptions["orders"].partitions[m.partition].log_end_offset
        # producer ids are never reused across a reopen
        assert producer.producer_id > first_pid


def test_producer_ids_unique(data_dir: Path) -> None:
    ids = []
    for _ in range(3):
        with logstore.open(data_dir, cleaner=False) as s:
            ids += [s.producer().producer_id for _ in range(5)]
            ids.append(s.producer(enable_idempotence=True).producer_id)
            assert s.producer(enable_idempotence=False).producer_id == -1
    assert len(set(ids)) == len(ids) and min(ids) >= 0


def _stash_dir(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for lock in dst.glob(".lock"):
        lock.unlink()


def test_stray_dir_of_deleted_topic_not_adopted_on_reopen(data_dir: Path, tmp_path: Path) -> None:
    """A partition directory of a deleted topic found at open (a kill -9 after the catalogue
    change, before the rename) is removed, not adopted by a new topic of the same name."""
    with logstore.open(data_dir, cleaner=False) as s:
        s.create_topic("t", partitions=2)
        producer = s.producer()
        for i in range(10):
            producer.send("t", b"old%d" % i, partition=i % 2)
    _stash_dir(data_dir / "t-0", tmp_path / "t-0")
    with logstore.open(data_dir, cleaner=False) as s:
        s.delete_topic("t")
    shutil.copytree(tmp_path / "t-0", data_dir / "t-0")  # the leftover, as a crash would leave it
    with logstore.open(data_dir, cleaner=False) as s:
        assert s.list_topics() == []
        s.create_topic("t", partitions=2)
        assert [p.log_end_offset for p in s.describe_topic("t").partitions] == [0, 0]
        assert read_all(s, "t") == {0: [], 1: []}
    with logstore.open(data_dir, cleaner=False) as s:
        assert read_all(s, "t") == {0: [], 1: []}


def test_stray_dir_of_deleted_topic_not_adopted_by_create(data_dir: Path, tmp_path: Path) -> None:
    """The same with the store open: a directory with another topic's id is never adopted (were
    it adopted, the next open would find its id wrong and remove it, with the new records)."""
    with logstore.open(data_dir, cleaner=False) as store:
        store.create_topic("t")
        producer = store.producer()
        for i in range(10):
            producer.send("t", b"old%d" % i)
        store.flush()
        _stash_dir(data_dir / "t-0", tmp_path / "t-0")
        store.delete_topic("t")
        shutil.copytree(tmp_path / "t-0", data_dir / "t-0")
        store.create_topic("t")
        producer = store.producer()
        for i in range(3):
            producer.send("t", b"new%d" % i)
        assert [v for _, _, v in read_all(store, "t")[0]] == [b"new0", b"new1", b"new2"]
    with logstore.open(data_dir, cleaner=False) as store:
        assert [v for _, _, v in read_all(store, "t")[0]] == [b"new0", b"new1", b"new2"]


def test_failed_create_leaves_nothing_behind(data_dir: Path) -> None:
    """A create that fails half way (here: partition 1's directory name is taken by a file)
    leaves no partition directory, and a later create of the name keeps its records."""
    data_dir.mkdir()
    (data_dir / "t-1").write_bytes(b"in the way")
    with logstore.open(data_dir, cleaner=False) as store:
        before = sorted(os.listdir(data_dir))
        with pytest.raises(OSError):
            store.create_topic("t", partitions=2)
        assert store.list_topics() == []
        assert sorted(os.listdir(data_dir)) == before, "the failed create left a partition directory behind"
        (data_dir / "t-1").unlink()
        store.create_topic("t", partitions=2)
        producer = store.producer()
        for i in range(4):
            producer.send("t", b"v%d" % i, partition=i % 2)
    with logstore.open(data_dir, cleaner=False) as store:
        assert {p: [v for _, _, v in records] for p, records in read_all(store, "t").items()} == {
            0: [b"v0", b"v2"], 1: [b"v1", b"v3"]}


def test_catalogue_is_json_with_the_topics(store: logstore.Store, data_dir: Path) -> None:
    store.create_topic("t", partitions=2, config={"retention_ms": 99})
    with open(data_dir / "meta" / "topics.json", "rb") as f:
        text = f.read().decode()
    assert "retention_ms" in text and '"t"' in text
    json.loads(text)


# -- high watermark ---------------------------------------------------------------------------------

def test_consumers_never_read_at_or_above_the_high_watermark(store: logstore.Store) -> None:
    store.create_topic("t")
    tp = TopicPartition("t", 0)
    plog = store.partition_log(tp)
    plog._hw_follows_leo = False  # as a replicated leader: appends do not commit by themselves
    producer = store.producer()
    for i in range(10):
        producer.send("t", b"v%d" % i, timestamp_ms=1000 + i)
    assert plog.log_end_offset == 10 and plog.high_watermark == 0
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([tp])
    assert consumer.poll(0.05) == []
    plog.set_high_watermark(4)
    assert [r.offset for r in drain(consumer)] == [0, 1, 2, 3]
    assert consumer.position(tp) == 4
    assert consumer.end_offsets([tp]) == {tp: 4} and store.end_offset(tp) == 4
    assert store.describe_topic("t").partitions[0].high_watermark == 4
    assert store.describe_topic("t").partitions[0].log_end_offset == 10
    # "latest" and seek_to_end mean the high watermark, not the log end
    latest = store.consumer(auto_offset_reset="latest")
    latest.assign([tp])
    assert latest.position(tp) == 4
    consumer.seek_to_end(tp)
    assert consumer.position(tp) == 4
    # offsets_for_times does not point at or above the high watermark
    assert consumer.offsets_for_times({tp: 1002})[tp] == (2, 1002)
    assert consumer.offsets_for_times({tp: 1004})[tp] is None
    assert consumer.offsets_for_times({tp: 1008})[tp] is None
    # a seek into the uncommitted range waits rather than reading it
    consumer.seek(tp, 6)
    assert consumer.poll(0.05) == []
    consumer.seek(tp, 4)
    plog.set_high_watermark(7)
    assert [r.offset for r in drain(consumer)] == [4, 5, 6]
    plog.set_high_watermark(10)
    assert [r.value for r in drain(consumer)] == [b"v7", b"v8", b"v9"]


def test_a_blocked_poll_wakes_when_the_high_watermark_moves(store: logstore.Store) -> None:
    import threading
    import time

    store.create_topic("t")
    tp = TopicPartition("t", 0)
    plog = store.partition_log(tp)
    plog._hw_follows_leo = False
    store.producer().send("t", b"v")
    consumer = store.consumer(auto_offset_reset="earliest")
    consumer.assign([tp])
    result: list[Any] = []

    def poll() -> None:
        start = time.monotonic()
        result.append(consumer.poll(4.0))
        result.append(time.monotonic() - start)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    plog.set_high_watermark(1)
    thread.join()
    assert [r.value for r in result[0]] == [b"v"]
    assert result[1] < 2.0, "the poll slept through the high watermark's move"
