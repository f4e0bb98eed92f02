"""Consumer groups end to end through ``store.consumer(group_id=...)``: partitions split among the
members of a group and every group reads every record; consumers vs partitions; each rebalance
trigger (join, leave, death, poll-interval overrun, new partitions, subscription and pattern
changes); fencing of commits; cooperative vs eager revocation; the rebalance listener (and
commits inside it); static membership; committed offsets across restarts, auto_offset_reset and
auto-commit; and eight consumer threads in one group under a producer thread."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import TopicPartition
from logstore.errors import (
    CommitFailedError,
    ConfigError,
    FencedInstanceIdError,
    InvalidArgumentError,
    NoOffsetForPartitionError,
)
from logstore.groups.assignors import MemberMetadata, PartitionAssignor
from logstore.groups.membership import ConsumerRebalanceListener
from logstore.groups.offsets import OffsetAndMetadata

from .conftest import (
    FAST_DEATH,
    QUIET,
    Driver,
    RecordingListener,
    fill,
    group,
    partitions,
    positions,
    wait_until,
)

T0, T1, T2, T3 = (TopicPartition("t", p) for p in range(4))


def member(store: logstore.Store, group_id: str, *topics: str, listener: Any = None,
           **config: Any) -> logstore.Consumer:
    """A group member reading from the earliest offset, committing only when told to."""
    settings: dict[str, Any] = {"auto_offset_reset": "earliest", "enable_auto_commit": False, **QUIET, **config}
    return store.consumer(*topics, group_id=group_id, listener=listener, **settings)


def offsets_of(records: list[Any], tp: TopicPartition) -> list[int]:
    return [r.offset for r in records if (r.topic, r.partition) == tp]


# -- who gets what ----------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_two_groups_each_read_every_record_once(store: logstore.Store, strategy: str) -> None:
    store.create_topic("t", partitions=2)
    fill(store, "t", 25)  # some records before anyone joins, more after the groups settle
    c1, c2 = (member(store, "A", "t", partition_assignment_strategy=strategy) for _ in range(2))
    c3 = member(store, "B", "t", partition_assignment_strategy=strategy)
    driver = Driver([c1, c2, c3], commit=True)
    both = partitions("t", 2)
    driver.run_until(lambda: driver.settled(store, "A", both) and c3.assignment() == both, "both groups to settle")
    assert {frozenset(c1.assignment()), frozenset(c2.assignment())} == {frozenset({T0}), frozenset({T1})}
    assert c3.assignment() == both
    fill(store, "t", 25, start=25)
    total = 50 * 2
    driver.run_until(lambda: len(driver.received[0]) + len(driver.received[1]) >= total
                     and len(driver.received[2]) >= total, "every record to reach both groups")
    driver.poll_round(0.05)  # nothing more may come: a duplicate would show here
    group_a = Counter(positions(driver.received[0] + driver.received[1]))
    group_b = Counter(positions(driver.received[2]))
    everything = {("t", p, o) for p in (0, 1) for o in range(50)}
    assert set(group_a) == everything and set(group_a.values()) == {1}
    assert set(group_b) == everything and set(group_b.values()) == {1}
    for c in (c1, c2, c3):
        assert {tp: om.offset for tp, om in c.committed([T0, T1]).items()} == {T0: 50, T1: 50}
    # each member of A read only the partition it owned once the group had settled
    for i, c in ((0, c1), (1, c2)):
        late = [r for r in driver.received[i] if r.offset >= 25]
        assert {TopicPartition(r.topic, r.partition) for r in late} <= c.assignment()


@pytest.mark.parametrize(("consumers", "count"), [(3, 3), (2, 5), (4, 2)])
def test_consumers_vs_partitions(store: logstore.Store, consumers: int, count: int) -> None:
    store.create_topic("t", partitions=count)
    members = [member(store, "G", "t") for _ in range(consumers)]
    driver = Driver(members)
    driver.settle(store, "G", partitions("t", count))
    sizes = sorted(len(c.assignment()) for c in members)
    if consumers == count:
        assert sizes == [1] * count
    elif consumers < count:
        assert sizes == [2, 3]  # balanced: some own several
    else:
        assert sizes == [0, 0, 1, 1]  # the extra members own nothing and wait


def test_idle_member_takes_over_when_an_owner_leaves(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    members = [member(store, "G", "t") for _ in range(3)]
    driver = Driver(members, commit=True)
    driver.settle(store, "G", partitions("t", 2))
    idle = next(c for c in members if not c.assignment())
    owner = next(c for c in members if c.assignment())
    (moving,) = owner.assignment()
    fill(store, "t", 10)
    driver.run_until(lambda: owner.committed(moving) is not None and owner.committed(moving).offset == 10,
                     "the owner to read and commit its partition")
    owner.close()
    driver.settle(store, "G", partitions("t", 2))
    assert moving in idle.assignment()
    i = members.index(idle)
    before = len(driver.received[i])
    fill(store, "t", 5, start=10)
    driver.run_until(lambda: offsets_of(driver.received[i], moving) == list(range(10, 15)),
                     "the new owner to read from the committed offset")
    assert len(driver.received[i]) - before == 5


# -- rebalance triggers -----------------------------------------------------------------------------

def test_member_joins(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    first_listener, second_listener = RecordingListener(), RecordingListener()
    first = member(store, "G", "t", listener=first_listener)
    driver = Driver([first])
    driver.settle(store, "G", partitions("t", 4))
    generation = first.generation
    assert first_listener.events == [("assigned", frozenset(partitions("t", 4)))]
    second = member(store, "G", "t", listener=second_listener)
    driver.add(second)
    driver.settle(store, "G", partitions("t", 4))
    assert first.generation > generation
    assert len(first.assignment()) == len(second.assignment()) == 2
    # cooperative: the first member gives up exactly what moved, and nothing is lost
    assert first_listener.union("revoked") == second.assignment()
    assert "lost" not in first_listener.kinds()
    assert second_listener.union("assigned") == second.assignment()
    assert second_listener.union("revoked") == set()


def test_member_leaves(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    stay_listener, leave_listener = RecordingListener(), RecordingListener()
    stay = member(store, "G", "t", listener=stay_listener)
    leave = member(store, "G", "t", listener=leave_listener)
    driver = Driver([stay, leave])
    driver.settle(store, "G", partitions("t", 4))
    generation = stay.generation
    left = leave.assignment()
    assert len(left) == 2
    stay_listener.clear()
    leave.close()
    assert leave_listener.events[-1] == ("revoked", frozenset(left))  # close revokes, it does not lose
    driver.settle(store, "G", partitions("t", 4))
    assert stay.generation > generation and stay.assignment() == partitions("t", 4)
    assert stay_listener.events == [("assigned", frozenset(left))]
    assert leave.member_id is None


def test_member_dies(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    listener = RecordingListener()
    survivor = member(store, "G", "t", listener=listener, **FAST_DEATH)
    doomed = member(store, "G", "t", **FAST_DEATH)
    driver = Driver([survivor, doomed], commit=True)
    driver.settle(store, "G", partitions("t", 4))
    orphaned = doomed.assignment()
    doomed_id = doomed.member_id
    fill(store, "t", 10)
    driver.run_until(lambda: all(doomed.committed(tp) is not None for tp in orphaned), "the doomed member to commit")
    doomed_committed = {tp: doomed.committed(tp).offset for tp in orphaned}
    doomed._abandon()  # no heartbeats, no leave: the coordinator notices after session_timeout_ms
    assert doomed_id in group(store, "G").members  # not gone until its session expires
    listener.clear()
    driver.settle(store, "G", partitions("t", 4))
    assert doomed_id not in group(store, "G").members
    assert survivor.assignment() == partitions("t", 4)
    assert listener.events == [("assigned", frozenset(orphaned))]
    # the survivor starts the orphaned partitions at the dead member's committed offsets
    fill(store, "t", 3, start=10)
    driver.run_until(lambda: all(offsets_of(driver.received[0], tp)[-3:] == [10, 11, 12] for tp in orphaned),
                     "the survivor to read the orphaned partitions")
    for tp in orphaned:
        assert offsets_of(driver.received[0], tp) == list(range(doomed_committed[tp], 13))


def test_consumer_dropped_without_close_stops_heartbeating(store: logstore.Store) -> None:
    """Regression: the heartbeat thread held its consumer, so a consumer the program dropped
    without close() stayed in the group (heartbeating, owning partitions) for ever."""
    import gc

    store.create_topic("t", partitions=4)
    survivor = member(store, "G", "t", **FAST_DEATH)
    dropped = member(store, "G", "t", **FAST_DEATH)
    driver = Driver([survivor, dropped])
    driver.settle(store, "G", partitions("t", 4))
    dropped_id = dropped.member_id
    assert survivor.assignment() != partitions("t", 4)
    del driver, dropped
    gc.collect()
    survivor_driver = Driver([survivor])
    survivor_driver.settle(store, "G", partitions("t", 4))
    assert dropped_id not in group(store, "G").members
    assert survivor.assignment() == partitions("t", 4)


def test_member_exceeding_max_poll_interval_is_removed_and_rejoins(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    slow_listener = RecordingListener()
    slow = member(store, "G", "t", listener=slow_listener, max_poll_interval_ms=300, heartbeat_interval_ms=20)
    busy = member(store, "G", "t")
    driver = Driver([slow, busy])
    driver.settle(store, "G", partitions("t", 2))
    owned = slow.assignment()
    slow_id = slow.member_id
    assert len(owned) == 1
    fill(store, "t", 10)
    driver.run_until(lambda: sum(map(len, driver.received)) == 20, "both members to read")
    slow_listener.clear()
    # the slow member stops polling while its heartbeat thread lives: it is removed from the group
    busy_only = Driver([busy])
    busy_only.run_until(lambda: slow_id not in group(store, "G").members and busy.assignment() == partitions("t", 2)
                        and group(store, "G").state == "Stable", "the slow member to be removed")
    assert slow_listener.events == []  # nothing is called outside poll
    # its next poll reports the loss, returns nothing of the lost partition, and rejoins
    records = slow.poll(0)
    assert records == []
    assert slow_listener.events[-1] == ("lost", frozenset(owned))
    assert "revoked" not in slow_listener.kinds()
    assert slow.member_id is not None and slow.member_id != slow_id
    driver.settle(store, "G", partitions("t", 2))
    assert len(slow.assignment()) == 1


def test_partitions_added_to_a_subscribed_topic(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    members = [member(store, "G", "t") for _ in range(2)]
    driver = Driver(members)
    driver.settle(store, "G", partitions("t", 2))
    generation = members[0].generation
    store.create_partitions("t", 4)
    driver.settle(store, "G", partitions("t", 4))
    assert members[0].generation > generation
    assert sorted(len(c.assignment()) for c in members) == [2, 2]
    fill(store, "t", 3)
    driver.run_until(lambda: sum(map(len, driver.received)) == 12, "records of every partition")
    assert {(r.partition, r.offset) for rs in driver.received for r in rs} == {(p, o) for p in range(4)
                                                                                for o in range(3)}


def test_subscription_change(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    store.create_topic("u", partitions=2)
    changer_listener = RecordingListener()
    changer = member(store, "G", "t", listener=changer_listener)
    other = member(store, "G", "t")
    driver = Driver([changer, other])
    driver.settle(store, "G", partitions("t", 2))
    generation = other.generation
    before = changer.assignment()
    changer_listener.clear()
    changer.subscribe(["u"], listener=changer_listener)
    driver.settle(store, "G", partitions("t", 2) | partitions("u", 2))
    assert other.generation > generation
    assert changer.assignment() == partitions("u", 2)
    assert other.assignment() == partitions("t", 2)
    assert changer_listener.union("revoked") == before
    assert changer_listener.union("assigned") == partitions("u", 2)


def test_pattern_subscription_takes_a_new_topic(store: logstore.Store) -> None:
    store.create_topic("ev-a", partitions=2)
    store.create_topic("other", partitions=1)
    members = [store.consumer(group_id="G", pattern=r"ev-.*", auto_offset_reset="earliest",
                              enable_auto_commit=False, **QUIET) for _ in range(2)]
    driver = Driver(members)
    driver.settle(store, "G", partitions("ev-a", 2))
    generation = members[0].generation
    store.create_topic("ev-b", partitions=2)
    driver.settle(store, "G", partitions("ev-a", 2) | partitions("ev-b", 2))
    assert members[0].generation > generation
    fill(store, "ev-b", 4)
    fill(store, "other", 4)
    driver.run_until(lambda: sum(map(len, driver.received)) >= 8, "records of the new topic")
    driver.poll_round(0.02)
    assert sorted((r.topic, r.partition, r.offset) for rs in driver.received for r in rs) == \
        [("ev-b", p, o) for p in range(2) for o in range(4)]


def test_subscribed_topic_deleted_and_recreated(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    store.create_topic("u", partitions=2)
    fill(store, "t", 20)
    members = [member(store, "G", "t", "u") for _ in range(2)]
    driver = Driver(members, commit=True)
    driver.settle(store, "G", partitions("t", 2) | partitions("u", 2))
    driver.run_until(lambda: sum(map(len, driver.received)) >= 40, "the records of t")
    generation = members[0].generation
    store.delete_topic("t")
    driver.settle(store, "G", partitions("u", 2))
    assert members[0].generation > generation
    # the group's offsets of the deleted topic go with it (as Kafka's coordinator drops them): a
    # topic re-created under the name is read from its start, not from the old topic's offsets
    store.create_topic("t", partitions=2)
    fill(store, "t", 30)

    seen = [len(rs) for rs in driver.received]

    def new_records() -> list[tuple[str, int, int]]:
        return sorted(positions(r for rs, n in zip(driver.received, seen) for r in rs[n:]))

    driver.settle(store, "G", partitions("t", 2) | partitions("u", 2))
    driver.run_until(lambda: {("t", 0, 29), ("t", 1, 29)} <= set(new_records()), "the new t to be read to its end")
    assert new_records() == [("t", p, o) for p in (0, 1) for o in range(30)]


def test_a_blocked_poll_wakes_up_to_rebalance(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    blocked = member(store, "G", "t")
    blocked.poll(0)
    assert blocked.assignment() == partitions("t", 2)
    returned: list[list[Any]] = []
    thread = threading.Thread(target=lambda: returned.append(blocked.poll(60.0)))
    thread.start()
    try:
        joiner = member(store, "G", "t")
        Driver([joiner]).run_until(lambda: len(joiner.assignment()) == 1 and group(store, "G").state == "Stable",
                                   "the joiner to get a partition while the other member blocks in poll")
        assert thread.is_alive()  # it rejoined inside its poll and went back to waiting
        assert blocked.assignment() == partitions("t", 2) - joiner.assignment()
        fill(store, "t", 1)
        thread.join(10)
        assert not thread.is_alive()
        assert [TopicPartition(r.topic, r.partition) for r in returned[0]] == list(blocked.assignment())
    finally:
        blocked.wakeup()
        thread.join(10)


def test_unsubscribe_leaves_and_subscribe_rejoins(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    listener = RecordingListener()
    leaving = member(store, "G", "t", listener=listener)
    staying = member(store, "G", "t")
    driver = Driver([leaving, staying])
    driver.settle(store, "G", partitions("t", 2))
    owned = leaving.assignment()
    listener.clear()
    leaving.unsubscribe()
    assert listener.events == [("revoked", frozenset(owned))]
    assert leaving.assignment() == set() and leaving.member_id is None
    Driver([staying]).settle(store, "G", partitions("t", 2))
    assert len(group(store, "G").members) == 1 and staying.assignment() == partitions("t", 2)
    leaving.subscribe(["t"], listener=listener)
    driver.settle(store, "G", partitions("t", 2))
    assert len(leaving.assignment()) == len(staying.assignment()) == 1


def test_members_without_a_common_assignor_are_refused(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    members = [member(store, "G", "t") for _ in range(2)]
    driver = Driver(members)
    driver.settle(store, "G", partitions("t", 2))
    generation = group(store, "G").generation
    eager = member(store, "G", "t", partition_assignment_strategy="range")
    with pytest.raises(ConfigError):
        eager.poll(0)
    driver.poll_round()
    assert driver.settled(store, "G", partitions("t", 2)) and group(store, "G").generation == generation
    # one that offers both joins, and the group keeps the protocol every member supports
    both = member(store, "G", "t", partition_assignment_strategy=["range", "cooperative-sticky"])
    driver.add(both)
    driver.settle(store, "G", partitions("t", 2))
    assert store.describe_group("G").protocol == "cooperative-sticky"


def test_manual_assignment_cannot_commit_for_an_active_group(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    active = member(store, "G", "t")
    Driver([active]).settle(store, "G", {T0})
    manual = store.consumer(group_id="G", enable_auto_commit=False)
    manual.assign([T0])
    with pytest.raises(CommitFailedError):
        manual.commit({T0: 3})
    assert manual.committed(T0) is None
    active.close()
    manual.commit({T0: 3})
    assert manual.committed(T0).offset == 3


def test_a_slow_consumer_stays_while_its_heartbeats_go_on(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    slow = member(store, "G", "t", session_timeout_ms=200, heartbeat_interval_ms=40)
    slow.poll(0)
    member_id, generation = slow.member_id, slow.generation
    time.sleep(0.6)  # "processing" for three session timeouts, within max_poll_interval_ms
    assert slow.poll(0) == []
    assert (slow.member_id, slow.generation, group(store, "G").generation) == (member_id, generation, generation)


class PinToFirst(PartitionAssignor):
    """Every partition to the member with the lowest group_instance_id (a user-written assignor)."""

    name = "pin"

    def assign(self, members: Mapping[str, MemberMetadata], partitions_per_topic: Mapping[str, int]
               ) -> dict[str, list[TopicPartition]]:
        first = min(members, key=lambda m: members[m].group_instance_id or m)
        everything = [TopicPartition(t, p) for t, n in sorted(partitions_per_topic.items()) for p in range(n)]
        return {m: everything if m == first else [] for m in members}


def test_a_user_written_assignor(store: logstore.Store) -> None:
    store.create_topic("t", partitions=3)
    members = [member(store, "G", "t", group_instance_id=f"i-{i}", partition_assignment_strategy=PinToFirst)
               for i in (2, 1)]
    Driver(members).settle(store, "G", partitions("t", 3))
    assert (members[1].assignment(), members[0].assignment()) == (partitions("t", 3), set())
    assert store.describe_group("G").protocol == "pin"


def test_an_assignor_failure_is_raised_and_the_rebalance_retried(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, "t", 3)
    failures = [RuntimeError("the assignor failed")]

    class FailsOnce(PinToFirst):
        name = "fails-once"

        def assign(self, members: Mapping[str, MemberMetadata], partitions_per_topic: Mapping[str, int]
                   ) -> dict[str, list[TopicPartition]]:
            if failures:
                raise failures.pop()
            return super().assign(members, partitions_per_topic)

    c = member(store, "G", "t", partition_assignment_strategy=FailsOnce)
    with pytest.raises(RuntimeError, match="the assignor failed"):
        for _ in range(100):  # the poll that joins, or one of the next
            c.poll(0.01)
    # the group does not settle on an empty assignment: the next polls rebalance again
    driver = Driver([c])
    driver.run_until(lambda: len(driver.received[0]) == 6, "the records after the retried rebalance", timeout=2.0)
    assert c.assignment() == partitions("t", 2)


# -- fencing ----------------------------------------------------------------------------------------

def test_commit_of_a_removed_member_is_refused(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    fill(store, "t", 20)
    stale = member(store, "G", "t", max_poll_interval_ms=200, heartbeat_interval_ms=20)
    assert len(stale.poll(1.0, max_records=10)) == 10
    stale_id = stale.member_id
    wait_until(lambda: stale_id not in group(store, "G").members, "the stale member to be removed")
    newer = member(store, "G", "t")
    driver = Driver([newer], commit=True)
    driver.drain_until_count(0, 20)
    assert newer.committed(T0).offset == 20
    with pytest.raises(CommitFailedError):
        stale.commit({T0: 10})
    with pytest.raises(CommitFailedError):
        stale.commit()
    assert newer.committed(T0).offset == 20


def test_commit_from_a_stale_generation_is_refused(store: logstore.Store) -> None:
    store.create_topic("t", partitions=3)
    fill(store, "t", 10)
    old, mid = member(store, "G", "t"), member(store, "G", "t")
    driver = Driver([old, mid])
    driver.settle(store, "G", partitions("t", 3))
    driver.run_until(lambda: len(set(positions(driver.received[0] + driver.received[1]))) == 30, "every record")
    generation = old.generation
    # a third member joins; the first rejoins at once, the second completes the round: the
    # group moves to a new generation while the first, not having polled since, holds the old one
    newcomer = member(store, "G", "t")
    newcomer.poll(0)
    old.poll(0)
    assert group(store, "G").state == "PreparingRebalance"
    mid.poll(0)
    assert group(store, "G").generation > old.generation == generation
    owned = old.assignment()
    assert owned
    with pytest.raises(CommitFailedError):
        old.commit({tp: 5 for tp in owned})
    with pytest.raises(CommitFailedError):
        old.commit()
    assert set(old.committed(partitions("t", 3)).values()) == {None}
    driver.add(newcomer)
    driver.settle(store, "G", partitions("t", 3))
    old.commit()  # once it has caught up, its commits are taken again
    assert {tp: old.committed(tp).offset for tp in old.assignment()} == {tp: 10 for tp in old.assignment()}


def test_lost_partitions_are_not_returned_after_the_loss(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    fill(store, "t", 50)  # one batch per record, but the consumer reads several batches per fetch
    listener = RecordingListener()
    slow = member(store, "G", "t", listener=listener, max_poll_interval_ms=200, heartbeat_interval_ms=20)
    assert positions(slow.poll(1.0, max_records=3)) == [("t", 0, o) for o in range(3)]
    slow_id = slow.member_id
    wait_until(lambda: slow_id not in group(store, "G").members, "the slow member to be removed")
    newer = member(store, "G", "t")
    newer_records = newer.poll(1.0)
    assert newer_records and newer.assignment() == {T0}
    assert slow.poll(0) == []  # the loss comes first: the buffered records of T0 are gone with it
    assert listener.events[-1] == ("lost", frozenset({T0}))
    assert slow.assignment() == set()


def test_commit_of_an_unowned_partition_is_refused(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, "t", 10)
    c1, c2 = member(store, "G", "t"), member(store, "G", "t")
    driver = Driver([c1, c2])
    driver.settle(store, "G", partitions("t", 2))
    (mine,) = c1.assignment()
    (theirs,) = c2.assignment()
    with pytest.raises(CommitFailedError):
        c1.commit({theirs: 3})
    with pytest.raises(CommitFailedError):  # all or nothing: the owned partition is not stored either
        c1.commit({mine: 4, theirs: 3})
    with pytest.raises(CommitFailedError):
        c1.commit({TopicPartition("t", 7): 1})
    assert c1.committed([mine, theirs]) == {mine: None, theirs: None}
    c1.commit({mine: 4})
    assert c1.committed(mine).offset == 4 and c2.committed(theirs) is None


def test_negative_offsets_are_refused(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    c = member(store, "G", "t")
    Driver([c]).settle(store, "G", {T0})
    for bad in (-1, OffsetAndMetadata(-5)):
        with pytest.raises(InvalidArgumentError):
            c.commit({T0: bad})
        with pytest.raises(InvalidArgumentError):
            c.commit_async({T0: bad}).result()
    assert c.committed(T0) is None
    # a manual assign() consumer of an empty group may commit, but not a negative offset either
    c.close()
    manual = store.consumer(group_id="G", enable_auto_commit=False)
    manual.assign([T0])
    with pytest.raises(InvalidArgumentError):
        manual.commit({T0: -1})
    assert manual.committed(T0) is None


# -- cooperative vs eager ---------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_revocation_on_join(store: logstore.Store, strategy: str) -> None:
    store.create_topic("t", partitions=4)
    listeners = [RecordingListener() for _ in range(3)]
    c1, c2 = (member(store, "G", "t", listener=listeners[i], partition_assignment_strategy=strategy)
              for i in range(2))
    driver = Driver([c1, c2])
    driver.settle(store, "G", partitions("t", 4))
    before = {0: c1.assignment(), 1: c2.assignment()}
    for listener in listeners:
        listener.clear()
    c3 = member(store, "G", "t", listener=listeners[2], partition_assignment_strategy=strategy)
    c3.poll(0)  # joins: the group rebalances
    assert group(store, "G").state == "PreparingRebalance"
    fill(store, "t", 1)  # one new record on every partition
    during = c1.poll(0.05)  # c1 rejoins; the round waits for c2
    assert group(store, "G").state == "PreparingRebalance"
    driver.add(c3)
    driver.settle(store, "G", partitions("t", 4))
    after = {0: c1.assignment(), 1: c2.assignment()}
    moved = {i: before[i] - after[i] for i in (0, 1)}
    if strategy == "cooperative-sticky":
        # sticky: the newcomer's partition comes from one of the others, nothing else moves
        assert moved[0] | moved[1] == c3.assignment() and len(c3.assignment()) == 1
        assert after[0] <= before[0] and after[1] <= before[1]
        # only what moved is revoked; what stays keeps flowing during the rebalance
        for i in (0, 1):
            assert listeners[i].union("revoked") == moved[i]
            assert listeners[i].union("assigned") == set()
        assert {TopicPartition(r.topic, r.partition) for r in during} == before[0]
    else:
        # eager: everything is revoked before rejoining, nothing flows until the new assignment
        for i in (0, 1):
            assert listeners[i].union("revoked") == before[i]
            assert listeners[i].union("assigned") == after[i]
        assert during == []
    assert "lost" not in listeners[0].kinds() + listeners[1].kinds()
    assert listeners[2].union("assigned") == c3.assignment()


@pytest.mark.parametrize("handover", ["commit in on_partitions_revoked", "auto-commit"])
@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_revoked_partitions_are_handed_over_exactly(store: logstore.Store, strategy: str, handover: str) -> None:
    """The member losing partitions commits its positions as it revokes them (from the listener,
    as Kafka's documentation shows, or by auto-commit): the new owner starts exactly there."""
    store.create_topic("t", partitions=4)
    fill(store, "t", 30)
    processed: list[list[tuple[str, int, int]]] = [[], []]
    handed_over: dict[TopicPartition, int] = {}
    auto = handover == "auto-commit"

    class CommitOnRevoke(RecordingListener):
        consumer: logstore.Consumer

        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            super().on_partitions_revoked(revoked)
            done = {tp: self.consumer.position(tp) for tp in revoked}  # still ours: positions known
            if not auto:
                self.consumer.commit({tp: offset for tp, offset in done.items()})
            handed_over.update(done)

    listener = CommitOnRevoke()
    # auto-commit: an interval so long that only the commit before revoking can happen
    first = member(store, "G", "t", listener=listener, partition_assignment_strategy=strategy,
                   max_poll_records=7, enable_auto_commit=auto, auto_commit_interval_ms=600_000)
    listener.consumer = first
    while len(processed[0]) < 40:  # part of the records, never committed outside the hand-over
        processed[0].extend(positions(first.poll(0.5)))
    second = member(store, "G", "t", partition_assignment_strategy=strategy, max_poll_records=7)
    driver = Driver([first, second])
    driver.settle(store, "G", partitions("t", 4))
    moved = second.assignment()
    assert listener.union("revoked") >= moved and moved
    assert {tp: first.committed(tp).offset for tp in moved} == {tp: handed_over[tp] for tp in moved}
    driver.run_until(lambda: len(processed[0]) + len(driver.received[0]) + len(driver.received[1]) >= 120,
                     "every record to be read")
    driver.poll_round(0.02)
    processed[0].extend(positions(driver.received[0]))
    processed[1].extend(positions(driver.received[1]))
    # every record of a moved partition was read exactly once: by the first member up to the
    # offset committed on revocation, by the second from there on
    for tp in moved:
        by_first = [o for t, p, o in processed[0] if (t, p) == tp]
        by_second = [o for t, p, o in processed[1] if (t, p) == tp]
        assert by_first == list(range(handed_over[tp]))
        assert by_second == list(range(handed_over[tp], 30))
    assert Counter(processed[0] + processed[1]) == Counter({("t", p, o): 1 for p in range(4) for o in range(30)})


def test_commit_in_on_partitions_revoked_at_close(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, "t", 10)
    saved: dict[TopicPartition, int] = {}

    class CommitOnRevoke(ConsumerRebalanceListener):
        consumer: logstore.Consumer

        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            saved.update({tp: self.consumer.position(tp) for tp in revoked})
            self.consumer.commit()

    listener = CommitOnRevoke()
    c = member(store, "G", "t", listener=listener)
    listener.consumer = c
    Driver([c]).drain_until_count(0, 20)
    c.close()
    assert saved == {T0: 10, T1: 10}
    found = store._group_coordinator().committed("G", [T0, T1])
    assert {tp: om.offset if om is not None else None for tp, om in found.items()} == {T0: 10, T1: 10}
    assert "G" not in store._group_coordinator()._groups or not group(store, "G").members  # it left


def test_a_listener_failing_at_close_still_leaves_the_group(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)

    class FailingOnClose(ConsumerRebalanceListener):
        closing = False

        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            if self.closing:
                raise RuntimeError("the application's revocation handler failed")

    listener = FailingOnClose()
    failing = member(store, "G", "t", listener=listener)
    other = member(store, "G", "t")
    Driver([failing, other]).settle(store, "G", partitions("t", 2))
    listener.closing = True
    try:
        failing.close()
    except RuntimeError:
        pass  # reporting the listener's error is fine (Kafka's close() does), as long as it closes and leaves
    assert failing.closed
    # ... but the member left: the other gets its partitions now, not after a session timeout
    assert len(group(store, "G").members) == 1
    Driver([other]).settle(store, "G", partitions("t", 2), timeout=5.0)


# -- static membership ------------------------------------------------------------------------------

def test_static_member_restart_within_session_keeps_its_partitions(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    fill(store, "t", 10)
    other_listener = RecordingListener()
    static = member(store, "G", "t", group_instance_id="i-1", enable_auto_commit=True)
    other = member(store, "G", "t", listener=other_listener)
    driver = Driver([static, other])
    driver.settle(store, "G", partitions("t", 4))
    driver.run_until(lambda: sum(map(len, driver.received)) == 40, "every record")
    generation = group(store, "G").generation
    owned = static.assignment()
    other_listener.clear()
    static.close()  # commits (auto-commit) but does not leave
    assert group(store, "G").generation == generation and len(group(store, "G").members) == 2
    restarted = member(store, "G", "t", group_instance_id="i-1")
    again = Driver([restarted, other])
    again.settle(store, "G", partitions("t", 4))
    assert restarted.assignment() == owned
    assert group(store, "G").generation == generation == restarted.generation == other.generation
    assert other_listener.events == []  # no rebalance reached the other member
    fill(store, "t", 2, start=10)
    again.run_until(lambda: sum(map(len, again.received)) == 8, "the new records")
    assert {(r.partition, r.offset) for r in again.received[0]} == {(tp.partition, o) for tp in owned
                                                                     for o in (10, 11)}


def test_duplicate_static_instance_fences_the_older(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    listener = RecordingListener()
    older = member(store, "G", "t", group_instance_id="i-1", listener=listener)
    other = member(store, "G", "t")
    Driver([older, other]).settle(store, "G", partitions("t", 2))
    owned = older.assignment()
    generation = group(store, "G").generation
    newer = member(store, "G", "t", group_instance_id="i-1")
    newer.poll(0)
    assert newer.assignment() == owned and group(store, "G").generation == generation
    with pytest.raises(FencedInstanceIdError):
        older.poll(0)
    assert listener.events[-1] == ("lost", frozenset(owned))
    with pytest.raises(CommitFailedError):
        older.commit({tp: 0 for tp in owned})
    assert all(newer.committed(tp) is None for tp in owned)
    Driver([newer, other]).settle(store, "G", partitions("t", 2))
    assert group(store, "G").generation == generation


def test_static_member_gone_past_its_session_is_rebalanced_away(store: logstore.Store) -> None:
    store.create_topic("t", partitions=4)
    static = member(store, "G", "t", group_instance_id="i-1", **FAST_DEATH)
    other = member(store, "G", "t", **FAST_DEATH)
    driver = Driver([static, other])
    driver.settle(store, "G", partitions("t", 4))
    generation = group(store, "G").generation
    static.close()
    only_other = Driver([other])
    only_other.settle(store, "G", partitions("t", 4))
    assert other.assignment() == partitions("t", 4)
    assert group(store, "G").generation > generation
    assert "i-1" not in group(store, "G").instances


def test_static_assignment_survives_a_store_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = logstore.open(path, cleaner=False)
    store.create_topic("t", partitions=4)
    members = [member(store, "G", "t", group_instance_id=f"i-{i}") for i in range(2)]
    Driver(members).settle(store, "G", partitions("t", 4))
    owned = [c.assignment() for c in members]
    generation = group(store, "G").generation
    store.close()
    store = logstore.open(path, cleaner=False)
    try:
        restarted = [member(store, "G", "t", group_instance_id=f"i-{i}") for i in range(2)]
        Driver(restarted).settle(store, "G", partitions("t", 4))
        assert [c.assignment() for c in restarted] == owned
        assert group(store, "G").generation == generation
    finally:
        store.close()


def test_static_member_that_does_not_return_after_a_reopen_is_rebalanced_away(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = logstore.open(path, cleaner=False)
    store.create_topic("t", partitions=4)
    members = [member(store, "G", "t", group_instance_id=f"i-{i}", **FAST_DEATH) for i in range(2)]
    Driver(members).settle(store, "G", partitions("t", 4))
    owned = members[0].assignment()
    store.close()
    store = logstore.open(path, cleaner=False)
    try:
        back = member(store, "G", "t", group_instance_id="i-0", **FAST_DEATH)
        driver = Driver([back])
        driver.run_until(lambda: back.assignment() == owned, "the returning member's partitions")
        driver.settle(store, "G", partitions("t", 4))  # i-1's session expires: all go to i-0
        assert set(group(store, "G").instances) == {"i-0"}
    finally:
        store.close()


# -- committed offsets ------------------------------------------------------------------------------

def test_committed_offsets_survive_a_store_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = logstore.open(path, cleaner=False)
    store.create_topic("t", partitions=2)
    fill(store, "t", 20)
    c = member(store, "G", "t", max_poll_records=5)
    read: list[Any] = []
    while len(read) < 13:  # both partitions, in turns of up to 5
        read.extend(c.poll(0.5, max_records=min(5, 13 - len(read))))
    c.commit()
    committed = {tp: c.committed(tp) for tp in (T0, T1)}
    c.commit({T1: OffsetAndMetadata(committed[T1].offset, "note")})
    store.close()
    store = logstore.open(path, cleaner=False)
    try:
        again = member(store, "G", "t")
        after = again.committed([T0, T1])
        assert {tp: om.offset for tp, om in after.items()} == {tp: om.offset for tp, om in committed.items()}
        assert after[T1].metadata == "note"
        driver = Driver([again])
        driver.run_until(lambda: len(driver.received[0]) >= 40 - 13, "the rest of the records")
        driver.poll_round(0.02)
        assert sorted(positions(driver.received[0])) == sorted(
            {("t", tp.partition, o) for tp in (T0, T1) for o in range(committed[tp].offset, 20)})
        assert sorted(positions(read + driver.received[0])) == [("t", p, o) for p in (0, 1) for o in range(20)]
    finally:
        store.close()


def test_auto_offset_reset_only_without_a_committed_offset(store: logstore.Store) -> None:
    store.create_topic("t", partitions=2)
    fill(store, "t", 10)
    setter = store.consumer(group_id="G", enable_auto_commit=False)
    setter.assign([T0])
    setter.commit({T0: 4})  # T1 has no committed offset
    setter.close()
    latest = member(store, "G", "t", auto_offset_reset="latest")
    driver = Driver([latest])
    driver.settle(store, "G", partitions("t", 2))
    driver.run_until(lambda: len(driver.received[0]) >= 6, "T0 from its committed offset")
    driver.poll_round(0.02)
    assert positions(driver.received[0]) == [("t", 0, o) for o in range(4, 10)]  # T1 from its end
    assert latest.position(T1) == 10
    latest.commit()
    latest.close()
    strict = member(store, "G", "t", auto_offset_reset="none")  # every partition has a committed offset
    fill(store, "t", 1, start=10)
    driver = Driver([strict])
    driver.run_until(lambda: len(driver.received[0]) == 2, "the new records")
    assert sorted(positions(driver.received[0])) == [("t", 0, 10), ("t", 1, 10)]
    strict.close()
    with pytest.raises(NoOffsetForPartitionError):
        member(store, "other", "t", auto_offset_reset="none").poll(0.5)


def test_auto_commit_within_its_interval_and_on_close(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    fill(store, "t", 10)
    ticking = member(store, "G", "t", enable_auto_commit=True, auto_commit_interval_ms=100)
    driver = Driver([ticking])
    driver.drain_until_count(0, 10)
    driver.run_until(lambda: ticking.committed(T0) is not None and ticking.committed(T0).offset == 10,
                     "the auto-commit", timeout=5.0)
    ticking.close()
    fill(store, "t", 5, start=10)
    # a long interval: nothing is committed while polling, the close commits
    closing = member(store, "G2", "t", enable_auto_commit=True, auto_commit_interval_ms=60_000)
    driver = Driver([closing])
    driver.drain_until_count(0, 15)
    assert closing.committed(T0) is None
    closing.close()
    on_close = store._group_coordinator().committed("G2", [T0])[T0]
    assert on_close is not None and on_close.offset == 15


def test_commit_async_and_metadata(store: logstore.Store) -> None:
    store.create_topic("t", partitions=1)
    fill(store, "t", 5)
    c = member(store, "G", "t")
    Driver([c]).drain_until_count(0, 5)
    seen: list[tuple[dict[TopicPartition, OffsetAndMetadata], BaseException | None]] = []
    future = c.commit_async({T0: OffsetAndMetadata(3, "three")}, callback=lambda o, e: seen.append((o, e)))
    assert future.result() == {T0: OffsetAndMetadata(3, "three")}
    assert seen == [({T0: OffsetAndMetadata(3, "three")}, None)]
    assert c.committed(T0)[:2] == (3, "three")
    refused = c.commit_async({TopicPartition("t", 5): 1}, callback=lambda o, e: seen.append((o, e)))
    with pytest.raises(CommitFailedError):
        refused.result()
    assert isinstance(seen[-1][1], CommitFailedError)
    assert c.committed(T0)[:2] == (3, "three")


# -- many threads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_eight_consumer_threads_with_members_joining_leaving_and_dying(store: logstore.Store, strategy: str) -> None:
    """Four members, four more join midway, one leaves and one dies while a producer thread
    writes keyed records: every record is processed at least once, the committed offsets cover
    everything, and no partition ever has two owners (a listener hands ownership over: a
    partition is assigned only once its previous owner revoked it or died)."""
    count, total = 16, 3000
    store.create_topic("t", partitions=count)
    lock = threading.Lock()
    processed: Counter[tuple[int, int]] = Counter()
    produced: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    violations: list[str] = []
    holder: dict[TopicPartition, int] = {}
    stops = [threading.Event() for _ in range(8)]
    leaver, dier = 0, 5

    def produce() -> None:
        try:
            producer = store.producer()
            for i in range(total):
                meta = producer.send("t", b"v%d" % i, key=b"key-%d" % (i % 97))
                produced.append((meta.partition, meta.offset))
                if i % 100 == 0:
                    time.sleep(0.005)  # spread the records over the membership changes
            producer.close()
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)

    class Ownership(ConsumerRebalanceListener):
        def __init__(self, me: int) -> None:
            self.me = me

        def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            with lock:
                for tp in assigned:
                    if holder.get(tp, self.me) != self.me:
                        violations.append(f"{tp} assigned to {self.me} while {holder[tp]} owns it")
                    holder[tp] = self.me

        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            self.release(revoked)

        def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
            self.release(lost)

        def release(self, tps: set[TopicPartition] | None = None) -> None:
            """Give up ``tps`` (None: everything this member holds)."""
            with lock:
                for tp in [tp for tp, owner in holder.items() if owner == self.me and (tps is None or tp in tps)]:
                    del holder[tp]

    def consume(me: int) -> None:
        try:
            listener = Ownership(me)
            timeouts = {"session_timeout_ms": 1_000, "heartbeat_interval_ms": 100} if me == dier else QUIET
            c = store.consumer("t", group_id="G", auto_offset_reset="earliest", enable_auto_commit=False,
                               max_poll_records=50, listener=listener, partition_assignment_strategy=strategy,
                               **timeouts)
            pending = False
            while not stops[me].is_set():
                records = c.poll(0.02)
                with lock:
                    for r in records:
                        tp = TopicPartition(r.topic, r.partition)
                        if holder.get(tp) != me:
                            violations.append(f"{me} returned a record of {tp}, owned by {holder.get(tp)}")
                    processed.update((r.partition, r.offset) for r in records)
                if records or pending:
                    try:
                        c.commit()  # after processing: at least once
                        pending = False
                    except CommitFailedError:
                        pending = True  # a rebalance moved on: commit what is still ours next time
            if me == dier:
                c._abandon()  # processed but uncommitted records go to the next owner again
                listener.release()  # it fetches nothing more: its partitions are free
            else:
                c.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
    producer = threading.Thread(target=produce)
    for t in threads[:4]:
        t.start()
    producer.start()
    wait_until(lambda: len(produced) > total // 4 or bool(errors), "the producer to get going")
    for t in threads[4:]:
        t.start()  # four members join midway
    wait_until(lambda: len(produced) > total // 2 or bool(errors), "the producer to pass half way")
    for i in (leaver, dier):
        stops[i].set()  # one leaves, one dies
        threads[i].join(10)
    producer.join(20)
    assert not errors, errors
    coordinator = store._group_coordinator()
    every = partitions("t", count)

    def covered() -> bool:
        committed = coordinator.committed("G", every)
        return all(om is not None and om.offset == store.end_offset(tp) for tp, om in committed.items())

    try:
        wait_until(lambda: (set(processed) >= set(produced) and covered() and len(group(store, "G").members) == 6)
                   or bool(errors), "every record processed and committed", timeout=20.0)
        assert not errors, errors
        owned = [tp for m in group(store, "G").members.values() for tp in m.assignment]
        assert len(owned) == len(set(owned)) and set(owned) == every
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert not violations, violations[:5]
    assert len(produced) == total and set(processed) == set(produced)
