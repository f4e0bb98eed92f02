"""Group administration on the store: list_groups, describe_group (state, generation, members,
assignment, committed offsets, log end, lag), reset_offsets (earliest, latest, offset, timestamp,
dry run; only for an empty group), delete_group, offsets retention, and the internal offsets
topic kept out of the user's way."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import TopicPartition
from logstore.errors import GroupNotEmptyError, InvalidArgumentError, InvalidTopicError, UnknownGroupError

from .conftest import QUIET, Driver, fill, group, partitions, positions, wait_until

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)
OFFSETS_TOPIC = "__consumer_offsets"


def member(store: logstore.Store, group_id: str, *topics: str, **config: Any) -> logstore.Consumer:
    settings: dict[str, Any] = {"auto_offset_reset": "earliest", "enable_auto_commit": False, **QUIET, **config}
    return store.consumer(*topics, group_id=group_id, **settings)


def commit_offline(store: logstore.Store, group_id: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit for a group without members (a manual assign() consumer may)."""
    c = store.consumer(group_id=group_id, enable_auto_commit=False)
    c.assign(list(offsets))
    c.commit({tp: offset for tp, offset in offsets.items()})
    c.close()


def committed(store: logstore.Store, group_id: str) -> dict[tuple[str, int], int | None]:
    return {(p.topic, p.partition): p.committed for p in store.describe_group(group_id).partitions}


