"""Partition assignors: which member of a consumer group consumes which partition.

In every rebalance the coordinator gathers each member's subscription and what it owned
(``MemberMetadata``), picks the assignor all members support (``select_assignor``, Kafka's protocol
vote), runs it once, and checks its answer (``check_assignment``) before handing it out.

Built in, with Kafka's names and semantics:

- ``range``: per topic, contiguous ranges of its partitions over the members subscribed to it.
- ``roundrobin``: all partitions, sorted, dealt one at a time over the members.
- ``sticky``: balanced, and keeps as many partitions with their owner as balance allows (eager).
- ``cooperative-sticky``: the sticky assignment, reached without ever giving a partition to a new
  owner while its old owner may still hold it (cooperative, incremental rebalancing).

User-written assignors subclass ``PartitionAssignor``; ``resolve_assignors`` turns a consumer's
``partition_assignment_strategy`` setting into assignor instances.
"""

from __future__ import annotations

import abc
import heapq
import inspect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import ClassVar, NamedTuple

from logstore.broker.types import TopicPartition
from logstore.errors import ConfigError, InvalidArgumentError

__all__ = [
    "MemberMetadata",
    "PartitionAssignor",
    "RangeAssignor",
    "RoundRobinAssignor",
    "StickyAssignor",
    "CooperativeStickyAssignor",
    "resolve_assignors",
    "select_assignor",
    "check_assignment",
    "unassigned",
]

EAGER = "eager"
COOPERATIVE = "cooperative"


class MemberMetadata(NamedTuple):
    """What an assignor knows of one member of the group."""

    member_id: str
    group_instance_id: str | None
    """Set for static members (``group_instance_id``); they keep their place across restarts."""
    topics: tuple[str, ...]
    """The member's subscription (topic names; topics that do not exist are ignored)."""
    owned_partitions: tuple[TopicPartition, ...]
    """What the member owned in ``generation`` (empty for a new member)."""
    generation: int
    """The generation ``owned_partitions`` is from; -1 if none."""


