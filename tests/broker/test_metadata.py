"""The durable topic catalogue (meta/topics.json), partition.metadata files and stray directories.

The kill -9 test runs this file as a child process (``python test_metadata.py child DIR SEED``): the
child applies a seeded sequence of catalogue changes and reports each one on stdout only after the
call returned; the parent, replaying the same sequence, checks that after every SIGKILL the file
loads and holds the last reported catalogue or the next one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import xxhash

from logstore.broker.metadata import (
    CATALOGUE_FILE,
    META_DIR,
    PARTITION_METADATA_FILE,
    MetadataStore,
    TopicRecord,
    find_stray_partition_dirs,
    mark_for_deletion,
    new_topic_id,
    purge_deleted,
    read_partition_metadata,
    write_partition_metadata,
)
from logstore.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def record(name: str, partitions: int = 1, config: dict | None = None, created_ms: int = 1_700_000_000_000,
           topic_id: str | None = None) -> TopicRecord:
    return TopicRecord(name, topic_id or new_topic_id(), partitions, config or {}, created_ms)


def catalogue_path(data_dir) -> Path:
    return Path(data_dir) / META_DIR / CATALOGUE_FILE


# -- TopicRecord ----------------------------------------------------------------------------------


def test_topic_record_new_and_json_round_trip():
    rec = TopicRecord.new("orders", 3, {"retention_ms": 1000})
    assert len(rec.topic_id) == 32 and int(rec.topic_id, 16) >= 0
    assert abs(rec.created_ms - time.time() * 1000) < 60_000
    assert TopicRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert rec.partition_dirs() == ["orders-0", "orders-1", "orders-2"]
    assert TopicRecord.new("orders", 1).topic_id != rec.topic_id
    grown = rec.with_partitions(5)
    assert grown.partitions == 5 and grown.topic_id == rec.topic_id and rec.partitions == 3
    assert rec.with_config({"flush": "always"}).config == {"flush": "always"}


def test_topic_record_copies_its_config():
    config = {"retention_ms": 1}
    rec = record("t", config=config)
    config["retention_ms"] = 2
    assert rec.config == {"retention_ms": 1}


@pytest.mark.parametrize("kwargs, error", [
    ({"name": "a b"}, InvalidTopicError),
    ({"name": ""}, InvalidTopicError),
    ({"topic_id": "xyz"}, InvalidArgumentError),
    ({"topic_id": "A" * 32}, InvalidArgumentError),
    ({"topic_id": 5}, InvalidArgumentError),
    ({"partitions": 0}, InvalidPartitionsError),
    ({"partitions": True}, InvalidPartitionsError),
    ({"config": [("a", 1)]}, InvalidArgumentError),
    ({"config": {1: 2}}, InvalidArgumentError),
    ({"created_ms": -1}, InvalidArgumentError),
    ({"created_ms": 1.5}, InvalidArgumentError),
])
def test_topic_record_validates(kwargs, error):
    args = {"name": "t", "topic_id": new_topic_id(), "partitions": 1, "config": {}, "created_ms": 0, **kwargs}
    with pytest.raises(error):
        TopicRecord(**args)


# -- MetadataStore: round trip, reopen, errors -----------------------------------------------------


def test_new_data_dir_gets_an_empty_catalogue(tmp_path):
    data_dir = tmp_path / "data"
    store = MetadataStore.open(data_dir)
    assert store.topics() == {} and store.generation == 0 and len(store) == 0
    document = json.loads(catalogue_path(data_dir).read_text())
    assert document["format"] == "logstore-topics" and document["version"] == 1
    assert document["payload"] == {"generation": 0, "topics": []}
    assert MetadataStore.open(data_dir).topics() == {}


def test_round_trip_and_reopen(tmp_path):
    store = MetadataStore.open(tmp_path)
    orders = record("orders", 4, {"retention_ms": 60_000, "cleanup_policy": "compact,delete",
                                  "min_cleanable_dirty_ratio": 0.25})
    logs = record("logs.v1", 1)
    store.add(orders)
    store.add(logs)
    assert store.get("orders") == orders and "logs.v1" in store and "nope" not in store
    assert store.topics() == {"orders": orders, "logs.v1": logs}
    assert store.generation == 2

    reopened = MetadataStore.open(tmp_path)
    assert reopened.topics() == {"orders": orders, "logs.v1": logs}
    assert reopened.generation == 2
    assert type(reopened.get("orders").config["min_cleanable_dirty_ratio"]) is float

    grown = orders.with_partitions(6).with_config({"retention_ms": -1})
    reopened.replace(grown)
    assert reopened.remove("logs.v1") == logs
    again = MetadataStore.open(tmp_path)
    assert again.topics() == {"orders": grown}
    assert again.generation == 4


def test_topics_returns_a_snapshot(tmp_path):
    store = MetadataStore.open(tmp_path)
    snapshot = store.topics()
    store.add(record("t"))
    assert snapshot == {}
    snapshot["x"] = record("x")
    assert "x" not in store


def test_duplicate_unknown_and_collision_errors(tmp_path):
    store = MetadataStore.open(tmp_path)
    first = record("a.b")
    store.add(first)
    with pytest.raises(TopicExistsError, match="'a.b' already exists"):
        store.add(record("a.b"))
    with pytest.raises(InvalidTopicError, match="collides"):
        store.add(record("a_b"))
    with pytest.raises(UnknownTopicError, match="unknown topic 'nope'"):
        store.get("nope")
    with pytest.raises(UnknownTopicError):
        store.remove("nope")
    with pytest.raises(UnknownTopicError):
        store.replace(record("nope"))
    with pytest.raises(InvalidArgumentError, match="has id"):
        store.replace(record("a.b", 2))  # another topic id
    store.replace(first.with_partitions(3))
    with pytest.raises(InvalidPartitionsError, match="cannot shrink"):
        store.replace(first.with_partitions(2))
    # none of the failures changed anything, in memory or on disk
    assert store.topics() == {"a.b": first.with_partitions(3)} and store.generation == 2
    assert MetadataStore.open(tmp_path).topics() == store.topics()
    # removing a topic frees its name and the colliding names
    store.remove("a.b")
    store.add(record("a_b"))


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    store = MetadataStore.open(tmp_path)
    kept = record("kept")
    store.add(kept)
    before = catalogue_path(tmp_path).read_bytes()

    def failing_write(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("logstore.broker.metadata.write_atomic", failing_write)
    with pytest.raises(OSError, match="No space"):
        store.add(record("new"))
    with pytest.raises(OSError):
        store.remove("kept")
    with pytest.raises(OSError):
        store.replace(kept.with_partitions(2))
    assert store.topics() == {"kept": kept} and store.generation == 1
    assert catalogue_path(tmp_path).read_bytes() == before


def test_config_json_cannot_hold_is_rejected(tmp_path):
    store = MetadataStore.open(tmp_path)
    with pytest.raises(InvalidArgumentError, match="cannot be stored"):
        store.add(record("t", config={"x": object()}))
    with pytest.raises(InvalidArgumentError, match="cannot be stored"):
        store.add(record("t", config={"x": float("nan")}))
    assert store.topics() == {} and MetadataStore.open(tmp_path).topics() == {}


def test_concurrent_changes_from_threads(tmp_path):
    store = MetadataStore.open(tmp_path)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(8):
                rec = record(f"t{i}-{j}")
                store.add(rec)
                store.replace(rec.with_partitions(2))
                if j % 2:
                    store.remove(rec.name)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = {f"t{i}-{j}" for i in range(6) for j in range(0, 8, 2)}
    assert set(store.topics()) == expected
    assert all(rec.partitions == 2 for rec in store.topics().values())
    reopened = MetadataStore.open(tmp_path)
    assert reopened.topics() == store.topics()
    assert reopened.generation == 6 * (8 * 2 + 4)


# -- damaged catalogues ------------------------------------------------------------------------------


def _stored(tmp_path) -> dict:
    store = MetadataStore.open(tmp_path)
    store.add(record("orders", 2, {"retention_ms": 1000}))
    store.add(record("logs", 1))
    return json.loads(catalogue_path(tmp_path).read_text())


def _rewrite(tmp_path, document: dict, fix_checksum: bool) -> None:
    if fix_checksum:
        canonical = json.dumps(document["payload"], sort_keys=True, separators=(",", ":")).encode()
        document["xxh64"] = xxhash.xxh64_hexdigest(canonical)
    catalogue_path(tmp_path).write_text(json.dumps(document))


def test_changed_value_fails_the_checksum(tmp_path):
    document = _stored(tmp_path)
    document["payload"]["topics"][0]["partitions"] = 7
    _rewrite(tmp_path, document, fix_checksum=False)
    with pytest.raises(CorruptRecordError, match="checksum mismatch") as info:
        MetadataStore.open(tmp_path)
    assert str(catalogue_path(tmp_path)) in str(info.value)


def test_reformatted_file_with_the_same_content_still_loads(tmp_path):
    document = _stored(tmp_path)
    catalogue_path(tmp_path).write_text(json.dumps(document, indent=8))  # whitespace is not content
    assert set(MetadataStore.open(tmp_path).topics()) == {"orders", "logs"}


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    _stored(tmp_path)
    path = catalogue_path(tmp_path)
    original = path.read_bytes()
    expected = MetadataStore.open(tmp_path).topics()
    rng = random.Random(7)
    for pos in rng.sample(range(len(original)), min(len(original), 150)):
        damaged = bytearray(original)
        damaged[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            loaded = MetadataStore.open(tmp_path).topics()
        except CorruptRecordError:
            continue
        assert loaded == expected, f"a flip at byte {pos} changed the catalogue without an error"


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"format": "other", "version": 1}',
    b'{"format": "logstore-topics", "version": 1}',
    b'{"format": "logstore-topics", "version": 1, "payload": [], "xxh64": "0"}',
])
def test_unreadable_files(tmp_path, content):
    _stored(tmp_path)
    catalogue_path(tmp_path).write_bytes(content)
    with pytest.raises(CorruptRecordError, match="topic catalogue .* is unreadable"):
        MetadataStore.open(tmp_path)


def test_truncated_file(tmp_path):
    _stored(tmp_path)
    data = catalogue_path(tmp_path).read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 3):
        catalogue_path(tmp_path).write_bytes(data[:cut])
        with pytest.raises(CorruptRecordError):
            MetadataStore.open(tmp_path)


def test_wrong_version(tmp_path):
    document = _stored(tmp_path)
    document["version"] = 2
    _rewrite(tmp_path, document, fix_checksum=True)
    with pytest.raises(CorruptRecordError, match="format version 2; this build reads version 1"):
        MetadataStore.open(tmp_path)


@pytest.mark.parametrize("damage", [
    lambda p: p["topics"].append(dict(p["topics"][0])),  # a topic listed twice
    lambda p: p["topics"][0].update(name="bad name"),
    lambda p: p["topics"][0].update(partitions=0),
    lambda p: p["topics"][0].update(topic_id="nope"),
    lambda p: p["topics"][0].pop("created_ms"),
    lambda p: p["topics"][0].update(extra=1),
    lambda p: p.update(generation=-1),
    lambda p: p.pop("generation"),
    lambda p: p.update(topics={}),
    lambda p: p.update(topics=[1]),
])
def test_well_checksummed_but_invalid_payload(tmp_path, damage):
    document = _stored(tmp_path)
    damage(document["payload"])
    _rewrite(tmp_path, document, fix_checksum=True)
    with pytest.raises(CorruptRecordError, match="bad payload"):
        MetadataStore.open(tmp_path)


def test_unreadable_path_is_corrupt_not_empty(tmp_path):
    MetadataStore.open(tmp_path)
    path = catalogue_path(tmp_path)
    path.unlink()
    path.mkdir()  # reading a directory fails with an OSError other than FileNotFoundError
    with pytest.raises(CorruptRecordError, match="unreadable"):
        MetadataStore.open(tmp_path)


def test_missing_catalogue_next_to_partition_dirs_is_an_error(tmp_path):
    store = MetadataStore.open(tmp_path)
    rec = record("orders")
    store.add(rec)
    write_partition_metadata(tmp_path / "orders-0", rec.topic_id)
    catalogue_path(tmp_path).unlink()
    with pytest.raises(CorruptRecordError, match="missing.*orders-0"):
        MetadataStore.open(tmp_path)
    assert (tmp_path / "orders-0").is_dir()  # nothing was removed or adopted


def test_missing_catalogue_with_only_deleted_dirs_starts_empty(tmp_path):
    (tmp_path / "orders-0").mkdir()
    mark_for_deletion(tmp_path / "orders-0")
    assert MetadataStore.open(tmp_path).topics() == {}


def test_interrupted_write_leaves_the_old_catalogue(tmp_path):
    store = MetadataStore.open(tmp_path)
    rec = record("orders")
    store.add(rec)
    tmp_file = Path(str(catalogue_path(tmp_path)) + ".tmp")
    tmp_file.write_bytes(b'{"format": "logstore-topics", "ver')  # a write torn before its rename
    assert MetadataStore.open(tmp_path).topics() == {"orders": rec}
    assert not tmp_file.exists()


# -- kill -9 -------------------------------------------------------------------------------------------


def next_op(rng: random.Random, topics: dict[str, TopicRecord]) -> tuple[str, object]:
    """A deterministic catalogue change for the current ``topics``: ("add"|"replace", record) or ("remove", name)."""
    names = sorted(topics)
    roll = rng.random()
    if names and (roll < 0.25 or len(names) >= 30):
        return "remove", rng.choice(names)
    if names and roll < 0.55:
        current = topics[rng.choice(names)]
        if rng.random() < 0.5:
            return "replace", current.with_partitions(current.partitions + rng.randrange(1, 4))
        return "replace", current.with_config({"retention_ms": rng.randrange(1, 10**9),
                                               "flush": rng.choice(["always", "never"])})
    name = f"topic.{rng.randrange(10**6)}"
    if name in topics:
        return "remove", name
    config = {"segment_bytes": rng.randrange(128, 1 << 30), "cleanup_policy": rng.choice(["compact", "delete"]),
              "note": "x" * rng.randrange(0, 400)}  # sizes vary so writes vary
    return "add", TopicRecord(name, "%032x" % rng.getrandbits(128), rng.randrange(1, 9), config,
                              rng.randrange(1 << 41))


def apply_to_model(topics: dict[str, TopicRecord], op: tuple[str, object]) -> dict[str, TopicRecord]:
    kind, arg = op
    topics = dict(topics)
    if kind == "remove":
        del topics[arg]
    else:
        topics[arg.name] = arg
    return topics


def apply_to_store(store: MetadataStore, op: tuple[str, object]) -> None:
    kind, arg = op
    if kind == "remove":
        store.remove(arg)
    elif kind == "add":
        store.add(arg)
    else:
        store.replace(arg)


def child_main(data_dir: str, seed: int) -> None:
    store = MetadataStore.open(data_dir)
    rng = random.Random(seed)
    os.write(1, b"READY\n")
    step = 0
    while True:
        apply_to_store(store, next_op(rng, store.topics()))
        step += 1
        os.write(1, b"C %d\n" % step)  # reported only once the change is committed


@pytest.mark.slow
def test_catalogue_survives_kill_9(tmp_path):
    data_dir = str(tmp_path / "data")
    state = MetadataStore.open(data_dir).topics()
    generation = 0
    rng = random.Random(20240611)
    steps_seen = []
    for round_no in range(10):
        seed = rng.randrange(1 << 30)
        child = subprocess.Popen([sys.executable, __file__, "child", data_dir, str(seed)], env=CHILD_ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"READY\n", child.stderr.read().decode()
            time.sleep(rng.uniform(0.0, 0.25))
            child.send_signal(signal.SIGKILL)
            output = child.stdout.read().decode()
            stderr = child.stderr.read().decode()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL, f"the child died on its own:\n{stderr}"
        committed = [int(line.split()[1]) for line in output.splitlines() if line.startswith("C ")]
        assert committed == list(range(1, len(committed) + 1))
        last = committed[-1] if committed else 0
        steps_seen.append(last)

        # replay the child's changes: the file must hold state `last` or `last + 1`
        replay = random.Random(seed)
        states = [state]
        for _ in range(last + 1):
            states.append(apply_to_model(states[-1], next_op(replay, states[-1])))
        loaded_store = MetadataStore.open(data_dir)
        loaded = loaded_store.topics()
        assert loaded in (states[last], states[last + 1]), f"round {round_no}: not the last or next committed state"
        assert loaded_store.generation == generation + last + (loaded != states[last])
        assert not Path(str(catalogue_path(data_dir)) + ".tmp").exists()
        state, generation = loaded, loaded_store.generation
    assert sum(steps_seen) > 0, "the child never committed anything: the test tested nothing"


# -- partition.metadata -----------------------------------------------------------------------------------


def test_partition_metadata_round_trip(tmp_path):
    directory = tmp_path / "data" / "orders-0"  # created by the write
    topic_id = new_topic_id()
    assert read_partition_metadata(directory) is None
    write_partition_metadata(directory, topic_id)
    assert read_partition_metadata(directory) == topic_id
    assert read_partition_metadata(str(directory)) == topic_id
    other = new_topic_id()
    write_partition_metadata(str(directory), other)  # rewritten atomically
    assert read_partition_metadata(directory) == other
    assert sorted(os.listdir(directory)) == [PARTITION_METADATA_FILE]


@pytest.mark.parametrize("bad", ["", "xyz", "A" * 32, None, 12])
def test_partition_metadata_rejects_bad_ids(tmp_path, bad):
    with pytest.raises(InvalidArgumentError):
        write_partition_metadata(tmp_path / "t-0", bad)
    assert not (tmp_path / "t-0" / PARTITION_METADATA_FILE).exists()


def test_damaged_partition_metadata_is_an_error(tmp_path):
    directory = tmp_path / "orders-0"
    write_partition_metadata(directory, new_topic_id())
    path = directory / PARTITION_METADATA_FILE
    original = path.read_bytes()
    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptRecordError, match="partition.metadata is damaged"):
            read_partition_metadata(directory)
    for content in (b"", b"garbage", original[:-5], original + b"x\n"):
        path.write_bytes(content)
        with pytest.raises(CorruptRecordError):
            read_partition_metadata(directory)


def test_partition_metadata_is_ignored_by_the_partition_log(tmp_path):
    from logstore import PartitionLog

    directory = tmp_path / "orders-0"
    topic_id = new_topic_id()
    write_partition_metadata(directory, topic_id)
    with PartitionLog.open(directory) as log:
        log.append(b"v")
    with PartitionLog.open(directory) as log:
        assert log.log_end_offset == 1
    assert read_partition_metadata(directory) == topic_id


# -- stray directories, deletion ------------------------------------------------------------------------------


def test_find_stray_partition_dirs(tmp_path):
    orders, logs, empty = record("orders", 2), record("logs.v1", 1), record("x", 2)
    catalogue = {r.name: r for r in (orders, logs, empty)}
    for name, topic_id in [("orders-0", orders.topic_id), ("orders-1", orders.topic_id),
                           ("orders-2", orders.topic_id),  # partition >= count
                           ("gone-0", new_topic_id()),  # topic not in the catalogue
                           ("logs.v1-0", new_topic_id()),  # a deleted topic's dir: same name, other id
                           ("orders-01", orders.topic_id)]:  # not a name we would create: not ours
        write_partition_metadata(tmp_path / name, topic_id)
    (tmp_path / "x-1").mkdir()  # no partition.metadata
    (tmp_path / "x-0").mkdir()
    write_partition_metadata(tmp_path / "x-0", empty.topic_id)
    (tmp_path / "gone-3").mkdir()  # an unknown topic's dir without metadata
    deleted = mark_for_deletion(tmp_path / "orders-2")
    write_partition_metadata(tmp_path / "orders-2", orders.topic_id)
    for other in ("meta", "orders-x", "a b-0", "orders-", "-0x"):  # not partition directories
        (tmp_path / other).mkdir()
    (tmp_path / ".lock").write_bytes(b"")
    (tmp_path / "orders-5").write_bytes(b"")  # a file, not a directory
    (tmp_path / "real").mkdir()
    (tmp_path / "orders-6").symlink_to(tmp_path / "real")  # a link is never treated as stray
    before = sorted(os.listdir(tmp_path))

    stray = find_stray_partition_dirs(tmp_path, catalogue)
    assert stray == sorted(str(tmp_path / n) for n in
                           ["orders-2", "gone-0", "gone-3", "logs.v1-0", "x-1", os.path.basename(deleted)])
    assert sorted(os.listdir(tmp_path)) == before  # nothing deleted
    assert find_stray_partition_dirs(str(tmp_path), {}) == sorted(
        str(tmp_path / n) for n in ["orders-0", "orders-1", "orders-2", "gone-0", "gone-3", "logs.v1-0",
                                    "x-0", "x-1", os.path.basename(deleted)])
    assert find_stray_partition_dirs(tmp_path / "missing", catalogue) == []


def test_damaged_metadata_of_a_catalogue_partition_is_not_called_stray(tmp_path):
    orders = record("orders", 1)
    write_partition_metadata(tmp_path / "orders-0", orders.topic_id)
    (tmp_path / "orders-0" / PARTITION_METADATA_FILE).write_bytes(b"version: 0\ntopic_id: zz\n")
    with pytest.raises(CorruptRecordError, match="orders-0"):
        find_stray_partition_dirs(tmp_path, {"orders": orders})
    assert find_stray_partition_dirs(tmp_path, {}) == [str(tmp_path / "orders-0")]  # not ours either way


def test_recreated_topic_does_not_adopt_the_old_directory(tmp_path):
    store = MetadataStore.open(tmp_path)
    old = record("orders", 1)
    store.add(old)
    write_partition_metadata(tmp_path / "orders-0", old.topic_id)
    assert find_stray_partition_dirs(tmp_path, store.topics()) == []
    store.remove("orders")  # a crash here leaves the directory under its old name
    store.add(record("orders", 1))
    assert find_stray_partition_dirs(tmp_path, store.topics()) == [str(tmp_path / "orders-0")]


def test_mark_for_deletion_and_purge(tmp_path):
    directory = tmp_path / "orders-3"
    write_partition_metadata(directory, new_topic_id())
    (directory / "00000000000000000000.log").write_bytes(b"data")
    kept = tmp_path / "orders-4"
    kept.mkdir()

    target = mark_for_deletion(directory)
    name = os.path.basename(target)
    assert os.path.dirname(target) == str(tmp_path)
    assert name.startswith("orders-3.") and name.endswith("-delete") and len(name) == len("orders-3") + 40
    int(name[len("orders-3."):-len("-delete")], 16)
    assert not directory.exists()
    assert (Path(target) / "00000000000000000000.log").read_bytes() == b"data"
    assert mark_for_deletion(kept) != target  # unique names

    marked = sorted(str(tmp_path / n) for n in os.listdir(tmp_path) if n.endswith("-delete"))
    assert len(marked) == 2
    assert sorted(purge_deleted(tmp_path)) == marked
    assert os.listdir(tmp_path) == []
    assert purge_deleted(tmp_path) == []


def test_purge_leaves_everything_else(tmp_path):
    (tmp_path / "orders-0").mkdir()
    (tmp_path / "orders-0.nothex-delete").mkdir()
    (tmp_path / "file.0123456789abcdef0123456789abcdef-delete").write_bytes(b"")  # a file, not a directory
    before = sorted(os.listdir(tmp_path))
    assert purge_deleted(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == before


def test_mark_for_deletion_of_the_longest_names_fits_a_file_name(tmp_path):
    topic = "t" * 249
    directory = tmp_path / f"{topic}-99999"
    directory.mkdir()
    target = mark_for_deletion(directory)
    assert len(os.path.basename(target)) == 255
    assert find_stray_partition_dirs(tmp_path, {}) == [target]
    assert purge_deleted(tmp_path) == [target]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    child_main(sys.argv[2], int(sys.argv[3]))
