"""Partition assignors: range and roundrobin against Kafka's tables and simple models; sticky for
balance (no cost-reducing path, checked by brute force) and stickiness (exact minimum of moves with
identical subscriptions); cooperative-sticky simulated over rounds (never two owners in consecutive
generations, settles in at most two rounds); and the helpers that pick, resolve and check assignors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings, strategies as st

from logstore.broker.types import TopicPartition as TP
from logstore.errors import ConfigError, InvalidArgumentError
from logstore.groups.assignors import (
    CooperativeStickyAssignor,
    MemberMetadata,
    PartitionAssignor,
    RangeAssignor,
    RoundRobinAssignor,
    StickyAssignor,
    check_assignment,
    resolve_assignors,
    select_assignor,
    unassigned,
)

Members = dict[str, MemberMetadata]
Assignment = dict[str, list[TP]]

EAGER = [RangeAssignor(), RoundRobinAssignor(), StickyAssignor()]
ALL = [*EAGER, CooperativeStickyAssignor()]
PROPERTY = settings(max_examples=100, deadline=None)


def member(member_id: str, topics: tuple[str, ...] | list[str], owned: tuple[TP, ...] | list[TP] = (),
           generation: int = -1, instance: str | None = None) -> MemberMetadata:
    return MemberMetadata(member_id, instance, tuple(topics), tuple(owned), generation)


def group(subscriptions: Mapping[str, tuple[str, ...] | list[str]]) -> Members:
    return {m: member(m, topics) for m, topics in subscriptions.items()}


def owning(claims: Mapping[str, tuple[list[str], list[str]]], generation: int = 1) -> Members:
    """Members from {member: (topics, ["topic-partition", ...] owned)}."""
    return {m: member(m, topics, [TP(name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1])) for name in names],
                      generation) for m, (topics, names) in claims.items()}


def fed_back(members: Members, assignment: Assignment, generation: int) -> Members:
    """The members as they rejoin after ``assignment``: owning it, in ``generation``."""
    return {m: meta._replace(owned_partitions=tuple(assignment[m]), generation=generation)
            for m, meta in members.items()}


def owner_map(assignment: Assignment) -> dict[TP, str]:
    owners: dict[TP, str] = {}
    for m, tps in assignment.items():
        for tp in tps:
            assert tp not in owners, f"{tp} assigned to {owners[tp]} and {m}"
            owners[tp] = m
    return owners


def all_partitions(members: Members, ppt: Mapping[str, int]) -> set[TP]:
    """Every partition of a topic some member subscribes to (and that exists)."""
    topics = {t for meta in members.values() for t in meta.topics if t in ppt}
    return {TP(t, p) for t in topics for p in range(ppt[t])}


def assert_valid(members: Members, ppt: Mapping[str, int], assignment: Assignment, complete: bool = True) -> None:
    """An independent model of a valid answer: an entry per member, each partition existing, at most
    once, to a subscriber; with ``complete`` every subscribed partition is assigned."""
    assert set(assignment) == set(members)
    owners = owner_map(assignment)
    for tp, m in owners.items():
        assert tp.topic in members[m].topics and 0 <= tp.partition < ppt[tp.topic], (tp, m)
    if complete:
        assert set(owners) == all_partitions(members, ppt)


def counts(assignment: Assignment) -> dict[str, int]:
    return {m: len(tps) for m, tps in assignment.items()}


def assert_no_cost_reducing_path(members: Members, assignment: Assignment) -> None:
    """Brute force over partitions: no chain of hand-overs (each partition to a subscriber of its
    topic) leads from a member to one with two or more fewer partitions. With identical subscriptions
    this is "counts differ by at most one"; in general it is the most even spread possible."""
    load = counts(assignment)
    for heavy in members:
        reached = {heavy}
        stack = [heavy]
        while stack:
            giver = stack.pop()
            for tp in assignment[giver]:
                for receiver, meta in members.items():
                    if receiver not in reached and tp.topic in meta.topics:
                        reached.add(receiver)
                        stack.append(receiver)
        for light in reached:
            assert load[light] >= load[heavy] - 1, (f"{heavy} ({load[heavy]}) can hand a partition along to "
                                                    f"{light} ({load[light]}): {assignment}")


def current_owners(members: Members, ppt: Mapping[str, int]) -> dict[TP, set[str]]:
    """The model of ownership: the claimants of the highest generation (of partitions that exist)."""
    best: dict[TP, tuple[int, set[str]]] = {}
    for m, meta in members.items():
        for tp in meta.owned_partitions:
            if tp.topic not in ppt or not 0 <= tp.partition < ppt[tp.topic]:
                continue
            generation, claimants = best.get(tp, (-2, set()))
            if meta.generation > generation:
                best[tp] = (meta.generation, {m})
            elif meta.generation == generation:
                claimants.add(m)
    return {tp: claimants for tp, (_, claimants) in best.items()}


def member_order(members: Members) -> list[str]:
    """Kafka's order: static members by instance id first, then dynamic ones by member id."""
    static = sorted((meta.group_instance_id, m) for m, meta in members.items() if meta.group_instance_id is not None)
    return [m for _, m in static] + sorted(m for m, meta in members.items() if meta.group_instance_id is None)


