"""publish_once and the message id -> (partition, offset) index: one record per message id, across
retries, threads and store restarts, within the documented window."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore.broker.dedup import MESSAGE_ID_HEADER, DedupWindow, MessageIdIndex, message_id_of, publish_once
from logstore.errors import InvalidArgumentError, UnknownTopicError


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