class PartitionAssignor(abc.ABC):
    """An assignment strategy; subclass it to write your own and pass the class (or an instance) in
    ``partition_assignment_strategy``.

    Contract:

    - ``name`` (class attribute, required): the non-empty name the group votes on; every member
      that lists it must mean the same strategy by it.
    - ``rebalance_protocol``: ``"eager"`` (default) if every member gives up all its partitions
      before each rebalance, ``"cooperative"`` if members keep theirs while the group rebalances.
    - ``assign(members, partitions_per_topic)`` is called once per rebalance by the coordinator.
      ``members`` maps each member id to its ``MemberMetadata``; ``partitions_per_topic`` maps every
      subscribed topic that exists to its partition count. It returns a dict with an entry (maybe an
      empty list) for every member id, each partition to at most one member, and only to a member
      subscribed to its topic (``check_assignment`` enforces this and fails the rebalance
      otherwise). It must not modify its arguments, and should be deterministic.
    - An eager assignor assigns every partition of every subscribed topic. A cooperative assignor
      must not give a partition to a member while another member owns it (per
      ``owned_partitions``): it leaves it out, the owner revokes it, and the follow-up rebalance
      assigns it (``unassigned`` lists what was left out).
    """

    name: ClassVar[str]
    rebalance_protocol: ClassVar[str] = EAGER

    @abc.abstractmethod
    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TopicPartition]]:
        """Map every member id to the partitions it consumes in the new generation."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _member_order(members: Mapping[str, MemberMetadata]) -> list[str]:
    """Member ids in Kafka's order: static members first by ``group_instance_id`` (so their place
    does not depend on the member id they got this time), then the others by member id."""

    def key(member_id: str) -> tuple[int, str, str]:
        instance_id = members[member_id].group_instance_id
        return (1, member_id, "") if instance_id is None else (0, instance_id, member_id)

    return sorted(members, key=key)


class RangeAssignor(PartitionAssignor):
    """Per topic, its partitions in order split into contiguous ranges over the members subscribed to
    it (in ``_member_order``); the first ``partitions % members`` members get one more. With several
    topics the first members get the extra partition of each, as in Kafka."""

    name = "range"

    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TopicPartition]]:
        order = _member_order(members)
        assignment: dict[str, list[TopicPartition]] = {member_id: [] for member_id in order}
        for topic in sorted(partitions_per_topic):
            subscribers = [member_id for member_id in order if topic in members[member_id].topics]
            if not subscribers:
                continue
            per_member, extra = divmod(partitions_per_topic[topic], len(subscribers))
            start = 0
            for position, member_id in enumerate(subscribers):
                end = start + per_member + (1 if position < extra else 0)
                assignment[member_id].extend(TopicPartition(topic, p) for p in range(start, end))
                start = end
        return assignment


class RoundRobinAssignor(PartitionAssignor):
    """All partitions sorted by (topic, partition), dealt one at a time round the members (in
    ``_member_order``), skipping a member for a topic it does not subscribe to."""

    name = "roundrobin"

    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TopicPartition]]:
        order = _member_order(members)
        assignment: dict[str, list[TopicPartition]] = {member_id: [] for member_id in order}
        subscriptions = [frozenset(members[member_id].topics) for member_id in order]
        turn = 0
        for topic in sorted(partitions_per_topic):
            if not any(topic in subscribed for subscribed in subscriptions):
                continue  # nobody to deal it to (and the loop below would never end)
            for partition in range(partitions_per_topic[topic]):
                while topic not in subscriptions[turn]:
                    turn = (turn + 1) % len(order)
                assignment[order[turn]].append(TopicPartition(topic, partition))
                turn = (turn + 1) % len(order)
        return assignment


# -- sticky ---------------------------------------------------------------------------------------
#
# The balance target is the optimal "semi-matching" of partitions to members: the load vector that
# minimises every convex cost at once (max load, sum of squares, ...). An assignment is optimal iff
# no "cost-reducing path" exists: a chain heavy -> m1 -> ... -> light where each member hands one
# partition to the next (the receiver subscribing to its topic) and load(heavy) >= load(light) + 2
# (Harvey, Ladner, Lovasz, Tamir, "Semi-matchings for bipartite graphs and load balancing"). With
# identical subscriptions that is simply "counts differ by at most one".
#
# To keep partitions where they are, the planner starts from the valid owners' partitions, deals the
# rest to the least loaded subscribers, then removes cost-reducing paths in two phases: first moving
# only partitions that had no owner (which reaches the best balance possible without moving any
# owned partition), then moving any partition (only if balance still needs it). Partitions of a
# topic are interchangeable for these paths, so the search runs over members and topics, not
# partitions: fast for thousands of partitions.


class _StickyPlanner:
    """One sticky computation; members are handled by their index in ``_member_order``."""

    def __init__(self, members: Mapping[str, MemberMetadata], partitions_per_topic: Mapping[str, int]) -> None:
        self.order = _member_order(members)
        count = len(self.order)
        self.partitions_per_topic = partitions_per_topic
        # each member's subscribed topics that exist, sorted: the member's iteration order everywhere
        self.topics_of = [sorted({t for t in members[m].topics if t in partitions_per_topic}) for m in self.order]
        self.subscribes = [set(topics) for topics in self.topics_of]
        self.subscribers: dict[str, list[int]] = {}
        for index, topics in enumerate(self.topics_of):
            for topic in topics:
                self.subscribers.setdefault(topic, []).append(index)
        self.kept: list[dict[str, list[int]]] = [{} for _ in range(count)]  # held by their previous owner
        self.fresh: list[dict[str, list[int]]] = [{} for _ in range(count)]  # unowned or moved this round
        self.load = [0] * count
        self.owners = self._current_owners(members)

    def _current_owners(self, members: Mapping[str, MemberMetadata]) -> dict[tuple[str, int], list[int]]:
        """Every claimed partition that exists -> the members claiming it in the highest generation
        (normally one; more only if members disagree within a generation)."""
        best_generation: dict[tuple[str, int], int] = {}
        owners: dict[tuple[str, int], list[int]] = {}
        for index, member_id in enumerate(self.order):
            generation = members[member_id].generation
            for key in members[member_id].owned_partitions:
                previous = best_generation.get(key)
                if previous is None:
                    topic, partition = key
                    if not 0 <= partition < self.partitions_per_topic.get(topic, 0):
                        continue  # the topic was deleted (or the partition never existed)
                if previous is None or generation > previous:
                    best_generation[key] = generation
                    owners[key] = [index]
                elif generation == previous and owners[key][-1] != index:
                    owners[key].append(index)
        return owners

    def plan(self) -> dict[str, list[TopicPartition]]:
        taken = {topic: bytearray(self.partitions_per_topic[topic]) for topic in self.subscribers}
        for (topic, partition), claimants in self.owners.items():
            # a partition two members claim in the same generation stays with neither (as in Kafka)
            if len(claimants) == 1 and topic in self.subscribes[claimants[0]]:
                self.kept[claimants[0]].setdefault(topic, []).append(partition)
                self.load[claimants[0]] += 1
                taken[topic][partition] = 1
        for held in self.kept:
            for partitions in held.values():
                partitions.sort()  # the order owned_partitions came in must not matter
        self._deal_unowned(taken)
        self._balance(fresh_only=True)
        self._balance(fresh_only=False)
        plan: dict[str, list[TopicPartition]] = {}
        for index, member_id in enumerate(self.order):
            partitions_of_member: list[TopicPartition] = []
            for topic in self.topics_of[index]:
                partitions = self.kept[index].get(topic, []) + self.fresh[index].get(topic, [])
                partitions_of_member.extend(map(TopicPartition, repeat(topic), sorted(partitions)))
            plan[member_id] = partitions_of_member
        return plan

    def current_owner_ids(self) -> dict[tuple[str, int], tuple[str, ...]]:
        return {key: tuple(self.order[i] for i in claimants) for key, claimants in self.owners.items()}

    def _deal_unowned(self, taken: dict[str, bytearray]) -> None:
        """Each partition nobody keeps goes to its least loaded subscriber; topics with the fewest
        subscribers first, since they have the fewest choices."""
        for topic in sorted(self.subscribers, key=lambda t: (len(self.subscribers[t]), t)):
            free = [p for p, is_taken in enumerate(taken[topic]) if not is_taken]
            if not free:
                continue
            heap = [(self.load[index], index) for index in self.subscribers[topic]]
            heapq.heapify(heap)
            for partition in free:
                load, index = heap[0]
                self.fresh[index].setdefault(topic, []).append(partition)
                heapq.heapreplace(heap, (load + 1, index))
            for load, index in heap:
                self.load[index] = load

    def _balance(self, fresh_only: bool) -> None:
        """Apply cost-reducing paths, heaviest members first, until none is left.

        When no path leaves the heaviest (level L) members, nothing they reach can ever be lightened
        either (all of it has load >= L - 1, and paths from elsewhere cannot enter it), so that whole
        set is settled and the search goes on below it. Every path lowers the sum of squared loads,
        so this ends."""
        load = self.load
        settled = [False] * len(load)
        while True:
            active = [i for i in range(len(load)) if not settled[i]]
            if not active:
                return
            level = max(load[i] for i in active)
            if level - min(load[i] for i in active) < 2:
                return
            sources = [i for i in active if load[i] == level]
            if self._hand_over_directly(sources, active, settled, fresh_only):
                continue
            light, parent, reached = self._find_path(sources, level, settled, fresh_only)
            if light < 0:
                for index in reached:
                    settled[index] = True
                continue
            receiver = light
            while receiver in parent:
                giver, topic = parent[receiver]
                self._move(giver, receiver, topic, fresh_only)
                receiver = giver

    def _move(self, giver: int, receiver: int, topic: str, fresh_only: bool) -> bool:
        """Hand one partition of ``topic`` from giver to receiver, preferring one the giver did not
        own before; False if the giver has none it may give."""
        movable = self.fresh[giver].get(topic)
        if not movable:
            if fresh_only or not self.kept[giver].get(topic):
                return False
            movable = self.kept[giver][topic]
        self.fresh[receiver].setdefault(topic, []).append(movable.pop())
        self.load[giver] -= 1
        self.load[receiver] += 1
        return True

    def _hand_over_directly(self, sources: list[int], active: list[int], settled: list[bool],
                            fresh_only: bool) -> bool:
        """The common case in bulk: for the first topic that allows it, the heaviest members holding
        it hand partitions straight to its lightest subscribers, as long as the giver is still a
        heaviest member and the receiver a lightest one two below it. This is the path search's
        one-step answer repeated without searching again (a join or leave can need thousands)."""
        load = self.load
        for topic in sorted({t for s in sources for t in self.topics_of[s] if self._can_give(s, t, fresh_only)}):
            givers = [s for s in sources if self._can_give(s, topic, fresh_only)]
            is_giver = set(givers)
            receivers = [(load[r], r) for r in self.subscribers[topic] if not settled[r] and r not in is_giver]
            if not receivers or min(receivers)[0] > load[givers[0]] - 2:
                continue
            ceiling = max((load[i] for i in active if i not in is_giver), default=-1)  # the others' loads
            give_heap = [(-load[s], s) for s in givers]
            heapq.heapify(give_heap)
            heapq.heapify(receivers)
            moved = False
            while give_heap:
                giver_load, giver = -give_heap[0][0], give_heap[0][1]
                receiver_load, receiver = receivers[0]
                if giver_load < ceiling or receiver_load > giver_load - 2:
                    break
                if not self._move(giver, receiver, topic, fresh_only):
                    heapq.heappop(give_heap)  # out of this topic: from now on one of the others
                    ceiling = max(ceiling, giver_load)
                    continue
                heapq.heapreplace(give_heap, (1 - giver_load, giver))
                heapq.heapreplace(receivers, (receiver_load + 1, receiver))
                ceiling = max(ceiling, receiver_load + 1)
                moved = True
            if moved:
                return True
        return False

    def _can_give(self, member: int, topic: str, fresh_only: bool) -> bool:
        return bool(self.fresh[member].get(topic) or (not fresh_only and self.kept[member].get(topic)))

    def _find_path(self, sources: list[int], level: int, settled: list[bool],
                   fresh_only: bool) -> tuple[int, dict[int, tuple[int, str]], list[int]]:
        """Breadth-first from the level-``level`` members along "gives a partition of a topic to a
        subscriber of it"; returns the lightest member with load <= level - 2 among the nearest ones
        (or -1), how each reached member was reached (receiver -> (giver, topic)), and all reached."""
        reached_mark = [False] * len(self.load)
        for index in sources:
            reached_mark[index] = True
        reached = list(sources)
        parent: dict[int, tuple[int, str]] = {}
        topic_seen: set[str] = set()
        frontier = sources
        while frontier:
            light = -1
            next_frontier: list[int] = []
            for giver in frontier:
                for topic in self.topics_of[giver]:
                    if topic in topic_seen or not self._can_give(giver, topic, fresh_only):
                        continue
                    topic_seen.add(topic)  # everyone this topic leads to is reached now
                    for receiver in self.subscribers[topic]:
                        if reached_mark[receiver] or settled[receiver]:
                            continue
                        reached_mark[receiver] = True
                        parent[receiver] = (giver, topic)
                        next_frontier.append(receiver)
                        if self.load[receiver] <= level - 2 and (light < 0 or self.load[receiver] < self.load[light]):
                            light = receiver
            reached.extend(next_frontier)
            if light >= 0:
                return light, parent, reached
            frontier = next_frontier
        return -1, parent, reached


class StickyAssignor(PartitionAssignor):
    """Balanced, and as sticky as balance allows (eager protocol).

    Balanced: with identical subscriptions, member counts differ by at most one; in general no
    partition can be handed along a chain of subscribers from a member to one with two fewer (the
    most even spread the subscriptions allow). Sticky: a partition stays with its previous owner
    unless balance needs it elsewhere; with identical subscriptions the number of moved partitions
    is the minimum any balanced assignment needs.

    The previous owner of a partition is the member listing it in ``owned_partitions`` with the
    highest ``generation``; older claims are ignored, and if two members claim it in the same
    generation neither keeps it. Owned partitions of topics the member no longer subscribes to, or
    that no longer exist, are reassigned. Deterministic: the same input gives the same output,
    whatever the order of ``members`` and ``owned_partitions``.
    """

    name = "sticky"

    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TopicPartition]]:
        return _StickyPlanner(members, partitions_per_topic).plan()


class CooperativeStickyAssignor(PartitionAssignor):
    """The sticky assignment, reached in (at most) two rebalances (cooperative protocol).

    A partition whose sticky target differs from its current owner (the highest-generation claim in
    ``owned_partitions``, including a member no longer subscribed to its topic, or members claiming
    it in the same generation) is left out of this round: neither owner gets it. The owner revokes
    it and rejoins, and the next rebalance assigns it, now unowned, to its target. So a partition is
    never owned by two members in consecutive generations, and members keep consuming everything
    that does not move while the group rebalances.

    The second rebalance keeps every partition where it is and only places the ones held back, so
    the group settles after it (balanced and complete), as long as membership and subscriptions do
    not change meanwhile.
    """

    name = "cooperative-sticky"
    rebalance_protocol = COOPERATIVE

    def assign(self, members: Mapping[str, MemberMetadata],
               partitions_per_topic: Mapping[str, int]) -> dict[str, list[TopicPartition]]:
        planner = _StickyPlanner(members, partitions_per_topic)
        target = planner.plan()
        owners = planner.current_owner_ids()
        assignment: dict[str, list[TopicPartition]] = {}
        for member_id, partitions in target.items():
            mine = (member_id,)
            assignment[member_id] = [tp for tp in partitions if owners.get(tp, mine) == mine]
        return assignment


# -- choosing assignors ---------------------------------------------------------------------------

_BUILTIN: dict[str, type[PartitionAssignor]] = {
    cls.name: cls for cls in (RangeAssignor, RoundRobinAssignor, StickyAssignor, CooperativeStickyAssignor)
}
# the class names Java clients configure, so a copied partition.assignment.strategy works too
_JAVA_NAMES = {
    "org.apache.kafka.clients.consumer.RangeAssignor": "range",
    "org.apache.kafka.clients.consumer.RoundRobinAssignor": "roundrobin",
    "org.apache.kafka.clients.consumer.StickyAssignor": "sticky",
    "org.apache.kafka.clients.consumer.CooperativeStickyAssignor": "cooperative-sticky",
}
_PROTOCOLS = (EAGER, COOPERATIVE)
_EXPECTED = ("an assignor name ('range', 'roundrobin', 'sticky', 'cooperative-sticky'), "
             "a PartitionAssignor subclass or a PartitionAssignor instance")


def resolve_assignors(strategy: object) -> list[PartitionAssignor]:
    """The assignors of a ``partition_assignment_strategy`` setting, in preference order.

    ``strategy`` is a name (``"range"``, ``"roundrobin"``, ``"sticky"``, ``"cooperative-sticky"``,
    or the Java class name of one), a ``PartitionAssignor`` subclass (instantiated without
    arguments), an instance, or a list/tuple of those. kafka-python's built-in assignor classes
    stand for ours of the same name. Raises ``ConfigError`` for an unknown name, a wrong type, an
    empty list, or two assignors with the same name.
    """
    items = list(strategy) if isinstance(strategy, (list, tuple)) else [strategy]
    if not items:
        raise ConfigError(f"partition_assignment_strategy is empty: give at least one of {_EXPECTED}")
    assignors = [_resolve_one(item) for item in items]
    names = Counter(assignor.name for assignor in assignors)
    duplicates = sorted(name for name, times in names.items() if times > 1)
    if duplicates:
        raise ConfigError(f"partition_assignment_strategy names {', '.join(map(repr, duplicates))} more than once: "
                          "the group picks an assignor by name, so names must be unique")
    return assignors


def _resolve_one(item: object) -> PartitionAssignor:
    if isinstance(item, PartitionAssignor):
        assignor = item
    elif isinstance(item, type) and issubclass(item, PartitionAssignor):
        if inspect.isabstract(item):
            raise ConfigError(f"partition assignor class {item.__qualname__} is abstract: it must implement assign()")
        try:
            assignor = item()
        except TypeError as e:
            raise ConfigError(f"partition assignor class {item.__qualname__} cannot be created without arguments "
                              f"({e}); pass an instance instead") from e
    elif isinstance(item, str):
        cls = _BUILTIN.get(_JAVA_NAMES.get(item, item))
        if cls is None:
            raise ConfigError(f"unknown partition assignor {item!r}: expected {_EXPECTED}")
        assignor = cls()
    elif (kafka_python_name := _kafka_python_builtin_name(item)) is not None:
        assignor = _BUILTIN[kafka_python_name]()
    else:
        raise ConfigError(f"partition_assignment_strategy entries must be {_EXPECTED}, "
                          f"not {type(item).__name__} {item!r}")
    name = getattr(assignor, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"partition assignor {type(assignor).__qualname__} has no name: "
                          "set the class attribute name = '...' (the name the group votes on)")
    if assignor.rebalance_protocol not in _PROTOCOLS:
        raise ConfigError(f"partition assignor {name!r} has rebalance_protocol {assignor.rebalance_protocol!r}: "
                          f"expected one of {', '.join(map(repr, _PROTOCOLS))}")
    return assignor


def _kafka_python_builtin_name(item: object) -> str | None:
    """The name of a kafka-python assignor (class or instance) we have a built-in of, else None."""
    cls = item if isinstance(item, type) else type(item)
    name = getattr(item, "name", None)
    if cls.__module__.startswith("kafka.coordinator.assignors") and isinstance(name, str) and name in _BUILTIN:
        return name
    return None


def select_assignor(preferences: Sequence[Sequence[str]]) -> str:
    """The assignor name the group uses, by Kafka's vote: among the names every member supports,
    each member votes for the first in its own preference order; most votes wins, and a tie goes to
    the name the first member prefers. ``preferences`` holds each member's names in preference
    order. Raises ``ConfigError`` when no name is supported by all members."""
    if isinstance(preferences, str) or not preferences:
        raise InvalidArgumentError(f"select_assignor needs each member's assignor names, got {preferences!r}")
    lists: list[list[str]] = []
    for position, names in enumerate(preferences):
        if isinstance(names, str):
            raise InvalidArgumentError(f"member {position}'s assignor names must be a list of names, "
                                       f"not the string {names!r}")
        lists.append(list(names))
    common = set(lists[0]).intersection(*lists[1:])
    if not common:
        distinct = list(dict.fromkeys(tuple(names) for names in lists))
        shown = "; ".join("[" + ", ".join(names) + "]" for names in distinct[:5])
        more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
        raise ConfigError(f"no common partition_assignment_strategy among the group's {len(lists)} members: "
                          f"they support {shown}{more}")
    votes = Counter(next(name for name in names if name in common) for names in lists)
    candidates = [name for name in dict.fromkeys(lists[0]) if name in common]
    return max(candidates, key=lambda name: votes[name])  # max keeps the first of equals


def check_assignment(members: Mapping[str, MemberMetadata], partitions_per_topic: Mapping[str, int],
                     assignment: object) -> None:
    """Check an assignor's answer: a dict with an entry for every member and no other key, each
    partition existing, assigned at most once, and only to a member subscribed to its topic.
    Raises ``InvalidArgumentError`` naming the first problem. Partitions left unassigned are allowed
    (a cooperative assignor holds some back); ``unassigned`` lists them."""
    if not isinstance(assignment, Mapping):
        raise InvalidArgumentError(f"an assignor must return a dict of member id -> partitions, "
                                   f"not {type(assignment).__name__}")
    missing = [member_id for member_id in members if member_id not in assignment]
    if missing:
        raise InvalidArgumentError(f"the assignment has no entry for member(s) {', '.join(map(repr, missing[:5]))}: "
                                   "an assignor must return one (maybe an empty list) for every member")
    owner_of: dict[TopicPartition, str] = {}
    for member_id, partitions in assignment.items():
        member = members.get(member_id)
        if member is None:
            raise InvalidArgumentError(f"the assignment names {member_id!r}, which is not a member of the group")
        if isinstance(partitions, (str, bytes)) or not isinstance(partitions, Iterable):
            raise InvalidArgumentError(f"member {member_id!r} is assigned {partitions!r}: expected a list of "
                                       "TopicPartition")
        for tp in partitions:
            if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)
                    and isinstance(tp[1], int) and not isinstance(tp[1], bool)):
                raise InvalidArgumentError(f"member {member_id!r} is assigned {tp!r}, which is not a TopicPartition")
            topic, partition = tp
            count = partitions_per_topic.get(topic)
            if count is None:
                raise InvalidArgumentError(f"member {member_id!r} is assigned {topic}-{partition}, but topic {topic!r} "
                                           "does not exist or no member subscribes to it")
            if not 0 <= partition < count:
                raise InvalidArgumentError(f"member {member_id!r} is assigned {topic}-{partition}, but topic {topic!r} "
                                           f"has {count} partition(s)")
            if topic not in member.topics:
                raise InvalidArgumentError(f"member {member_id!r} is assigned {topic}-{partition}, but it does not "
                                           f"subscribe to topic {topic!r}")
            key = TopicPartition(topic, partition)
            other = owner_of.get(key)
            if other == member_id:
                raise InvalidArgumentError(f"{topic}-{partition} is assigned to member {member_id!r} twice")
            if other is not None:
                raise InvalidArgumentError(f"{topic}-{partition} is assigned to both {other!r} and {member_id!r}")
            owner_of[key] = member_id


def unassigned(members: Mapping[str, MemberMetadata], partitions_per_topic: Mapping[str, int],
               assignment: Mapping[str, Iterable[TopicPartition]]) -> set[TopicPartition]:
    """The partitions of the members' subscribed topics (that exist) no member is assigned."""
    subscribed = {topic for member in members.values() for topic in member.topics if topic in partitions_per_topic}
    assigned = {TopicPartition(*tp) for partitions in assignment.values() for tp in partitions}
    return {TopicPartition(topic, partition) for topic in subscribed for partition in range(partitions_per_topic[topic])
            if TopicPartition(topic, partition) not in assigned}
