"""publish_once and the message id -> (partition, offset) index: one record per message id, across
retries, threads and store restarts, within the documented window."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore.broker.dedup import MESSAGE_ID_HEADER, DedupWindow, MessageIdIndex, message_id_of, publish_once
from logstore.errors import InvalidArgumentError, RecordTooLargeError, UnknownTopicError


def records(store: logstore.Store, topic: str) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    for tp in store.topic_partitions([topic]):
        plog = store.partition_log(tp)
        offset = plog.log_start_offset
        while offset < plog.high_watermark:
            view = plog.read(offset, 1 << 20, plog.high_watermark)
            out.extend((tp.partition, r) for r in view)
            offset = view.next_offset
    return out


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with logstore.open(tmp_path / "data", cleaner=False) as s:
        s.create_topic("t", 3)
        yield s


def test_a_retry_returns_the_first_position_and_appends_nothing(store: logstore.Store) -> None:
    producer = store.producer()
    first = publish_once(store, producer, "t", "m-1", b"v", b"k", [("h", b"x")])
    assert first[2] is False
    assert publish_once(store, producer, "t", "m-1", b"other", b"other-key") == (first[0], first[1], True)
    (got,) = records(store, "t")
    assert got[0] == first[0] and got[1].offset == first[1]
    assert (got[1].key, got[1].value) == (b"k", b"v")
    assert got[1].headers == [("h", b"x"), (MESSAGE_ID_HEADER, b"m-1")]
    assert message_id_of(got[1].headers) == "m-1" and message_id_of([("h", b"x")]) is None


def test_ids_are_per_topic(store: logstore.Store) -> None:
    store.create_topic("u")
    producer = store.producer()
    assert publish_once(store, producer, "t", "same", b"1")[2] is False
    assert publish_once(store, producer, "u", "same", b"2")[2] is False
    assert len(records(store, "t")) == len(records(store, "u")) == 1


def test_the_index_is_rebuilt_from_the_partitions_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart"
    with logstore.open(path, cleaner=False) as store:
        store.create_topic("t", 2)
        producer = store.producer()
        positions = {f"id-{i}": publish_once(store, producer, "t", f"id-{i}", b"%d" % i, b"k%d" % i)[:2]
                     for i in range(50)}
    with logstore.open(path, cleaner=False) as store:
        producer = store.producer()
        for message_id, position in positions.items():
            assert publish_once(store, producer, "t", message_id, b"again") == (*position, True)
        assert MessageIdIndex.for_topic(store, "t").rebuilt_from == 50
        assert len(records(store, "t")) == 50


def test_the_rebuild_scans_only_the_tail(tmp_path: Path) -> None:
    """Documented limit: after a restart, only the last scan_records records (or ~scan_bytes) of a
    partition are scanned; a retry of an older message appends it again."""
    path = tmp_path / "tail"
    with logstore.open(path, cleaner=False) as store:
        store.create_topic("t", 1, {"segment_bytes": 1024})
        producer = store.producer()
        for i in range(40):
            publish_once(store, producer, "t", f"id-{i}", b"x" * 50)
    with logstore.open(path, cleaner=False) as store:
        producer = store.producer()
        window = DedupWindow(scan_records=10)
        assert publish_once(store, producer, "t", "id-39", b"x", window=window)[2] is True
        assert publish_once(store, producer, "t", "id-30", b"x", window=window)[2] is True
        assert publish_once(store, producer, "t", "id-29", b"x", window=window)[2] is False  # out of the window
        assert MessageIdIndex.for_topic(store, "t").rebuilt_from == 10
    with logstore.open(path, cleaner=False) as store:
        producer = store.producer()
        # ~1 KiB of tail: a few segments' worth of records, far fewer than the 41 there are
        small = DedupWindow(scan_bytes=1024)
        assert publish_once(store, producer, "t", "id-29", b"x", window=small)[2] is True  # the newest record
        assert 0 < MessageIdIndex.for_topic(store, "t").rebuilt_from < 20
        assert publish_once(store, producer, "t", "id-0", b"x", window=small)[2] is False


def test_the_index_forgets_the_oldest_ids_past_max_ids(store: logstore.Store) -> None:
    producer = store.producer()
    window = DedupWindow(max_ids=3)
    for i in range(5):
        publish_once(store, producer, "t", f"id-{i}", b"v", window=window)
    index = MessageIdIndex.for_topic(store, "t")
    assert len(index) == 3
    assert publish_once(store, producer, "t", "id-4", b"v")[2] is True
    assert publish_once(store, producer, "t", "id-0", b"v")[2] is False  # forgotten: appended again


def test_a_recreated_topic_gets_a_new_index(store: logstore.Store) -> None:
    producer = store.producer()
    publish_once(store, producer, "t", "m", b"v")
    store.delete_topic("t")
    store.create_topic("t", 1)
    assert publish_once(store, producer, "t", "m", b"v") == (0, 0, False)


def test_two_threads_publishing_the_same_ids_append_each_once(store: logstore.Store) -> None:
    ids = [f"id-{i}" for i in range(300)]
    results: list[list[tuple[int, int, bool]]] = [[], []]
    barrier = threading.Barrier(2)

    def publish(n: int) -> None:
        producer = store.producer()
        barrier.wait()
        for message_id in ids:
            results[n].append(publish_once(store, producer, "t", message_id, message_id.encode(), b"k"))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(message_id_of(r.headers) or "" for _, r in records(store, "t")) == sorted(ids)
    for a, b in zip(*results):
        assert a[:2] == b[:2] and a[2] != b[2]  # same position; exactly one of the two appended


def test_errors(store: logstore.Store) -> None:
    producer = store.producer()
    with pytest.raises(UnknownTopicError):
        publish_once(store, producer, "missing", "m", b"v")
    for bad in ("", 5, "x" * 256):
        with pytest.raises(InvalidArgumentError):
            publish_once(store, producer, "t", bad, b"v")  # type: ignore[arg-type]
    for window in ({"max_ids": 0}, {"scan_records": -1}, {"scan_bytes": True}):
        with pytest.raises(InvalidArgumentError):
            DedupWindow(**window)
    assert records(store, "t") == []


def test_publish_many_appends_in_order_and_answers_known_ids_with_their_position(store: logstore.Store) -> None:
    producer = store.producer()
    earlier = publish_once(store, producer, "t", "m-1", b"first", b"k")
    index = MessageIdIndex.for_topic(store, "t")
    results, error = index.publish_many(producer, [("m-0", b"a", b"k", [("h", b"x")]), ("m-1", b"again", b"k", None),
                                                   ("m-2", b"b", b"k", None)])
    assert error is None
    assert results[1] == (*earlier[:2], True)
    assert [r[2] for r in results] == [False, True, False]
    got = {r.offset: r for p, r in records(store, "t") if p == results[0][0]}
    assert len(records(store, "t")) == 3  # m-1 not appended again
    assert (got[results[0][1]].value, got[results[0][1]].headers) == (b"a", [("h", b"x"), (MESSAGE_ID_HEADER, b"m-0")])
    assert results[2][1] > results[0][1]  # same key, same partition, in order
    assert got[results[2][1]].headers == [(MESSAGE_ID_HEADER, b"m-2")]


def test_publish_many_stops_at_the_first_failure_and_keeps_what_it_appended(store: logstore.Store) -> None:
    store.create_topic("small", 1, {"max_message_bytes": 256})
    producer = store.producer()
    index = MessageIdIndex.for_topic(store, "small")
    results, error = index.publish_many(producer, [("ok-1", b"v", None, None), ("big", b"x" * 1000, None, None),
                                                   ("ok-2", b"v", None, None)])
    assert isinstance(error, RecordTooLargeError) and len(results) == 1
    assert [message_id_of(r.headers) for _, r in records(store, "small")] == ["ok-1"]  # ok-2 was not tried
    assert publish_once(store, producer, "small", "ok-1", b"v") == (*results[0][:2], True)  # remembered
    results, error = index.publish_many(producer, [("ok-2", b"v", None, None), ("", b"v", None, None)])
    assert len(results) == 1 and isinstance(error, InvalidArgumentError)  # a bad id fails its record
    assert len(records(store, "small")) == 2


def test_publish_many_trims_the_index_once_at_the_end(store: logstore.Store) -> None:
    producer = store.producer()
    index = MessageIdIndex.for_topic(store, "t", DedupWindow(max_ids=3))
    batch = [(f"id-{i}", b"v", None, None) for i in range(4)] + [("id-0", b"v", None, None)]
    results, error = index.publish_many(producer, batch)
    assert error is None and [r[2] for r in results] == [False] * 4 + [True]  # the call's own ids are known
    assert len(index) == 3 and len(records(store, "t")) == 4
    assert index.publish_many(producer, [("id-0", b"v", None, None)])[0][0][2] is False  # forgotten since
