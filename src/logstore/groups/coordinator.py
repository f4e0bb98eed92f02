"""The group coordinator: membership, rebalances, generations and fencing of consumer groups.

Kafka's classic group protocol, in-process. A group moves through

    Empty -> PreparingRebalance -> CompletingRebalance -> Stable -> PreparingRebalance ...
                                                             (Dead once deleted)

A rebalance round starts when a member joins, leaves or dies, when a member's subscription (or,
cooperatively, what it owns) changes, or when a subscribed topic's partition count changes. Every
member is asked to rejoin (``MemberState.rejoin_requested``; blocked polls are woken); when all
have, or the rebalance timeout passes (stragglers are removed), the generation is bumped and the
assignor the members agree on runs here — the coordinator plays the leader's part, since all
members share the process. Each member then takes its assignment (``sync``); once all have, the
group is Stable.

Fencing: a commit names its member id and generation; it is refused unless the member is in the
group's current generation and owns (or is still revoking, unowned by anyone else) every partition
it commits. A member removed by the coordinator is marked ``fenced`` with the reason, which its
consumer sees before its next fetch. Static members (``group_instance_id``) keep their assignment
across a restart within the session timeout; a second member with the same instance id fences the
first.

Liveness: consumers heartbeat from a background thread; the coordinator's own thread removes
members whose session timed out and ends overdue rebalance rounds. The coordinator never calls the
store while holding its lock, and never calls user code (listeners) at all.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from logstore.broker.types import TopicPartition
from logstore.errors import (
    CommitFailedError,
    ConfigError,
    FencedInstanceIdError,
    GroupNotEmptyError,
    InvalidArgumentError,
    UnknownGroupError,
)
from logstore.groups.assignors import (
    MemberMetadata,
    PartitionAssignor,
    check_assignment,
    select_assignor,
)
from logstore.groups.offsets import GroupRecord, OffsetAndMetadata, OffsetStore
from logstore.groups.types import GroupDescription, GroupListing, MemberDescription, PartitionLag

if TYPE_CHECKING:
    from logstore._native.core import AppendNotifier

log = logging.getLogger("logstore.groups")

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


class MemberState:
    """A member as the coordinator sees it; its consumer holds the same object and reads the
    fields the coordinator sets (``generation``, ``assignment``, ``rejoin_requested``, ``fenced``)."""

    __slots__ = ("member_id", "group_id", "group_instance_id", "client_id", "assignors", "topics", "owned",
                 "owned_generation", "session_timeout", "rebalance_timeout", "last_heartbeat", "joined_round",
                 "completed_round", "generation", "assignment", "revoking", "synced_generation",
                 "rejoin_requested", "fenced", "error")

    def __init__(self, member_id: str, group_id: str, group_instance_id: str | None, client_id: str | None,
                 assignors: Sequence[PartitionAssignor], topics: tuple[str, ...], session_timeout: float,
                 rebalance_timeout: float) -> None:
        self.member_id = member_id
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.assignors = list(assignors)
        self.topics = topics
        self.owned: tuple[TopicPartition, ...] = ()
        self.owned_generation = -1
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.last_heartbeat = time.monotonic()
        self.joined_round = -1
        self.completed_round = -1  # joined_round > completed_round: its join is still pending
        self.generation = -1
        self.assignment: frozenset[TopicPartition] = frozenset()
        # partitions it owned when it joined and lost in this generation, held back from everyone
        # (cooperative): it may still commit them while it revokes them
        self.revoking: frozenset[TopicPartition] = frozenset()
        self.synced_generation = -1
        self.rejoin_requested = False
        self.fenced: str | None = None
        self.error: BaseException | None = None

    @property
    def protocols(self) -> list[str]:
        return [a.name for a in self.assignors]

    def __repr__(self) -> str:
        return (f"MemberState({self.member_id!r}, generation={self.generation}, "
                f"assignment={sorted(self.assignment)}, fenced={self.fenced!r})")


class Group:
    __slots__ = ("group_id", "state", "generation", "protocol", "leader", "members", "instances", "round",
                 "rebalance_deadline", "empty_since_ms", "partition_counts", "reason")

    def __init__(self, group_id: str, generation: int = 0) -> None:
        self.group_id = group_id
        self.state = EMPTY
        self.generation = generation
        self.protocol: str | None = None
        self.leader: str | None = None
        self.members: dict[str, MemberState] = {}
        self.instances: dict[str, str] = {}  # group_instance_id -> member_id
        self.round = 0
        self.rebalance_deadline = 0.0
        self.empty_since_ms = int(time.time() * 1000)
        self.partition_counts: dict[str, int] = {}  # what the last assignment was computed on
        self.reason = ""

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.topics}


class GroupCoordinator:
    """Coordinates the consumer groups of one store (``store._group_coordinator()``)."""

    def __init__(self, offsets: OffsetStore, partition_count: Callable[[str], int | None],
                 log_end_offset: Callable[[TopicPartition], int | None], notifier: AppendNotifier, *,
                 offsets_retention_ms: int = 7 * 86_400_000,
                 offsets_retention_check_interval_ms: int = 600_000) -> None:
        self._offsets = offsets
        self._partition_count = partition_count
        self._log_end_offset = log_end_offset
        self._notifier = notifier
        self._retention_ms = offsets_retention_ms
        self._retention_check_s = offsets_retention_check_interval_ms / 1000.0
        self._lock = threading.Lock()
        self._timer = threading.Condition(self._lock)
        self._groups: dict[str, Group] = {}
        self._closed = False
        self._load()
        self._thread = threading.Thread(target=self._run_timers, name="logstore-group-coordinator", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        """Groups from the offsets topic: generations continue; static members are restored (their
        session restarts now), so an application restarting within the session timeout gets the
        same partitions back without a rebalance."""
        for group_id, record in self._offsets.groups.items():
            g = Group(group_id, record.generation)
            g.protocol = record.protocol
            # the session counts from when the group was last written (at the latest, when the
            # store closed), so a group whose static members never return becomes empty
            now = time.monotonic() - max(0.0, time.time() - record.timestamp / 1000.0)
            for m in record.members:
                instance = m.get("group_instance_id")
                if not instance:
                    continue
                member = MemberState(m["member_id"], group_id, instance, m.get("client_id"), [],
                                     tuple(m.get("topics", ())), m.get("session_timeout", 10.0),
                                     m.get("rebalance_timeout", 300.0))
                member.last_heartbeat = now
                member.generation = member.synced_generation = record.generation
                member.assignment = frozenset(TopicPartition(t, p) for t, p in m.get("assignment", ()))
                member.joined_round = member.completed_round = 0
                g.members[member.member_id] = member
                g.instances[instance] = member.member_id
            if g.members:
                g.state = STABLE
                g.leader = record.leader if record.leader in g.members else next(iter(g.members))
                g.partition_counts = {t: c for t in g.subscribed_topics()
                                      if (c := self._partition_count(t)) is not None}
            else:
                g.empty_since_ms = record.timestamp
            self._groups[group_id] = g

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for g in self._groups.values():
                if any(m.group_instance_id is not None for m in g.members.values()):
                    self._persist(g)  # the static members' session clock restarts from now on reopen
                for m in g.members.values():
                    m.fenced = m.fenced or "the store is closed"
            self._timer.notify_all()
        self._thread.join()

    # -- membership -----------------------------------------------------------------------------

    def join(self, group_id: str, member: MemberState | None, *, group_instance_id: str | None,
             client_id: str | None, assignors: Sequence[PartitionAssignor], topics: Iterable[str],
             owned: Iterable[TopicPartition], session_timeout: float, rebalance_timeout: float) -> MemberState:
        """Join (or rejoin) ``group_id``; never blocks. The returned member's ``generation`` and
        ``assignment`` are set when the round completes (at once if nothing changed)."""
        topic_set = tuple(sorted(set(topics)))
        owned_t = tuple(sorted(set(owned)))
        with self._lock:
            self._check_open()
            g = self._group(group_id)
            if member is not None and isinstance(member.error, FencedInstanceIdError):
                raise member.error  # a newer consumer has this instance id: never take it back
            if member is not None and member.fenced is not None:
                # removed meanwhile: a new member, owning nothing (its partitions may be another's)
                member = None
                owned_t = ()
            names = [a.name for a in assignors]
            others = [set(m.protocols) for m in g.members.values()
                      if m.assignors and (member is None or m is not member)]
            common = set.intersection(*others) if others else set(names)
            if not common & set(names):
                raise ConfigError(f"group {group_id!r}: no partition_assignment_strategy in common with its members "
                                  f"(this consumer: {', '.join(names)}; the group's: {', '.join(sorted(common))})")
            now = time.monotonic()
            if member is None:
                member_id = f"{group_instance_id or client_id or 'consumer'}-{uuid.uuid4().hex[:12]}"
                member = MemberState(member_id, group_id, group_instance_id, client_id, assignors, topic_set,
                                     session_timeout, rebalance_timeout)
                old_id = g.instances.get(group_instance_id) if group_instance_id is not None else None
                if old_id is not None:
                    return self._replace_static(g, g.members[old_id], member)
                g.members[member_id] = member
                if group_instance_id is not None:
                    g.instances[group_instance_id] = member_id
                member.owned = owned_t
                member.joined_round = self._prepare(g, f"member {member_id} joined")
                self._maybe_complete(g)
                return member
            if member.member_id not in g.members:
                raise CommitFailedError(f"member {member.member_id} is not in group {group_id!r}")
            member.last_heartbeat = now
            changed = (topic_set != member.topics or names != member.protocols or owned_t != member.owned)
            member.topics = topic_set
            member.assignors = list(assignors)
            member.owned = owned_t
            member.session_timeout = session_timeout
            member.rebalance_timeout = rebalance_timeout
            if g.state == PREPARING_REBALANCE:
                member.joined_round = g.round
                member.rejoin_requested = False
                self._maybe_complete(g)
            elif changed or member.generation != g.generation:
                member.joined_round = self._prepare(g, f"member {member.member_id} rejoined with a new subscription "
                                                       "or ownership")
                self._maybe_complete(g)
            else:
                member.rejoin_requested = False
            return member

    def _replace_static(self, g: Group, old: MemberState, new: MemberState) -> MemberState:
        """A static member restarted (or a duplicate appeared): the newer one takes the member's
        place and assignment; the older is fenced. No rebalance unless its subscription changed."""
        old.fenced = (f"fenced: another consumer joined group {g.group_id!r} with group_instance_id "
                      f"{new.group_instance_id!r}")
        old.error = FencedInstanceIdError(old.fenced)
        del g.members[old.member_id]
        g.members[new.member_id] = new
        assert new.group_instance_id is not None
        g.instances[new.group_instance_id] = new.member_id
        if g.leader == old.member_id:
            g.leader = new.member_id
        same = new.topics == old.topics and (not old.assignors or new.protocols == old.protocols)
        if g.state in (STABLE, COMPLETING_REBALANCE) and same:
            new.generation = g.generation
            new.assignment = old.assignment
            new.synced_generation = -1
            new.joined_round = new.completed_round = g.round
            new.owned = tuple(sorted(old.assignment))
            new.owned_generation = g.generation
        else:
            new.joined_round = self._prepare(g, f"static member {new.group_instance_id} rejoined with a new "
                                                "subscription")
            self._maybe_complete(g)
        self._notifier.wake()
        return new

    def sync(self, member: MemberState) -> None:
        """The member has taken the assignment of its generation."""
        with self._lock:
            g = self._groups.get(member.group_id)
            if g is None or member.fenced is not None or g.members.get(member.member_id) is not member:
                return
            member.synced_generation = member.generation
            if g.state == COMPLETING_REBALANCE and all(m.synced_generation == g.generation
                                                        for m in g.members.values()):
                g.state = STABLE
                self._notifier.wake()

    def heartbeat(self, member: MemberState) -> None:
        with self._lock:
            if member.fenced is None:
                member.last_heartbeat = time.monotonic()

    def leave(self, member: MemberState, reason: str) -> None:
        with self._lock:
            g = self._groups.get(member.group_id)
            if g is None or member.fenced is not None or g.members.get(member.member_id) is not member:
                return
            self._remove(g, member, reason)

    def on_topic_change(self, topic: str) -> None:
        """A topic was created, deleted or grew: rebalance the groups whose assignment it changes.
        A deleted topic's committed offsets go too (as in Kafka), so a topic re-created under the
        same name is not read from the old topic's offsets."""
        with self._lock:
            if self._closed:
                return
            if self._partition_count(topic) is None:
                for group_id in list(self._offsets.known_groups()):
                    gone = [tp for tp in self._offsets.group_offsets(group_id) if tp.topic == topic]
                    self._offsets.delete_offsets(group_id, gone)
            for g in self._groups.values():
                if g.state in (STABLE, COMPLETING_REBALANCE) and topic in g.subscribed_topics():
                    if self._partition_count(topic) != g.partition_counts.get(topic):
                        self._prepare(g, f"the partitions of topic {topic!r} changed")

    # -- rounds ---------------------------------------------------------------------------------

    def _group(self, group_id: str) -> Group:
        g = self._groups.get(group_id)
        if g is None:
            record = self._offsets.groups.get(group_id)
            g = self._groups[group_id] = Group(group_id, record.generation if record is not None else 0)
        return g

    def _prepare(self, g: Group, reason: str) -> int:
        """Start a round (if none is running); returns its number."""
        if g.state != PREPARING_REBALANCE:
            g.state = PREPARING_REBALANCE
            g.round += 1
            g.reason = reason
            g.rebalance_deadline = time.monotonic() + max((m.rebalance_timeout for m in g.members.values()),
                                                          default=0.0)
            log.debug("group %s: rebalance (%s)", g.group_id, reason)
            for m in g.members.values():
                m.rejoin_requested = True
            self._notifier.wake()
            self._timer.notify_all()
        return g.round

    def _remove(self, g: Group, member: MemberState, reason: str) -> None:
        member.fenced = reason
        del g.members[member.member_id]
        if member.group_instance_id is not None and g.instances.get(member.group_instance_id) == member.member_id:
            del g.instances[member.group_instance_id]
        if g.leader == member.member_id:
            g.leader = None
        if g.members:
            self._prepare(g, reason)
            self._maybe_complete(g)
        else:
            if g.state == PREPARING_REBALANCE or g.generation > 0:
                g.generation += 1
            g.state = EMPTY
            g.leader = None
            g.empty_since_ms = int(time.time() * 1000)
            self._persist(g)
        self._notifier.wake()

    def _maybe_complete(self, g: Group) -> None:
        if g.state == PREPARING_REBALANCE and all(m.joined_round == g.round for m in g.members.values()):
            self._complete(g)

    def _complete(self, g: Group) -> None:
        g.generation += 1
        if not g.members:
            g.state = EMPTY
            g.empty_since_ms = int(time.time() * 1000)
            self._persist(g)
            return
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        live = [m for m in g.members.values() if m.assignors]
        protocol = select_assignor([m.protocols for m in live])
        leader = g.members[g.leader] if g.members[g.leader].assignors else live[0]
        assignor = next(a for a in leader.assignors if a.name == protocol)
        counts = {t: c for t in g.subscribed_topics() if (c := self._partition_count(t)) is not None}
        metadata = {m.member_id: MemberMetadata(m.member_id, m.group_instance_id, m.topics, m.owned,
                                                m.owned_generation) for m in g.members.values()}
        error: BaseException | None = None
        try:
            assignment = assignor.assign(metadata, counts)
            check_assignment(metadata, counts, assignment)
        except Exception as e:  # a user-written assignor failed: every member's poll raises it
            log.exception("group %s: assignor %s failed", g.group_id, protocol)
            error = e
            assignment = {mid: [] for mid in g.members}
        taken = {tp for tps in assignment.values() for tp in tps}
        for m in g.members.values():
            m.generation = g.generation
            m.assignment = frozenset(assignment.get(m.member_id, ()))
            m.revoking = frozenset(tp for tp in m.owned if tp not in m.assignment and tp not in taken)
            m.rejoin_requested = False
            m.completed_round = g.round
            m.error = error
        g.protocol = protocol
        g.partition_counts = counts
        g.state = COMPLETING_REBALANCE
        log.debug("group %s: generation %d, %d members, %s", g.group_id, g.generation, len(g.members), protocol)
        self._persist(g)
        if error is not None:  # each member's next poll raises it; the one after rejoins and retries
            self._prepare(g, f"the {protocol} assignor failed: retrying")
        self._notifier.wake()

    def _persist(self, g: Group) -> None:
        members = [{"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                    "topics": list(m.topics), "assignment": sorted([tp.topic, tp.partition] for tp in m.assignment),
                    "session_timeout": m.session_timeout, "rebalance_timeout": m.rebalance_timeout}
                   for m in g.members.values()]
        self._offsets.store_group(g.group_id, GroupRecord(g.generation, g.protocol, g.leader, members,
                                                          int(time.time() * 1000)))

    # -- timers ---------------------------------------------------------------------------------

    def _run_timers(self) -> None:
        next_retention = time.monotonic() + self._retention_check_s
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                deadline = next_retention
                for g in list(self._groups.values()):
                    for m in list(g.members.values()):
                        expires = m.last_heartbeat + m.session_timeout
                        if now >= expires:
                            log.info("group %s: member %s session timed out", g.group_id, m.member_id)
                            self._remove(g, m, f"removed from group {g.group_id!r}: no heartbeat within "
                                               f"session_timeout_ms={int(m.session_timeout * 1000)}")
                        else:
                            deadline = min(deadline, expires)
                    if g.state == PREPARING_REBALANCE:
                        if now >= g.rebalance_deadline:
                            for m in [m for m in g.members.values() if m.joined_round != g.round]:
                                self._remove(g, m, f"removed from group {g.group_id!r}: did not rejoin within "
                                                   f"the rebalance timeout (max_poll_interval_ms)")
                            self._maybe_complete(g)
                        else:
                            deadline = min(deadline, g.rebalance_deadline)
                if now >= next_retention:
                    self._expire_offsets()
                    next_retention = now + self._retention_check_s
                    deadline = min(deadline, next_retention)
                self._timer.wait(max(0.0, deadline - time.monotonic()) + 0.001)

    def _expire_offsets(self) -> None:
        """Kafka's offsets.retention: a group empty for longer than the retention loses its offsets."""
        now_ms = int(time.time() * 1000)
        for group_id in list(self._offsets.known_groups()):
            g = self._groups.get(group_id)
            if g is not None and g.members:
                continue
            since = max(g.empty_since_ms if g is not None else -1, self._offsets.last_commit_ms(group_id))
            if since >= 0 and now_ms - since > self._retention_ms:
                log.info("group %s: offsets expired (empty for more than %d ms)", group_id, self._retention_ms)
                self._offsets.delete_group(group_id)
                self._groups.pop(group_id, None)

    def expire_offsets_now(self) -> None:
        """Run the offset-retention check at once (tools and tests)."""
        with self._lock:
            self._expire_offsets()

    # -- offsets --------------------------------------------------------------------------------

    def commit(self, group_id: str, member: MemberState | None, generation: int,
               offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Store ``offsets`` for ``group_id`` if the member may: see the module docstring."""
        with self._lock:
            self._check_open()
            g = self._groups.get(group_id)
            if member is None:
                if g is not None and g.members:
                    raise CommitFailedError(
                        f"group {group_id!r} has active members: a consumer that is not one of them (manual "
                        "assign()) cannot commit its offsets")
            else:
                if member.fenced is not None or g is None or g.members.get(member.member_id) is not member:
                    raise CommitFailedError(f"commit refused: member {member.member_id} is no longer in group "
                                            f"{group_id!r} ({member.fenced or 'unknown member'}); its partitions may "
                                            "have been reassigned — poll() to rejoin")
                if generation != g.generation:
                    raise CommitFailedError(
                        f"commit refused: generation {generation} of group {group_id!r} is stale (the group is in "
                        f"generation {g.generation} after a rebalance); poll() to rejoin")
                allowed = member.assignment | member.revoking
                not_owned = sorted(tp for tp in offsets if tp not in allowed)
                if not_owned:
                    shown = ", ".join(f"{t}-{p}" for t, p in not_owned[:5])
                    raise CommitFailedError(f"commit refused: member {member.member_id} does not own {shown} in "
                                            f"generation {generation} of group {group_id!r}")
            for tp, om in offsets.items():
                if self._partition_count(tp.topic) is None or not 0 <= tp.partition < (
                        self._partition_count(tp.topic) or 0):
                    raise InvalidArgumentError(f"cannot commit {tp.topic}-{tp.partition}: no such partition")
                if om.offset < 0:
                    raise InvalidArgumentError(f"cannot commit offset {om.offset} for {tp.topic}-{tp.partition}")
            last = self._offsets.commit(group_id, offsets, sync=False)
        self._offsets.sync_through(last)  # outside the lock: concurrent durable commits share an fsync

    def committed(self, group_id: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata | None]:
        return {tp: self._offsets.committed(group_id, tp) for tp in tps}

    # -- admin ----------------------------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        with self._lock:
            names = set(self._groups) | self._offsets.known_groups()
            out = []
            for name in sorted(names):
                g = self._groups.get(name)
                out.append(GroupListing(name, g.state if g is not None else EMPTY, len(g.members) if g else 0))
            return out

    def describe_group(self, group_id: str) -> GroupDescription:
        with self._lock:
            g = self._groups.get(group_id)
            offsets = self._offsets.group_offsets(group_id)
            if g is None and group_id not in self._offsets.known_groups():
                raise UnknownGroupError(f"group {group_id!r} does not exist")
            members = [] if g is None else [
                MemberDescription(m.member_id, m.group_instance_id, m.client_id, sorted(m.assignment))
                for m in g.members.values()]
            owners = {tp: m.member_id for m in (g.members.values() if g else ()) for tp in m.assignment}
            tps = sorted(set(offsets) | set(owners))
            state = g.state if g is not None else EMPTY
            generation = g.generation if g is not None else self._offsets.groups[group_id].generation \
                if group_id in self._offsets.groups else 0
            protocol = g.protocol if g is not None else None
            leader = g.leader if g is not None else None
        parts = []
        for tp in tps:
            om = offsets.get(tp)
            end = self._log_end_offset(tp)
            committed = om.offset if om is not None else None
            lag = None if committed is None or end is None else max(0, end - committed)
            parts.append(PartitionLag(tp.topic, tp.partition, committed, end if end is not None else -1, lag,
                                      owners.get(tp), om.metadata if om is not None else ""))
        return GroupDescription(group_id, state, generation, protocol, leader, members, parts)

    def reset_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Overwrite committed offsets of an empty group (GroupNotEmptyError otherwise)."""
        with self._lock:
            self._check_open()
            g = self._groups.get(group_id)
            if g is not None and g.members:
                raise GroupNotEmptyError(f"group {group_id!r} has {len(g.members)} active member(s) (state "
                                         f"{g.state}): stop its consumers before resetting its offsets")
            self._offsets.commit(group_id, {tp: OffsetAndMetadata(o) for tp, o in offsets.items()})

    def check_empty(self, group_id: str) -> None:
        g = self._groups.get(group_id)
        if g is not None and g.members:
            raise GroupNotEmptyError(f"group {group_id!r} has {len(g.members)} active member(s) (state "
                                     f"{g.state}): stop its consumers first")

    def delete_group(self, group_id: str) -> None:
        with self._lock:
            self._check_open()
            if group_id not in self._groups and group_id not in self._offsets.known_groups():
                raise UnknownGroupError(f"group {group_id!r} does not exist")
            self.check_empty(group_id)
            self._offsets.delete_group(group_id)
            g = self._groups.pop(group_id, None)
            if g is not None:
                g.state = DEAD

    def _check_open(self) -> None:
        if self._closed:
            from logstore.errors import LogClosedError

            raise LogClosedError("the store is closed")


__all__ = ["GroupCoordinator", "MemberState", "EMPTY", "PREPARING_REBALANCE", "COMPLETING_REBALANCE", "STABLE",
           "DEAD"]
