"""A consumer's side of group membership: joining, revoking, taking assignments, heartbeats,
auto-commit and the rebalance listener.

The consumer calls :meth:`GroupMembership.step` at every turn of ``poll`` before it fetches, so
it never fetches a partition after learning it lost it. Listener callbacks run there, in the
consumer's thread (as Kafka's clients), never in the coordinator's. Heartbeats come from a
background thread, so a consumer that processes slowly stays in the group for as long as it polls
within ``max_poll_interval_ms``; past that, the heartbeat thread leaves the group for it.

Eager assignors (range, roundrobin, sticky): every partition is revoked before rejoining.
Cooperative (cooperative-sticky, when every configured assignor is cooperative): the consumer
keeps fetching what it owns while the group rebalances, revokes only what moves, and rejoins at
once so the moved partitions reach their new owners in a second round.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from logstore.broker.types import TopicPartition
from logstore.errors import CommitFailedError, FencedInstanceIdError, GroupError, LogstoreError
from logstore.groups.assignors import PartitionAssignor, resolve_assignors
from logstore.groups.coordinator import GroupCoordinator, MemberState
from logstore.groups.offsets import OffsetAndMetadata

if TYPE_CHECKING:
    from logstore.client.consumer import Consumer

log = logging.getLogger("logstore.groups")


class ConsumerRebalanceListener:
    """Callbacks around rebalances (Kafka's ConsumerRebalanceListener), called from ``poll`` in the
    consumer's thread. Override what you need; ``on_partitions_lost`` defaults to
    ``on_partitions_revoked``. Commit in ``on_partitions_revoked`` to hand over exact positions."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """These partitions go to another member (the consumer still owns them: commit now)."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """These partitions are now this consumer's (positions from committed offsets)."""

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """This consumer was removed from the group (session timeout, poll interval, fenced): the
        partitions may already be another member's, so commits for them would be refused."""
        self.on_partitions_revoked(lost)


class _ListenerLike(Protocol):
    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None: ...
    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


class GroupMembership:
    """Membership of one consumer in one group (created by the consumer for a ``group_id``)."""

    def __init__(self, consumer: Consumer, coordinator: GroupCoordinator, group_id: str, cfg: Mapping[str, Any]
                 ) -> None:
        self._consumer = consumer
        self._coordinator = coordinator
        self.group_id = group_id
        self.instance_id: str | None = cfg["group_instance_id"]
        self.client_id: str | None = cfg["client_id"]
        self.assignors: list[PartitionAssignor] = resolve_assignors(cfg["partition_assignment_strategy"])
        self.cooperative = all(a.rebalance_protocol == "cooperative" for a in self.assignors)
        self.session_timeout = cfg["session_timeout_ms"] / 1000.0
        self.heartbeat_interval = cfg["heartbeat_interval_ms"] / 1000.0
        self.max_poll_interval = cfg["max_poll_interval_ms"] / 1000.0
        self.auto_commit = bool(cfg["enable_auto_commit"])
        self.auto_commit_interval = cfg["auto_commit_interval_ms"] / 1000.0
        self.listener: Any = None
        self.member: MemberState | None = None
        self.generation = -1
        self.owned: set[TopicPartition] = set()
        self.topics: tuple[str, ...] | None = None  # None: not subscribed
        self._rejoin = False
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval
        self._committed_positions: dict[TopicPartition, int] = {}
        self.last_poll = time.monotonic()
        self.in_poll = False
        self._stop = threading.Event()
        self._heartbeats: threading.Thread | None = None

    # -- subscription ---------------------------------------------------------------------------

    def set_topics(self, topics: Iterable[str]) -> None:
        topics = tuple(sorted(set(topics)))
        if topics != self.topics:
            self.topics = topics
            self._rejoin = True

    def unsubscribe(self) -> None:
        """Leave the group (revoking everything) and stop heartbeating."""
        self._leave("the consumer unsubscribed", revoke=True)
        self.topics = None

    # -- the poll-time step ---------------------------------------------------------------------

    def step(self) -> None:
        """Bring membership up to date; called by ``poll`` before every fetch."""
        if self.topics is None:
            return
        member = self.member
        if member is not None:
            if member.fenced is not None:
                self._lost(member)
                member = None
            elif member.error is not None:
                err, member.error = member.error, None
                raise err
        # a completed round's assignment first: rejoining before taking it would report stale
        # ownership, and the cooperative assignor would hold those partitions back once more
        if member is not None and member.completed_round >= member.joined_round \
                and member.synced_generation != member.generation:
            self._take_assignment(member)
        if member is None or member.rejoin_requested or self._rejoin:
            if member is None or member.completed_round >= member.joined_round:  # no join in flight
                member = self._join()
                if member.completed_round >= member.joined_round and member.synced_generation != member.generation:
                    self._take_assignment(member)
        if self.auto_commit and time.monotonic() >= self._next_auto_commit:
            self._auto_commit()

    def _join(self) -> MemberState:
        self._rejoin = False
        if not self.cooperative and self.owned:
            self._revoke_all()
        previous = self.member
        if previous is not None and previous.fenced is not None:
            # removed while the listener ran (step() checked before it): what it owned may be
            # another member's now, so it is lost, not carried into the new membership
            self._lost(previous)
            previous = None
        assert self.topics is not None
        member = self._coordinator.join(
            self.group_id, previous, group_instance_id=self.instance_id, client_id=self.client_id,
            assignors=self.assignors, topics=self.topics,
            owned=self.owned if self.cooperative else self._last_assignment(previous),
            session_timeout=self.session_timeout, rebalance_timeout=self.max_poll_interval)
        if previous is not None and member is not previous:
            # removed between that check and the join (the coordinator ignored what it reported
            # owning): the same loss
            self._lost(previous)
        self.member = member
        self._start_heartbeats()
        return member

    @staticmethod
    def _last_assignment(member: MemberState | None) -> Iterable[TopicPartition]:
        # eager members report their previous assignment so the sticky assignor can keep it
        return member.assignment if member is not None and member.fenced is None else ()

    def _take_assignment(self, member: MemberState) -> None:
        new = set(member.assignment)
        revoked = self.owned - new
        added = new - self.owned
        self.generation = member.generation  # commits of revoked partitions are allowed in it
        if revoked:  # cooperative: only what moves (eager revoked everything before joining)
            self._commit_before_revoke(revoked)
            self._call("on_partitions_revoked", revoked)
            self._rejoin = True  # so the revoked partitions reach their new owner in the next round
        self.owned = new
        self._consumer._group_assignment(new, added, self._committed(added))
        self._coordinator.sync(member)
        self._call("on_partitions_assigned", added)

    def _revoke_all(self) -> None:
        """Commit (auto-commit), tell the listener while the partitions are still assigned (so it
        can read positions and commit), then drop them."""
        self._commit_before_revoke(self.owned)
        revoked = set(self.owned)
        try:
            self._call("on_partitions_revoked", revoked)
        finally:
            self.owned = set()
            self._consumer._group_assignment(set())

    def _lost(self, member: MemberState) -> None:
        lost, self.owned = set(self.owned), set()
        self.member = None
        self.generation = -1
        self._committed_positions.clear()
        log.warning("group %s: %s", self.group_id, member.fenced)
        try:
            if lost:
                if self.listener is not None and hasattr(self.listener, "on_partitions_lost"):
                    self._call("on_partitions_lost", lost)
                else:
                    self._call("on_partitions_revoked", lost)
        finally:
            self._consumer._group_assignment(set())
        if isinstance(member.error, FencedInstanceIdError):
            err, member.error = member.error, None
            self.topics = None  # fatal, as in Kafka: another instance with this id owns the place now
            raise err

    def _call(self, name: str, partitions: set[TopicPartition]) -> None:
        callback = getattr(self.listener, name, None) if self.listener is not None else None
        if callback is not None:
            callback(set(partitions))

    def _committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = self._coordinator.committed(self.group_id, tps)
        return {tp: om.offset for tp, om in found.items() if om is not None}

    # -- commits --------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        if self.topics is None:  # manual assignment: allowed while the group has no members
            self._coordinator.commit(self.group_id, None, -1, offsets)
        else:
            member = self.member
            if member is None or member.fenced is not None:
                why = member.fenced if member is not None else "it lost its partitions and has not rejoined yet"
                raise CommitFailedError(f"commit refused: this consumer is not a member of group {self.group_id!r} "
                                        f"({why}); poll() to rejoin")
            self._coordinator.commit(self.group_id, member, self.generation, offsets)
        for tp, om in offsets.items():
            self._committed_positions[tp] = om.offset

    def _positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        positions = self._consumer._positions
        done = self._committed_positions
        return self._consumer._position_offsets([tp for tp in tps if tp in positions and done.get(tp) != positions[tp]])

    def _auto_commit(self) -> None:
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval
        offsets = self._positions(self.owned)
        if offsets:
            try:
                self.commit(offsets)
            except GroupError as e:  # as Kafka's auto-commit: logged, the next one retries
                log.warning("group %s: auto-commit failed: %s", self.group_id, e)

    def _commit_before_revoke(self, tps: Iterable[TopicPartition]) -> None:
        if self.auto_commit:
            offsets = self._positions(tps)
            if offsets:
                try:
                    self.commit(offsets)
                except GroupError as e:
                    log.warning("group %s: commit before revoking failed: %s", self.group_id, e)

    # -- heartbeats and lifecycle ---------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        if self._heartbeats is None:
            # the thread holds the membership weakly: a consumer dropped without close() is
            # collected, its heartbeats stop, and the group removes it after its session timeout
            self._heartbeats = threading.Thread(target=_heartbeat_loop, args=(weakref.ref(self), self._stop,
                                                                              self.heartbeat_interval),
                                                daemon=True, name=f"logstore-heartbeat-{self.group_id}")
            self._heartbeats.start()

    def _heartbeat(self) -> bool:
        """One heartbeat (or, past max_poll_interval_ms, leaving the group); False once the store
        has closed."""
        member = self.member
        if member is None or member.fenced is not None:
            return True
        if not self.in_poll and time.monotonic() - self.last_poll > self.max_poll_interval:
            # Kafka's clients leave the group for a consumer that stopped polling; the next poll rejoins
            self._coordinator.leave(member, f"left group {self.group_id!r}: no poll() within "
                                            f"max_poll_interval_ms={int(self.max_poll_interval * 1000)}")
            return True
        try:
            self._coordinator.heartbeat(member)
        except LogstoreError:
            return False
        return True

    def _leave(self, reason: str, revoke: bool) -> None:
        member = self.member
        try:
            if revoke and self.owned:
                self._revoke_all()
        finally:  # a listener that raises must not keep a ghost member in the group
            if member is not None:
                self._coordinator.leave(member, reason)
            self.member = None
            self.generation = -1

    def close(self) -> None:
        """Commit (auto-commit), revoke, leave (static members stay until their session times out,
        as in Kafka, so a restart gets the same partitions back), stop heartbeating."""
        try:
            if self.topics is not None and self.member is not None and self.member.fenced is None:
                if self.instance_id is None:
                    self._leave(f"member left group {self.group_id!r} (consumer closed)", revoke=True)
                else:
                    self._revoke_all()
        finally:
            self.topics = None
            self._stop.set()
            if self._heartbeats is not None and self._heartbeats is not threading.current_thread():
                self._heartbeats.join()

    def abandon(self) -> None:
        """Stop heartbeating without leaving, as a crashed process would (for crash tests): the
        coordinator removes the member when its session times out."""
        self._stop.set()
        self.topics = None


def _heartbeat_loop(membership: weakref.ref[GroupMembership], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        alive = membership()
        if alive is None or not alive._heartbeat():
            return
        del alive  # not held while waiting


__all__ = ["ConsumerRebalanceListener", "GroupMembership"]