# -- strategies ---------------------------------------------------------------------------------


@st.composite
def groups(draw: st.DrawFn, identical: bool = False, owned: str = "random", max_members: int = 6,
           max_topics: int = 3, max_partitions: int = 9) -> tuple[Members, dict[str, int]]:
    """A group and its topics. ``owned``: "none"; "random" (any claims, overlapping, any
    generation, also of topics a member does not subscribe to or that do not exist); "exclusive"
    (each partition claimed by at most one member, all in one generation)."""
    topics = [f"t{i}" for i in range(draw(st.integers(1, max_topics)))]
    ppt = {t: draw(st.integers(1, max_partitions)) for t in topics}
    member_ids = draw(st.lists(st.integers(0, 99).map(lambda k: f"member-{k:02d}"), min_size=1,
                               max_size=max_members, unique=True))
    instance_ids = iter(draw(st.permutations([f"instance-{k}" for k in range(len(member_ids))])))
    claimable = [TP(t, p) for t, n in ppt.items() for p in range(n + 1)] + [TP("gone", 0)]  # +1: out of range
    # exclusive claims: often skewed towards one member, as after members leave or join
    owner_choices = [None, *member_ids] + [member_ids[-1]] * draw(st.integers(0, 2 * len(member_ids)))
    exclusive_owner = {tp: draw(st.sampled_from(owner_choices)) for tp in claimable} if owned == "exclusive" else {}
    members: Members = {}
    for m in member_ids:
        subscription = topics if identical else draw(st.lists(st.sampled_from(topics), min_size=1, unique=True))
        if not identical and draw(st.booleans()):
            subscription = [*subscription, "not-created"]  # subscribed, but the topic does not exist
        instance = next(instance_ids) if draw(st.booleans()) else None
        if owned == "random":
            claims = draw(st.lists(st.sampled_from(claimable), unique=True, max_size=12))
            generation = draw(st.integers(-1, 3))
        elif owned == "exclusive":
            claims = [tp for tp, owner in exclusive_owner.items() if owner == m]
            generation = 5
        else:
            claims, generation = [], -1
        members[m] = member(m, subscription, claims, generation, instance)
    return members, ppt


def shuffled(members: Members) -> Members:
    """The same group, members and owned partitions listed in reverse order."""
    return {m: meta._replace(owned_partitions=tuple(reversed(meta.owned_partitions)))
            for m, meta in reversed(list(members.items()))}


# -- every assignor -----------------------------------------------------------------------------