def test_list_groups(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    assert store.list_groups() == []
    members = [member(store, "active", "t") for _ in range(2)]
    Driver(members).settle(store, "active", partitions("t", 2))
    commit_offline(store, "idle", {T0: 1})
    listed = {g.group_id: g for g in store.list_groups()}
    assert set(listed) == {"active", "idle"}
    assert (listed["active"].state, listed["active"].members) == ("Stable", 2)
    assert (listed["idle"].state, listed["idle"].members) == ("Empty", 0)
    for c in members:
        c.close()
    assert {(g.group_id, g.state, g.members) for g in store.list_groups()} == {("active", "Empty", 0),
                                                                               ("idle", "Empty", 0)}


def test_describe_group(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    store.create_topic("u", partitions=1)
    fill(store, "t", 10)
    members = [member(store, "G", "t", client_id=f"client-{i}") for i in range(2)]
    driver = Driver(members)
    driver.settle(store, "G", partitions("t", 2))
    driver.run_until(lambda: len({r.partition for rs in driver.received for r in rs}) == 2, "both partitions read")
    owner0 = next(c for c in members if T0 in c.assignment())
    owner1 = next(c for c in members if T1 in c.assignment())
    owner0.commit({T0: logstore.OffsetAndMetadata(4, "half way")})
    d = store.describe_group("G")
    g = group(store, "G")
    assert (d.group_id, d.state, d.generation, d.protocol) == ("G", "Stable", g.generation, "cooperative-sticky")
    assert d.leader in {c.member_id for c in members}
    assert {(m.member_id, m.client_id, m.group_instance_id, tuple(m.assignment)) for m in d.members} == {
        (owner0.member_id, owner0.config["client_id"], None, (T0,)),
        (owner1.member_id, owner1.config["client_id"], None, (T1,))}
    by_partition = {(p.topic, p.partition): p for p in d.partitions}
    assert set(by_partition) == {("t", 0), ("t", 1)}
    p0, p1 = by_partition["t", 0], by_partition["t", 1]
    assert (p0.committed, p0.log_end_offset, p0.lag, p0.member_id, p0.metadata) == (4, 10, 6, owner0.member_id,
                                                                                   "half way")
    assert (p1.committed, p1.log_end_offset, p1.lag, p1.member_id) == (None, 10, None, owner1.member_id)
    assert d.total_lag == 6
    owner1.commit({T1: 10})
    fill(store, "t", 5, start=10)
    d = store.describe_group("G")
    assert {(p.partition, p.committed, p.log_end_offset, p.lag) for p in d.partitions} == {(0, 4, 15, 11),
                                                                                           (1, 10, 15, 5)}
    assert d.total_lag == 16
    for c in members:
        c.close()
    d = store.describe_group("G")
    assert (d.state, d.members, d.leader) == ("Empty", [], None)
    assert {(p.partition, p.committed, p.member_id) for p in d.partitions} == {(0, 4, None), (1, 10, None)}


def test_describe_unknown_group(store: logstore.Store) -> None:
    with pytest.raises(UnknownGroupError):
        store.describe_group("nobody")
    with pytest.raises(InvalidArgumentError):
        store.describe_group(7)  # type: ignore[arg-type]


@pytest.fixture
def empty_group(store: logstore.Store) -> logstore.Store:
    """Group G with offsets t-0: 5, t-1: 7 on a topic of 10 records per partition with timestamps
    1000, 1010, ..., 1090; no members."""
    store.create_topic("t", partitions=2)
    producer = store.producer()
    for p in (0, 1):
        for i in range(10):
            producer.send("t", b"%d" % i, partition=p, timestamp_ms=1000 + 10 * i)
    producer.close()
    commit_offline(store, "G", {T0: 5, T1: 7})
    return store


@pytest.mark.parametrize(("to", "offset", "timestamp", "expected"), [
    ("earliest", None, None, {T0: 0, T1: 0}),
    ("latest", None, None, {T0: 10, T1: 10}),
    ("offset", 3, None, {T0: 3, T1: 3}),
    ("offset", 99, None, {T0: 10, T1: 10}),  # clamped into the log
    ("timestamp", None, 1025, {T0: 3, T1: 3}),
    ("timestamp", None, 5000, {T0: 10, T1: 10}),  # after every record: the log end
])
def test_reset_offsets(empty_group: logstore.Store, to: str, offset: int | None, timestamp: int | None,
                       expected: dict[TopicPartition, int]) -> None:
    store = empty_group
    assert store.reset_offsets("G", to, offset=offset, timestamp=timestamp, dry_run=True) == expected
    assert committed(store, "G") == {("t", 0): 5, ("t", 1): 7}  # a dry run changes nothing
    assert store.reset_offsets("G", to, offset=offset, timestamp=timestamp) == expected
    assert committed(store, "G") == {(tp.topic, tp.partition): o for tp, o in expected.items()}
    # a new member starts where the reset put the group
    c = member(store, "G", "t", auto_offset_reset="latest")
    driver = Driver([c])
    driver.settle(store, "G", partitions("t", 2))
    driver.poll_round(0.02)
    assert sorted(positions(driver.received[0])) == [("t", tp.partition, o) for tp in (T0, T1)
                                                     for o in range(expected[tp], 10)]


def test_reset_offsets_of_chosen_partitions_and_topics(empty_group: logstore.Store) -> None:
    store = empty_group
    store.create_topic("u", partitions=1)
    fill(store, "u", 4)
    assert store.reset_offsets("G", "latest", partitions=[T1]) == {T1: 10}
    assert committed(store, "G") == {("t", 0): 5, ("t", 1): 10}
    # a topic the group had no offsets for gets them
    assert store.reset_offsets("G", "offset", topics=["u"], offset=2) == {TopicPartition("u", 0): 2}
    assert committed(store, "G") == {("t", 0): 5, ("t", 1): 10, ("u", 0): 2}
    with pytest.raises(InvalidArgumentError):
        store.reset_offsets("G", "offset")  # no offset given
    with pytest.raises(InvalidArgumentError):
        store.reset_offsets("G", "sideways")
    with pytest.raises(InvalidArgumentError):
        store.reset_offsets("G", "offset", offset=-1)
    assert committed(store, "G") == {("t", 0): 5, ("t", 1): 10, ("u", 0): 2}


def test_reset_offsets_of_an_active_group_is_refused(empty_group: logstore.Store) -> None:
    store = empty_group
    c = member(store, "G", "t")
    Driver([c]).settle(store, "G", partitions("t", 2))
    before = committed(store, "G")
    with pytest.raises(GroupNotEmptyError):
        store.reset_offsets("G", "earliest")
    with pytest.raises(GroupNotEmptyError):
        store.reset_offsets("G", "latest", dry_run=True)
    with pytest.raises(GroupNotEmptyError):
        store.reset_offsets("G", "offset", topics=["t"], offset=1)
    assert committed(store, "G") == before == {("t", 0): 5, ("t", 1): 7}
    with pytest.raises(UnknownGroupError):
        store.reset_offsets("nobody", "earliest")


def test_delete_group(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = logstore.open(path, cleaner=False)
    try:
        store.create_topic("t", partitions=2)
        fill(store, "t", 10)
        with pytest.raises(UnknownGroupError):
            store.delete_group("G")
        c = member(store, "G", "t")
        driver = Driver([c], commit=True)
        driver.drain_until_count(0, 20)
        with pytest.raises(GroupNotEmptyError):
            store.delete_group("G")
        assert committed(store, "G") == {("t", 0): 10, ("t", 1): 10}
        c.close()
        store.delete_group("G")
        assert store.list_groups() == []
        with pytest.raises(UnknownGroupError):
            store.describe_group("G")
        with pytest.raises(UnknownGroupError):
            store.delete_group("G")
    finally:
        store.close()
    store = logstore.open(path, cleaner=False)  # the deletion is in the offsets log too
    try:
        assert store.list_groups() == []
        with pytest.raises(UnknownGroupError):
            store.describe_group("G")
        # a new consumer of the name starts as auto_offset_reset says, not at the old offsets
        again = member(store, "G", "t", auto_offset_reset="earliest")
        assert again.committed([T0, T1]) == {T0: None, T1: None}
        driver = Driver([again])
        driver.drain_until_count(0, 20)
        assert sorted(positions(driver.received[0])) == [("t", p, o) for p in (0, 1) for o in range(10)]
        late = member(store, "H", "t", auto_offset_reset="latest")
        assert late.poll(0.05) == [] and late.position(T0) == 10
    finally:
        store.close()


def test_offsets_retention(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = logstore.open(path, cleaner=False, offsets_retention_ms=400)
    try:
        store.create_topic("t", partitions=1)
        fill(store, "t", 5)
        commit_offline(store, "idle", {T0: 2})
        active = member(store, "busy", "t")
        driver = Driver([active], commit=True)
        driver.drain_until_count(0, 5)
        coordinator = store._group_coordinator()
        coordinator.expire_offsets_now()  # younger than the retention: kept
        assert committed(store, "idle") == {("t", 0): 2}

        def idle_expired() -> bool:
            driver.poll_round()  # the active member stays active
            coordinator.expire_offsets_now()
            return "idle" not in {g.group_id for g in store.list_groups()}

        wait_until(idle_expired, "the idle group's offsets to expire")
        with pytest.raises(UnknownGroupError):
            store.describe_group("idle")
        assert committed(store, "busy") == {("t", 0): 5}  # an active group keeps them, however old
        assert store._group_coordinator().committed("busy", [T0])[T0] is not None
        since = time.monotonic()
        active.close()  # now empty: its offsets expire once it has been empty for the retention
        def busy_expired() -> bool:
            coordinator.expire_offsets_now()
            return "busy" not in {g.group_id for g in store.list_groups()}

        wait_until(busy_expired, "the busy group's offsets to expire once empty")
        assert time.monotonic() - since >= 0.4
    finally:
        store.close()
    store = logstore.open(path, cleaner=False)
    try:
        assert store.list_groups() == []
    finally:
        store.close()


def test_offsets_topic_is_internal(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    commit_offline(store, "G", {T0: 0})
    assert store.list_topics() == ["t"]
    assert OFFSETS_TOPIC in store.list_topics(internal=True)
    with pytest.raises(InvalidTopicError):
        store.delete_topic(OFFSETS_TOPIC)
    assert committed(store, "G") == {("t", 0): 0}
    # a pattern subscription never picks it up
    c = store.consumer(pattern=".*", group_id="P", auto_offset_reset="earliest", **QUIET)
    Driver([c]).settle(store, "P", {T0})
    assert c.assignment() == {T0}


def test_offsets_retention_runs_by_itself(tmp_path: Path) -> None:
    store = logstore.open(tmp_path / "data", cleaner=False, offsets_retention_ms=200,
                          offsets_retention_check_interval_ms=50)
    try:
        store.create_topic("t", partitions=1)
        commit_offline(store, "idle", {T0: 0})
        wait_until(lambda: store.list_groups() == [], "the coordinator's timer to expire the idle group")
    finally:
        store.close()