@pytest.mark.parametrize("assignor", EAGER, ids=lambda a: a.name)
@PROPERTY
@given(case=groups())
def test_eager_assignors_assign_every_partition_once_to_a_subscriber(assignor: PartitionAssignor,
                                                                     case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assignment = assignor.assign(members, ppt)
    assert_valid(members, ppt, assignment)
    check_assignment(members, ppt, assignment)
    assert unassigned(members, ppt, assignment) == set()
    assert assignor.assign(shuffled(members), ppt) == assignment  # deterministic, whatever the order


@PROPERTY
@given(case=groups())
def test_cooperative_holds_back_exactly_the_partitions_changing_owner(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assignment = CooperativeStickyAssignor().assign(members, ppt)
    target = StickyAssignor().assign(members, ppt)
    assert_valid(members, ppt, assignment, complete=False)
    check_assignment(members, ppt, assignment)
    owners = current_owners(members, ppt)
    changing = {tp for m, tps in target.items() for tp in tps if tp in owners and owners[tp] != {m}}
    assert unassigned(members, ppt, assignment) == changing
    assert assignment == {m: [tp for tp in tps if tp not in changing] for m, tps in target.items()}
    assert CooperativeStickyAssignor().assign(shuffled(members), ppt) == assignment


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
def test_consumers_and_partitions_equal_one_each(assignor: PartitionAssignor) -> None:
    members = group({f"c{i}": ["t"] for i in range(5)})
    assignment = assignor.assign(members, {"t": 5})
    assert sorted(len(tps) for tps in assignment.values()) == [1] * 5
    assert_valid(members, {"t": 5}, assignment)


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
def test_fewer_consumers_than_partitions_balanced(assignor: PartitionAssignor) -> None:
    members = group({f"c{i}": ["t"] for i in range(3)})
    assignment = assignor.assign(members, {"t": 11})
    assert sorted(len(tps) for tps in assignment.values()) == [3, 4, 4]
    assert_valid(members, {"t": 11}, assignment)


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
def test_more_consumers_than_partitions_extras_get_nothing(assignor: PartitionAssignor) -> None:
    members = group({f"c{i}": ["t"] for i in range(5)})
    assignment = assignor.assign(members, {"t": 2})
    assert sorted(len(tps) for tps in assignment.values()) == [0, 0, 0, 1, 1]
    assert_valid(members, {"t": 2}, assignment)


@pytest.mark.parametrize("assignor", ALL, ids=lambda a: a.name)
def test_no_partitions_or_no_subscribed_topic_that_exists(assignor: PartitionAssignor) -> None:
    assert assignor.assign(group({"c": ["t"]}), {}) == {"c": []}
    assert assignor.assign(group({"c": ["missing"], "d": ["t"]}), {"t": 1}) == {"c": [], "d": [TP("t", 0)]}
    assert assignor.assign({}, {"t": 3}) == {}


# -- range and roundrobin: Kafka's tables -------------------------------------------------------

T1 = [TP("t1", p) for p in range(3)]
T2 = [TP("t2", p) for p in range(3)]

KAFKA_TABLES = [
    # (subscriptions, partitions per topic, range answer, roundrobin answer)
    ({"c": ["t1"]}, {"t1": 3}, {"c": T1}, {"c": T1}),
    ({"c": ["t1"]}, {"t1": 3, "other": 3}, {"c": T1}, {"c": T1}),  # only subscribed topics
    ({"c": ["t1", "t2"]}, {"t1": 1, "t2": 2}, {"c": [T1[0], *T2[:2]]}, {"c": [T1[0], *T2[:2]]}),
    ({"c1": ["t1"], "c2": ["t1"]}, {"t1": 1}, {"c1": [T1[0]], "c2": []}, {"c1": [T1[0]], "c2": []}),
    ({"c1": ["t1"], "c2": ["t1"]}, {"t1": 2}, {"c1": [T1[0]], "c2": [T1[1]]}, {"c1": [T1[0]], "c2": [T1[1]]}),
    ({"c1": ["t1"], "c2": ["t1", "t2"], "c3": ["t1"]}, {"t1": 3, "t2": 2},
     {"c1": [T1[0]], "c2": [T1[1], T2[0], T2[1]], "c3": [T1[2]]},
     {"c1": [T1[0]], "c2": [T1[1], T2[0], T2[1]], "c3": [T1[2]]}),
    ({"c1": ["t1", "t2"], "c2": ["t1", "t2"]}, {"t1": 3, "t2": 3},
     {"c1": [T1[0], T1[1], T2[0], T2[1]], "c2": [T1[2], T2[2]]},
     {"c1": [T1[0], T1[2], T2[1]], "c2": [T1[1], T2[0], T2[2]]}),
]


@pytest.mark.parametrize("subscriptions, ppt, expected_range, expected_roundrobin", KAFKA_TABLES)
def test_range_and_roundrobin_match_kafka(subscriptions: dict[str, list[str]], ppt: dict[str, int],
                                          expected_range: Assignment, expected_roundrobin: Assignment) -> None:
    members = group(subscriptions)
    assert RangeAssignor().assign(members, ppt) == expected_range
    assert RoundRobinAssignor().assign(members, ppt) == expected_roundrobin


@PROPERTY
@given(case=groups(owned="none"))
def test_range_gives_each_subscriber_a_contiguous_range_in_member_order(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assignment = RangeAssignor().assign(members, ppt)
    order = member_order(members)
    for topic, count in ppt.items():
        subscribers = [m for m in order if topic in members[m].topics]
        if not subscribers:
            continue
        ranges = [[tp.partition for tp in assignment[m] if tp.topic == topic] for m in subscribers]
        assert [p for r in ranges for p in r] == list(range(count))  # contiguous, in member order
        sizes = [len(r) for r in ranges]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1


@PROPERTY
@given(case=groups(identical=True, owned="none"))
def test_roundrobin_deals_the_sorted_partitions_in_member_order(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assignment = RoundRobinAssignor().assign(members, ppt)
    order = member_order(members)
    ordered = sorted(TP(t, p) for t, n in ppt.items() for p in range(n))
    assert owner_map(assignment) == {tp: order[i % len(order)] for i, tp in enumerate(ordered)}


@pytest.mark.parametrize("assignor", [RangeAssignor(), RoundRobinAssignor()], ids=lambda a: a.name)
def test_static_members_keep_their_partitions_across_new_member_ids(assignor: PartitionAssignor) -> None:
    ppt = {"t1": 5, "t2": 3}

    def static_group(member_ids: list[str]) -> Members:
        # instance ids sort the other way round from these member ids; one dynamic member too
        instances = ["i-a", "i-b", "i-c"]
        members = {m: member(m, ["t1", "t2"], instance=i) for m, i in zip(member_ids, instances)}
        members["dynamic"] = member("dynamic", ["t1", "t2"])
        return members

    first = assignor.assign(static_group(["z1", "y1", "x1"]), ppt)
    second = assignor.assign(static_group(["a2", "b2", "c2"]), ppt)  # all restarted with new member ids
    by_instance_first = {i: first[m] for m, i in zip(["z1", "y1", "x1"], ["i-a", "i-b", "i-c"])}
    by_instance_second = {i: second[m] for m, i in zip(["a2", "b2", "c2"], ["i-a", "i-b", "i-c"])}
    assert by_instance_first == by_instance_second
    assert first["dynamic"] == second["dynamic"]
    assert TP("t1", 0) in by_instance_first["i-a"]  # static members come first, by instance id


# -- sticky -------------------------------------------------------------------------------------


@PROPERTY
@given(case=groups())
def test_sticky_is_balanced(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assert_no_cost_reducing_path(members, StickyAssignor().assign(members, ppt))


@PROPERTY
@given(case=groups(identical=True))
def test_sticky_with_identical_subscriptions_counts_differ_by_at_most_one(
        case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    sizes = counts(StickyAssignor().assign(members, ppt)).values()
    assert max(sizes) - min(sizes) <= 1


def minimum_moves(members: Members, ppt: Mapping[str, int]) -> int:
    """The fewest validly owned partitions any balanced assignment moves, all subscriptions being
    the same: members get q or q + 1 partitions (e of them q + 1), and a member owning more than q
    keeps one more if it gets one of the e larger shares."""
    owners = current_owners(members, ppt)
    owned = {m: 0 for m in members}
    for tp, claimants in owners.items():
        (m,) = claimants
        if tp.topic in members[m].topics:
            owned[m] += 1
    q, e = divmod(len(all_partitions(members, ppt)), len(members))
    kept = sum(min(n, q) for n in owned.values()) + min(e, sum(1 for n in owned.values() if n > q))
    return sum(owned.values()) - kept


def moved(members: Members, ppt: Mapping[str, int], assignment: Assignment) -> int:
    owners = owner_map(assignment)
    return sum(1 for tp, claimants in current_owners(members, ppt).items()
               if len(claimants) == 1 and tp in owners and owners[tp] not in claimants)


ALL_FOUR = ["t0", "t1", "t2", "t3"]


@PROPERTY
@given(case=groups(identical=True, owned="exclusive"))
@example(case=(owning({"m0": (ALL_FOUR, ["t2-0", "t2-1", "t3-0", "t3-3"]), "m1": (ALL_FOUR, ["t3-2"]),
                       "m2": (ALL_FOUR, ["t2-2"]), "m3": (ALL_FOUR, ["t0-0", "t0-2", "t1-0", "t3-1"]),
                       "m4": (ALL_FOUR, [])}), {"t0": 4, "t1": 1, "t2": 3, "t3": 4}))
@example(case=(owning({"m0": (ALL_FOUR, ["t0-0", "t0-1", "t0-3", "t2-0", "t2-1"]), "m1": (ALL_FOUR, ["t1-2", "t2-2"]),
                       "m2": (ALL_FOUR, []), "m3": (ALL_FOUR, []),
                       "m4": (ALL_FOUR, ["t0-2", "t1-1", "t1-3", "t2-3", "t2-4"]), "m5": (ALL_FOUR, ["t3-0"])}),
               {"t0": 4, "t1": 4, "t2": 5, "t3": 1}))
def test_sticky_moves_the_fewest_partitions_balance_allows(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    assignment = StickyAssignor().assign(members, ppt)
    assert moved(members, ppt, assignment) == minimum_moves(members, ppt)


@PROPERTY
@given(case=groups(owned="none"))
def test_sticky_feeding_its_answer_back_changes_nothing(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    first = StickyAssignor().assign(members, ppt)
    assert StickyAssignor().assign(fed_back(members, first, 1), ppt) == first


@settings(max_examples=200, deadline=None)
@given(case=groups(owned="none", max_members=7, max_topics=4, max_partitions=6), data=st.data())
def test_sticky_keeps_every_owned_partition_when_a_balanced_assignment_can(case: tuple[Members, dict[str, int]],
                                                                           data: st.DataObject) -> None:
    """Owning part of a balanced assignment (the rest unowned, as in the round after a cooperative
    one held partitions back), no owned partition moves, whatever the subscriptions."""
    members, ppt = case
    balanced = StickyAssignor().assign(members, ppt)
    owned = {m: [tp for tp in tps if data.draw(st.booleans())] for m, tps in balanced.items()}
    after = StickyAssignor().assign(fed_back(members, owned, 1), ppt)
    for m in members:
        assert set(owned[m]) <= set(after[m])
    assert_no_cost_reducing_path(members, after)


def test_sticky_moves_only_unowned_partitions_along_a_chain_when_that_suffices() -> None:
    """A case where the short way to balance moves an owned partition and the long way does not."""
    members = owning({"m0": (ALL_FOUR, ["t0-4", "t2-4", "t3-0"]), "m1": (["t1"], ["t1-2"]),
                      "m2": (["t1", "t2", "t3"], ["t1-3", "t2-0"]), "m3": (ALL_FOUR, ["t0-0", "t1-1"]),
                      "m4": (["t0"], ["t0-3"])})
    ppt = {"t0": 5, "t1": 5, "t2": 5, "t3": 1}
    after = StickyAssignor().assign(members, ppt)
    assert_no_cost_reducing_path(members, after)
    for m, meta in members.items():
        assert set(meta.owned_partitions) <= set(after[m])


@PROPERTY
@given(case=groups(identical=True, owned="none", max_members=8), data=st.data())
def test_sticky_after_a_member_leaves_the_others_keep_all_theirs(case: tuple[Members, dict[str, int]],
                                                                   data: st.DataObject) -> None:
    members, ppt = case
    before = StickyAssignor().assign(members, ppt)
    leaving = data.draw(st.sampled_from(sorted(members)))
    remaining = fed_back(members, before, 1)
    del remaining[leaving]
    after = StickyAssignor().assign(remaining, ppt)
    for m in remaining:
        assert set(before[m]) <= set(after[m])
    assert_valid(remaining, ppt, after)


@PROPERTY
@given(case=groups(identical=True, owned="none", max_members=8))
def test_sticky_after_a_member_joins_only_its_share_moves(case: tuple[Members, dict[str, int]]) -> None:
    members, ppt = case
    before = StickyAssignor().assign(members, ppt)
    grown = fed_back(members, before, 1)
    grown["zz-new"] = member("zz-new", list(ppt))
    after = StickyAssignor().assign(grown, ppt)
    total = sum(ppt.values())
    assert moved(grown, ppt, after) == len(after["zz-new"]) == total // len(grown)


def test_sticky_add_member_to_three_with_twelve_partitions_moves_three() -> None:
    ppt = {"t": 12}
    members = group({"a": ["t"], "b": ["t"], "c": ["t"]})
    before = StickyAssignor().assign(members, ppt)
    assert counts(before) == {"a": 4, "b": 4, "c": 4}
    grown = fed_back(members, before, 1)
    grown["d"] = member("d", ["t"])
    after = StickyAssignor().assign(grown, ppt)
    assert counts(after) == {"a": 3, "b": 3, "c": 3, "d": 3}
    assert all(set(after[m]) <= set(before[m]) for m in "abc")


@pytest.mark.parametrize("generation_a, generation_b, keeps_p1", [(5, 4, "a"), (4, 5, "b"), (5, 5, None)])
def test_sticky_conflicting_claims_resolved_by_generation(generation_a: int, generation_b: int,
                                                          keeps_p1: str | None) -> None:
    p = [TP("t", i) for i in range(4)]
    members = {"a": member("a", ["t"], [p[0], p[1]], generation_a),
               "b": member("b", ["t"], [p[1], p[2]], generation_b)}
    assignment = StickyAssignor().assign(members, {"t": 4})
    assert_valid(members, {"t": 4}, assignment)
    assert counts(assignment) == {"a": 2, "b": 2}
    assert p[0] in assignment["a"] and p[2] in assignment["b"]  # uncontested claims stay
    if keeps_p1 is not None:
        assert p[1] in assignment[keeps_p1]
        # the cooperative round gives it to the winner at once: the loser's claim is stale
        assert p[1] in CooperativeStickyAssignor().assign(members, {"t": 4})[keeps_p1]
    else:
        # same generation: neither claim counts, and cooperative holds it back from both
        assert TP("t", 1) in unassigned(members, {"t": 4}, CooperativeStickyAssignor().assign(members, {"t": 4}))


def test_sticky_ignores_claims_on_unsubscribed_deleted_and_missing_partitions() -> None:
    members = {"a": member("a", ["t"], [TP("t", 0), TP("u", 0), TP("gone", 0), TP("t", 7)], 3),
               "b": member("b", ["t", "u"], [TP("t", 1)], 3)}
    ppt = {"t": 2, "u": 2}
    # a may only have t's partitions, so balance needs b's t-1 with a, and u's both with b
    assert StickyAssignor().assign(members, ppt) == {"a": [TP("t", 0), TP("t", 1)], "b": [TP("u", 0), TP("u", 1)]}
    # cooperative: b revokes t-1 and a revokes u-0 (it owns it, though unsubscribed) before they move
    cooperative = CooperativeStickyAssignor().assign(members, ppt)
    assert cooperative == {"a": [TP("t", 0)], "b": [TP("u", 1)]}
    assert unassigned(members, ppt, cooperative) == {TP("t", 1), TP("u", 0)}


# -- cooperative-sticky, round by round ---------------------------------------------------------


def assert_never_two_owners(rounds: list[Assignment], start: dict[TP, set[str]]) -> None:
    """Across the sequence of generations (``start`` being who owned what before the first), a
    partition assigned to a member was, in the generation before, owned by that member or nobody
    (a member that left the group gave up what it owned)."""
    previous = start
    for generation, assignment in enumerate(rounds):
        for m, tps in assignment.items():
            for tp in tps:
                still_here = previous.get(tp, set()) & set(assignment)
                assert still_here <= {m}, f"generation {generation}: {tp} given to {m} while {still_here} owned it"
        previous = {tp: {m} for tp, m in owner_map(assignment).items()}


def settle(members: Members, ppt: Mapping[str, int], generation: int) -> tuple[list[Assignment], Members]:
    """Rebalance with cooperative-sticky, each round feeding the answer back as what the members own,
    until nothing is held back; returns the rounds and the members as they end up."""
    rounds: list[Assignment] = []
    while True:
        assignment = CooperativeStickyAssignor().assign(members, ppt)
        rounds.append(assignment)
        generation += 1
        members = fed_back(members, assignment, generation)
        if not unassigned(members, ppt, assignment) or len(rounds) > 5:
            return rounds, members


@PROPERTY
@given(case=groups(owned="exclusive"), data=st.data())
def test_cooperative_settles_in_two_rounds_and_never_has_two_owners(case: tuple[Members, dict[str, int]],
                                                                     data: st.DataObject) -> None:
    members, ppt = case
    start = current_owners(members, ppt)
    rounds, members = settle(members, ppt, generation=5)
    assert len(rounds) <= 2
    assert_valid(members, ppt, rounds[-1])
    assert_no_cost_reducing_path(members, rounds[-1])
    history = list(rounds)
    # then the group changes: a member leaves, one joins (with another subscription), and so on
    for step in range(3):
        names = sorted(members)
        if len(names) > 1 and data.draw(st.booleans(), label=f"leave at step {step}"):
            del members[data.draw(st.sampled_from(names))]
        else:
            topics = data.draw(st.lists(st.sampled_from(sorted(ppt)), min_size=1, unique=True))
            members[f"joined-{step}"] = member(f"joined-{step}", topics)
        generation = 10 + 10 * step
        rounds, members = settle(members, ppt, generation)
        assert len(rounds) <= 2
        assert_valid(members, ppt, rounds[-1])
        assert_no_cost_reducing_path(members, rounds[-1])
        history += rounds
    assert_never_two_owners(history, start)


def test_cooperative_new_member_gets_its_share_in_the_second_round() -> None:
    ppt = {"t": 6}
    members = {"a": member("a", ["t"], [TP("t", p) for p in range(6)], 1), "b": member("b", ["t"])}
    first = CooperativeStickyAssignor().assign(members, ppt)
    assert counts(first) == {"a": 3, "b": 0}  # a revokes three, nobody gets them yet
    second = CooperativeStickyAssignor().assign(fed_back(members, first, 2), ppt)
    assert second["a"] == first["a"] and len(second["b"]) == 3
    assert set(second["b"]) == set(TP("t", p) for p in range(6)) - set(first["a"])


# -- choosing and checking assignors ------------------------------------------------------------


def test_assignor_names_and_protocols() -> None:
    assert [(a.name, a.rebalance_protocol) for a in ALL] == [
        ("range", "eager"), ("roundrobin", "eager"), ("sticky", "eager"), ("cooperative-sticky", "cooperative")]


def test_resolve_assignors_accepts_names_classes_instances_and_lists() -> None:
    assert [type(a) for a in resolve_assignors("range")] == [RangeAssignor]
    assert [type(a) for a in resolve_assignors(StickyAssignor)] == [StickyAssignor]
    instance = CooperativeStickyAssignor()
    assert resolve_assignors(instance) == [instance]
    resolved = resolve_assignors(["cooperative-sticky", RangeAssignor, RoundRobinAssignor()])
    assert [a.name for a in resolved] == ["cooperative-sticky", "range", "roundrobin"]
    assert [a.name for a in resolve_assignors(("org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
                                               "org.apache.kafka.clients.consumer.RangeAssignor"))] == [
        "cooperative-sticky", "range"]


def test_resolve_assignors_maps_kafka_python_builtins_to_ours() -> None:
    with warnings.catch_warnings():  # kafka-python's own import-time deprecation warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.coordinator.assignors.range import RangePartitionAssignor  # type: ignore[import-untyped]
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor  # type: ignore[import-untyped]
    resolved = resolve_assignors((RangePartitionAssignor, RoundRobinPartitionAssignor))
    assert [type(a) for a in resolved] == [RangeAssignor, RoundRobinAssignor]


class EverythingToFirst(PartitionAssignor):
    """A user-written assignor: every partition to the first member (by id) subscribed to it."""

    name = "everything-to-first"

    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TP]]:
        assignment: dict[str, list[TP]] = {m: [] for m in members}
        for topic, count in sorted(partitions_per_topic.items()):
            subscribers = sorted(m for m, meta in members.items() if topic in meta.topics)
            if subscribers:
                assignment[subscribers[0]].extend(TP(topic, p) for p in range(count))
        return assignment


def test_user_written_assignor_through_resolve_assignors() -> None:
    (by_class,) = resolve_assignors(EverythingToFirst)
    assert isinstance(by_class, EverythingToFirst) and by_class.rebalance_protocol == "eager"
    both = resolve_assignors([EverythingToFirst(), "range"])
    assert select_assignor([[a.name for a in both], ["range", "everything-to-first"],
                            ["everything-to-first"]]) == "everything-to-first"
    members = group({"b": ["t", "u"], "a": ["t"]})
    ppt = {"t": 3, "u": 2}
    assignment = by_class.assign(members, ppt)
    check_assignment(members, ppt, assignment)
    assert assignment == {"b": [TP("u", 0), TP("u", 1)], "a": [TP("t", p) for p in range(3)]}
    assert unassigned(members, ppt, assignment) == set()


class Nameless(PartitionAssignor):
    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TP]]:
        return {m: [] for m in members}


class NeedsArguments(EverythingToFirst):
    name = "needs-arguments"

    def __init__(self, weight: int) -> None:
        self.weight = weight


class WrongProtocol(EverythingToFirst):
    name = "wrong-protocol"
    rebalance_protocol = "incremental"


class Abstract(PartitionAssignor):
    name = "abstract"


@pytest.mark.parametrize("strategy, message", [
    ("rangee", "unknown partition assignor 'rangee': expected an assignor name ('range'"),
    ([], "partition_assignment_strategy is empty"),
    ((), "partition_assignment_strategy is empty"),
    (None, "must be an assignor name"),
    (42, "not int 42"),
    ([["range"]], "not list"),
    (int, "not type"),
    (["range", RangeAssignor], "names 'range' more than once"),
    (Nameless, "Nameless has no name"),
    (NeedsArguments, "cannot be created without arguments"),
    (WrongProtocol, "has rebalance_protocol 'incremental'"),
    (Abstract, "Abstract is abstract: it must implement assign()"),
])
def test_resolve_assignors_errors(strategy: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_assignors(strategy)
    assert message in str(info.value)


def test_resolve_assignors_accepts_an_instance_of_a_class_needing_arguments() -> None:
    instance = NeedsArguments(3)
    assert resolve_assignors([instance, "sticky"])[0] is instance


@pytest.mark.parametrize("preferences, chosen", [
    ([["range"]], "range"),
    ([["range", "roundrobin"]], "range"),
    ([["roundrobin", "range"], ["range", "roundrobin"], ["range"]], "range"),  # votes: range 2, roundrobin 1
    ([["sticky", "range"], ["range", "sticky"]], "sticky"),  # 1 to 1: the first member's preference
    ([["range", "sticky"], ["sticky", "range"]], "range"),
    ([["cooperative-sticky", "range"], ["range"], ["cooperative-sticky", "range"]], "range"),  # only common one
    ([("b", "c"), ("c", "b"), ("c", "b")], "c"),  # the majority beats the first member
    ([("a", "b", "c"), ("c", "b"), ("b", "c"), ("c", "b", "a")], "b"),  # only b, c common; 2 to 2, first prefers b
])
def test_select_assignor_votes(preferences: list[list[str]], chosen: str) -> None:
    assert select_assignor(preferences) == chosen


def test_select_assignor_errors() -> None:
    with pytest.raises(ConfigError, match=r"no common partition_assignment_strategy .*\[range\]; \[sticky\]"):
        select_assignor([["range"], ["sticky"], ["range"]])
    with pytest.raises(ConfigError, match="no common partition_assignment_strategy"):
        select_assignor([["range"], []])
    with pytest.raises(InvalidArgumentError, match="each member's assignor names"):
        select_assignor([])
    with pytest.raises(InvalidArgumentError, match="not the string 'range'"):
        select_assignor(["range"])


CHECK_MEMBERS = {"a": member("a", ["t"]), "b": member("b", ["t", "u"])}
CHECK_PPT = {"t": 2, "u": 1}


@pytest.mark.parametrize("assignment, message", [
    ([("a", [])], "must return a dict of member id -> partitions, not list"),
    ({"a": []}, "no entry for member(s) 'b'"),
    ({"a": [], "b": [], "c": []}, "names 'c', which is not a member of the group"),
    ({"a": "t-0", "b": []}, "member 'a' is assigned 't-0': expected a list of TopicPartition"),
    ({"a": [("t", "0")], "b": []}, "member 'a' is assigned ('t', '0'), which is not a TopicPartition"),
    ({"a": [], "b": [TP("v", 0)]}, "assigned v-0, but topic 'v' does not exist or no member subscribes to it"),
    ({"a": [TP("t", 2)], "b": []}, "assigned t-2, but topic 't' has 2 partition(s)"),
    ({"a": [TP("t", -1)], "b": []}, "assigned t--1, but topic 't' has 2 partition(s)"),
    ({"a": [TP("u", 0)], "b": []}, "member 'a' is assigned u-0, but it does not subscribe to topic 'u'"),
    ({"a": [TP("t", 0)], "b": [TP("t", 0)]}, "t-0 is assigned to both 'a' and 'b'"),
    ({"a": [TP("t", 1), TP("t", 1)], "b": []}, "t-1 is assigned to member 'a' twice"),
])
def test_check_assignment_names_the_problem(assignment: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_assignment(CHECK_MEMBERS, CHECK_PPT, assignment)
    assert message in str(info.value)


def test_check_assignment_allows_incomplete_answers_and_plain_tuples() -> None:
    assignment: dict[str, list[TP]] = {"a": [TP("t", 0)], "b": [("u", 0)]}  # type: ignore[list-item]
    check_assignment(CHECK_MEMBERS, CHECK_PPT, assignment)
    assert unassigned(CHECK_MEMBERS, CHECK_PPT, assignment) == {TP("t", 1)}
    assert unassigned(CHECK_MEMBERS, CHECK_PPT, {"a": [], "b": []}) == {TP("t", 0), TP("t", 1), TP("u", 0)}
