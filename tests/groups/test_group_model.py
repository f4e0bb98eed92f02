"""Model-checking test of consumer groups: random joins, leaves, crashes, stalls, slow rebalance
callbacks, partition additions, produces and commits against a live store, with every consumer in
its own thread.

Hypothesis draws a sequence of operations; a driver thread applies them to a store holding one
topic read by two groups at once: "coop" (cooperative-sticky) and "eager" (range, roundrobin or
sticky, drawn), while a producer thread trickles records to every partition. Each consumer is a
:class:`Worker` thread looping poll -> process (append (group, topic, partition, offset) to a
shared log) -> commit what it processed (commit-after-process: ``commit({tp: last + 1})``,
after every batch or only when the driver asks, and from ``on_partitions_revoked``).

- crash: ``Consumer._abandon()``, taken by the worker's own thread, holding records it polled but
  did not process, or processed but did not commit;
- stall: the worker stops polling for longer than ``max_poll_interval_ms`` holding processed,
  uncommitted records (a zombie: the heartbeat thread leaves for it; its commit must be refused);
- slow revoke (drawn per consumer): its ``on_partitions_revoked`` outlasts
  ``max_poll_interval_ms``, so a rebalance starting meanwhile goes on without it.

:class:`GroupChecker` watches the run (a sampler thread, the driver after each op, and the
workers at each poll and commit); what it asserts is listed on the class. After the ops the
driver stops producing, makes sure every group has a live member, switches every worker to
commit after each batch and waits (10 s at most) for each group to settle: Stable, members
exactly the live workers, every partition assigned, committed offsets at the log end. Then every
produced record must have been processed by each group at least once, with the value produced.

Real threads and real timeouts make a run nondeterministic: Hypothesis chooses the operations,
the interleaving is whatever the machine does. Shrinking is off unless ``LOGSTORE_SHRINK=1``
(a failure is reported as found, with the op sequence and the checker's violations).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import logstore
from logstore import TopicPartition
from logstore.errors import CommitFailedError
from logstore.groups.coordinator import COMPLETING_REBALANCE, STABLE, Group, GroupCoordinator

pytestmark = pytest.mark.slow

TOPIC = "events"
COOP = "coop"
EAGER = "eager"
GROUPS = (COOP, EAGER)
MAX_PARTITIONS = 8
MAX_WORKERS_PER_GROUP = 4

# short timeouts so that crashes and stalls resolve within the example
SESSION_TIMEOUT_MS = 300
HEARTBEAT_INTERVAL_MS = 50
MAX_POLL_INTERVAL_MS = 400
STALL_S = (MAX_POLL_INTERVAL_MS + 250) / 1000.0  # past max_poll_interval_ms: the heartbeat thread leaves for it
# a slow on_partitions_revoked: a rebalance starting in its first 800 ms removes the member
SLOW_REVOKE_S = (MAX_POLL_INTERVAL_MS + 800) / 1000.0
POLL_TIMEOUT_S = 0.03
SETTLE_TIMEOUT_S = 10.0
SAMPLE_INTERVAL_S = 0.002
TRICKLE_INTERVAL_S = 0.01
# between two ops: time for the workers to poll once or twice, so that a rebalance an op starts can
# complete (or not) before the next op, instead of every op landing in the same round
OP_GAP_S = 0.02


# -- operations -------------------------------------------------------------------------------------

class Join(NamedTuple):
    """A new consumer in ``group`` (its own thread)."""
    group: str
    commit_every_batch: bool  # False: commits only when a Commit op asks (or on revoke)
    commit_on_revoke: bool
    max_records: int
    # its on_partitions_revoked takes longer than max_poll_interval_ms in a rebalance (as a listener
    # flushing work before handing partitions over may): a rebalance meanwhile goes on without it
    slow_revoke: bool = False


class Leave(NamedTuple):
    """The worker closes its consumer (leaves the group) and ends."""
    worker: int


class Crash(NamedTuple):
    """The worker abandons its consumer (no leave, no more heartbeats) and ends."""
    worker: int
    after_processing: bool  # True: processed but uncommitted records; False: polled, unprocessed


class Stall(NamedTuple):
    """The worker stops polling for longer than max_poll_interval_ms, holding processed records."""
    worker: int


class Commit(NamedTuple):
    """The worker commits what it processed at its next turn."""
    worker: int


class Produce(NamedTuple):
    records: int
    keyed: bool


class AddPartitions(NamedTuple):
    partitions: int


class Pause(NamedTuple):
    ms: int


Op = Join | Leave | Crash | Stall | Commit | Produce | AddPartitions | Pause

WORKER_INDEX = st.integers(0, 7)


def joins(group: st.SearchStrategy[str]) -> st.SearchStrategy[Join]:
    return st.builds(Join, group, st.booleans(), st.booleans(), st.sampled_from([1, 3, 500]), st.booleans())


JOINS = joins(st.sampled_from(GROUPS))
PRODUCES = st.builds(Produce, st.integers(1, 40), st.booleans())
PAUSES = st.builds(Pause, st.sampled_from([10, 50, 150]))
# repeated entries weight the draw: mostly joins, produces and pauses, so that the members to leave,
# crash or stall exist and have records in hand
OPS: st.SearchStrategy[Op] = st.one_of(
    JOINS, JOINS, PRODUCES, PRODUCES, PRODUCES, PAUSES, PAUSES,
    st.builds(Leave, WORKER_INDEX),
    st.builds(Crash, WORKER_INDEX, st.booleans()),
    st.builds(Stall, WORKER_INDEX),
    st.builds(Stall, WORKER_INDEX),
    st.builds(Commit, WORKER_INDEX),
    st.builds(AddPartitions, st.integers(1, 2)),
)
# every example starts with a member in each group and records to read
SCENARIOS = st.tuples(joins(st.just(COOP)), joins(st.just(EAGER)), PRODUCES, st.lists(OPS, min_size=3, max_size=20)
                      ).map(lambda t: [t[0], t[1], t[2], *t[3]])


# -- the checker ------------------------------------------------------------------------------------

class PollEvent(NamedTuple):
    group: str
    generation: int
    member_id: str
    tp: TopicPartition
    worker: str


class GroupChecker:
    """Checks the safety properties of consumer groups while a run goes on.

    Coordinator's view (sampled under its lock, by a sampler thread every ~2 ms, the driver after
    each op and the workers after each poll), per group:

    - the generation never goes down; no member in the group is marked fenced;
    - when CompletingRebalance or Stable: every member is in the group's generation; assignments
      are disjoint, within the partition counts the assignment was computed on (never more than the
      topic has); together they cover every partition, except (cooperative only) partitions held
      back from everyone because a member is revoking them (``MemberState.revoking``). Kafka's
      cooperative protocol reaches Stable with such partitions unassigned, the revoking member
      rejoining at once to hand them over, so this is allowed in Stable too; whether they reach a
      new owner is checked when the run settles (every partition assigned, every offset committed);
    - cooperative group, when CompletingRebalance or Stable: no partition is assigned to a member
      other than one that owned it when joining the round (``MemberState.owned``), which keeps
      fetching it until it takes the new assignment and revokes it;
    - when Stable: every member has taken (synced) the generation's assignment;
    - the assignment of a generation never changes once seen (snapshots per (group, generation)).

    Consumers' view, in real time (also under the coordinator's lock, so no rebalance completes
    while it is read): among the consumers whose member is live (in the group, not fenced; a crashed
    consumer stays live until its session times out), no partition is in two consumers'
    ``assignment()``, and each consumer's assignment is within what the coordinator gave its member
    (``MemberState.assignment``, or what it reported owning when it joined the running round).

    Polls: every record a poll returns is of a partition in ``assignment()`` after that poll, from a
    consumer that has a member id and generation; per (group, generation, partition) at most one
    consumer returns records; a consumer's generation never goes down (-1 after losing its member
    aside); per partition a consumer reads on from where it was, or, newly assigned, from the
    group's committed offset (no record skipped at a hand-over); at the end every poll's (generation,
    member, partition) is in the coordinator's snapshot of that generation, when one was taken.

    Commits (serialized by ``commit_lock`` so their order is the order they were stored in): a
    group's committed offset of a partition never goes down, and never passes the log end. With
    commit-after-process of records processed in offset order it cannot legitimately go down: a
    member commits only offsets of records it processed, a partition's new owner starts from the
    committed offset, and a member that lost the partition (revoked: its listener drops what it has
    not committed; removed: its commit is refused) cannot commit it any more. A commit must be
    refused if, just before it, its member was already removed, its generation already stale or a
    partition not its own in it (none of these can change back); and must not be refused while its
    member is still in the group, in the generation the consumer is in, owning (or still revoking)
    every partition committed.
    """

    def __init__(self, store: logstore.Store, groups: Sequence[str]) -> None:
        self.store = store
        self.coordinator: GroupCoordinator = store._group_coordinator()
        self.groups = tuple(groups)
        self.workers: list[Worker] = []
        self.violations: list[str] = []
        self._reported: set[str] = set()
        self.current_op = -1  # the index of the op the driver is applying (-1: setup, len(ops): settling)
        self.commit_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._snapshots: dict[tuple[str, int], dict[str, frozenset[TopicPartition]]] = {}
        self._poll_owners: dict[tuple[str, int, TopicPartition], str] = {}
        self.poll_events: list[PollEvent] = []
        self.committed_log: dict[tuple[str, TopicPartition], int] = {}
        self.commits = 0
        self.refused_commits = 0
        self.max_generation: dict[str, int] = defaultdict(int)
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def violation(self, message: str) -> None:
        with self._state_lock:
            if message not in self._reported and len(self.violations) < 50:  # once each: samples repeat
                self._reported.add(message)
                self.violations.append(f"[op {self.current_op}] {message}")

    # -- sampling -------------------------------------------------------------------------------

    def start(self) -> None:
        self._sampler = threading.Thread(target=self._sample_loop, name="group-model-sampler", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()

    def _sample_loop(self) -> None:
        try:
            while not self._stop.wait(SAMPLE_INTERVAL_S):
                self.observe()
        except BaseException:
            self.violation(f"the sampler died:\n{traceback.format_exc()}")

    def observe(self) -> None:
        """Check the coordinator's and the consumers' views of every group, atomically."""
        with self.coordinator._lock:
            for gid in self.groups:
                g = self.coordinator._groups.get(gid)
                if g is not None:
                    self._check_group(g)
                    self._check_live_ownership(g)

    def _check_group(self, g: Group) -> None:
        gid = g.group_id
        last = self._generations.get(gid, -1)
        if g.generation < last:
            self.violation(f"{gid}: generation went down from {last} to {g.generation}")
        self._generations[gid] = g.generation
        self.max_generation[gid] = max(self.max_generation[gid], g.generation)
        for m in g.members.values():
            if m.fenced is not None:
                self.violation(f"{gid}: member {m.member_id} is in the group but fenced ({m.fenced})")
        if g.state not in (COMPLETING_REBALANCE, STABLE):
            return
        counts = g.partition_counts
        topic_count = self.store._partition_count(TOPIC) or 0
        if counts.get(TOPIC, 0) > topic_count:
            self.violation(f"{gid}: assigned over {counts.get(TOPIC)} partitions, the topic has {topic_count}")
        expected = {TopicPartition(t, p) for t, n in counts.items() for p in range(n)}
        owner: dict[TopicPartition, str] = {}
        held_back: set[TopicPartition] = set()
        for m in g.members.values():
            if m.generation != g.generation:
                self.violation(f"{gid} ({g.state}, generation {g.generation}): member {m.member_id} is in "
                               f"generation {m.generation}")
            if g.state == STABLE and m.synced_generation != g.generation:
                self.violation(f"{gid} is Stable in generation {g.generation} but {m.member_id} has not synced it")
            for tp in m.assignment:
                if tp not in expected:
                    self.violation(f"{gid}: {m.member_id} is assigned {tp}, not one of {sorted(counts.items())}")
                if tp in owner:
                    self.violation(f"{gid} generation {g.generation}: {tp} is assigned to both {owner[tp]} and "
                                   f"{m.member_id}")
                owner[tp] = m.member_id
            held_back |= m.revoking
        if gid == COOP:
            # the cooperative rule: a partition a member owned when it joined this round (and still
            # fetches while the round runs) goes to nobody else in it; it moves in the next round,
            # after that member revoked it
            for m in g.members.values():
                for tp in m.owned:
                    if owner.get(tp, m.member_id) != m.member_id:
                        self.violation(f"{gid} generation {g.generation}: {tp} is assigned to {owner[tp]} while "
                                       f"{m.member_id} still owns it (it joined the round owning {sorted(m.owned)})")
        missing = expected - set(owner)
        if gid == EAGER and missing:
            self.violation(f"{gid} ({g.state}, generation {g.generation}): {sorted(missing)} assigned to nobody")
        elif missing - held_back:
            self.violation(f"{gid} ({g.state}, generation {g.generation}): {sorted(missing - held_back)} assigned "
                           f"to nobody and revoked by nobody")
        snapshot = {m.member_id: m.assignment for m in g.members.values()}
        known = self._snapshots.setdefault((gid, g.generation), snapshot)
        if known != snapshot:
            self.violation(f"{gid}: the assignment of generation {g.generation} changed from {known} to {snapshot}")

    def _check_live_ownership(self, g: Group) -> None:
        holder: dict[TopicPartition, str] = {}
        for w in self.workers:
            if w.group != g.group_id:
                continue
            membership = w.consumer._group
            member = membership.member if membership is not None else None
            if member is None or member.fenced is not None:
                continue  # no member, or a removed one (a zombie until its next poll)
            if g.members.get(member.member_id) is not member:
                self.violation(f"{w.name}: member {member.member_id} is not fenced but not in group {g.group_id}")
                continue
            local = set(w.consumer._assignment)
            allowed = member.assignment | set(member.owned)
            if not local <= allowed:
                self.violation(f"{w.name} ({member.member_id}) reads {sorted(local - allowed)}, which the coordinator "
                               f"neither assigned it (generation {member.generation}: {sorted(member.assignment)}) "
                               f"nor knows it owns ({sorted(member.owned)})")
            for tp in local:
                if tp in holder:
                    self.violation(f"{g.group_id}: {tp} is in the assignment of two live consumers at once: "
                                   f"{holder[tp]} and {w.name}")
                holder[tp] = w.name

    # -- events from the workers ----------------------------------------------------------------

    def on_poll(self, w: Worker, records: Sequence[Any], generation: int, member_id: str | None,
                assignment: set[TopicPartition]) -> None:
        if generation >= 0:
            if generation < w.last_generation:
                self.violation(f"{w.name}: generation went down from {w.last_generation} to {generation}")
            w.last_generation = generation
        by_tp: dict[TopicPartition, list[int]] = defaultdict(list)
        for r in records:
            by_tp[TopicPartition(r.topic, r.partition)].append(r.offset)
        for tp, offsets in by_tp.items():
            if offsets != list(range(offsets[0], offsets[0] + len(offsets))):
                self.violation(f"{w.name}: one poll returned {tp} offsets {offsets} (not consecutive)")
            if tp not in assignment:
                self.violation(f"{w.name}: poll returned records of {tp}, not in its assignment {sorted(assignment)}")
            if member_id is None or generation < 0:
                self.violation(f"{w.name}: poll returned records of {tp} without a member (id {member_id}, "
                               f"generation {generation})")
                continue
            with self._state_lock:
                first = self._poll_owners.setdefault((w.group, generation, tp), w.name)
                self.poll_events.append(PollEvent(w.group, generation, member_id, tp, w.name))
            if first != w.name:
                self.violation(f"{w.group} generation {generation}: both {first} and {w.name} returned records of {tp}")
            expected = w.expected.get(tp)
            if expected is None:
                self.violation(f"{w.name}: returned records of {tp} without on_partitions_assigned having given it")
            elif offsets[0] != expected:
                self.violation(f"{w.name}: {tp} went on at offset {offsets[0]}, expected {expected} (its previous "
                               f"position, or the committed offset when assigned)")
            w.expected[tp] = offsets[-1] + 1
        if records:
            self.observe()

    def commit_must_be_refused(self, w: Worker, offsets: dict[TopicPartition, int]) -> str | None:
        """Why a commit about to be made must be refused, if it must: its member was removed, its
        generation is already stale, or it does not own a partition in it. Each stays true once
        true (a removal is final, generations only go up, an assignment is fixed per generation)."""
        membership = w.consumer._group
        generation = w.consumer.generation
        with self.coordinator._lock:
            member = membership.member if membership is not None else None
            g = self.coordinator._groups.get(w.group)
            if member is None or g is None:
                return None  # not a member: refused only while the group has members, which may change
            if member.fenced is not None:
                return f"its member {member.member_id} was removed ({member.fenced})"
            if g.generation != generation:
                return f"its generation {generation} is stale (the group is in {g.generation})"
            not_owned = set(offsets) - member.assignment - member.revoking
            if not_owned:
                return f"it does not own {sorted(not_owned)} in generation {generation}"
        return None

    def on_commit(self, w: Worker, offsets: dict[TopicPartition, int], why: str, must_refuse: str | None) -> None:
        """Called under ``commit_lock`` right after a commit was stored."""
        self.commits += 1
        if must_refuse is not None:
            self.violation(f"{w.name}: commit {why} of {offsets} accepted although {must_refuse}")
        for tp, offset in offsets.items():
            last = self.committed_log.get((w.group, tp))
            if last is not None and offset < last:
                self.violation(f"{w.group}: committed offset of {tp} went back from {last} to {offset} "
                               f"(committed by {w.name}, generation {w.consumer.generation})")
            end = self.store.end_offset(tp)
            if offset > end:
                self.violation(f"{w.group}: {w.name} committed {tp} at {offset}, past the log end {end}")
            self.committed_log[(w.group, tp)] = offset

    def on_commit_refused(self, w: Worker, offsets: dict[TopicPartition, int], error: CommitFailedError,
                          why: str) -> None:
        self.refused_commits += 1
        membership = w.consumer._group
        generation = w.consumer.generation
        with self.coordinator._lock:
            member = membership.member if membership is not None else None
            g = self.coordinator._groups.get(w.group)
            if member is None or g is None or g.members.get(member.member_id) is not member:
                return  # refused for being removed (or not a member): right
            if g.generation == generation and set(offsets) <= (member.assignment | member.revoking):
                self.violation(f"{w.name}: commit {why} of {offsets} refused although its member {member.member_id} "
                               f"is in generation {generation} owning {sorted(member.assignment)} (revoking "
                               f"{sorted(member.revoking)}): {error}")

    def check_polls_against_snapshots(self) -> None:
        for e in self.poll_events:
            snapshot = self._snapshots.get((e.group, e.generation))
            if snapshot is None:
                continue
            if e.member_id not in snapshot:
                self.violation(f"{e.worker} returned {e.tp} as member {e.member_id} of {e.group} generation "
                               f"{e.generation}, which has no such member ({sorted(snapshot)})")
            elif e.tp not in snapshot[e.member_id]:
                self.violation(f"{e.worker} returned {e.tp} in {e.group} generation {e.generation}; that generation "
                               f"assigned it {sorted(snapshot[e.member_id])}")


# -- workers ----------------------------------------------------------------------------------------

class ProcessedRecord(NamedTuple):
    group: str
    tp: TopicPartition
    offset: int
    value: bytes | None
    worker: str


class Listener:
    """The worker's rebalance listener: commit what was processed of revoked partitions (if the
    worker does), forget what was not committed of partitions revoked or lost, and note where a
    newly assigned partition must go on from (the committed offset)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        w = self.worker
        if w.slow_revoke and not w.leave.is_set():  # slow in a rebalance, not when closing
            time.sleep(SLOW_REVOKE_S)
        if w.commit_on_revoke:
            offsets = {tp: o for tp, o in w.pending.items() if tp in revoked}
            if offsets:
                w.commit(offsets, "on revoke")
        self._forget(revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._forget(lost)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        w = self.worker
        committed = w.checker.coordinator.committed(w.group, assigned)
        for tp in assigned:
            om = committed[tp]
            w.expected[tp] = om.offset if om is not None else 0

    def _forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.worker.pending.pop(tp, None)
            self.worker.expected.pop(tp, None)


class Worker:
    """One consumer in its own thread: poll, process, commit what it processed."""

    def __init__(self, name: str, group: str, assignor: str, store: logstore.Store, checker: GroupChecker,
                 processed: list[ProcessedRecord], join: Join) -> None:
        self.name = name
        self.group = group
        self.checker = checker
        self.processed = processed
        self.commit_every_batch = join.commit_every_batch
        self.commit_on_revoke = join.commit_on_revoke
        self.max_records = join.max_records
        self.pending: dict[TopicPartition, int] = {}  # processed, not committed: the offset to commit
        self.expected: dict[TopicPartition, int] = {}  # the offset the next record of a partition must have
        self.last_generation = -1
        self.running = True  # False once asked to leave or crash
        self.crash: str | None = None  # "after poll" | "after processing"
        self.leave = threading.Event()
        self.stall = threading.Event()
        self.slow_revoke = join.slow_revoke
        self.commit_requested = threading.Event()
        self.consumer = store.consumer(
            group_id=group, client_id=name, auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS, partition_assignment_strategy=assignor)
        self.consumer.subscribe([TOPIC], listener=Listener(self))
        self.thread = threading.Thread(target=self._run, name=f"group-model-{name}", daemon=True)

    def __repr__(self) -> str:
        return f"Worker({self.name}, member={self.consumer.member_id}, generation={self.consumer.generation})"

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:
            self.checker.violation(f"{self.name}: the worker died:\n{traceback.format_exc()}")
            self.consumer._abandon()

    def _loop(self) -> None:
        c = self.consumer
        while True:
            if self.leave.is_set():
                self._close()
                return
            records = c.poll(timeout=POLL_TIMEOUT_S, max_records=self.max_records)
            self.checker.on_poll(self, records, c.generation, c.member_id, c.assignment())
            if self.crash == "after poll":
                c._abandon()
                return
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                self.processed.append(ProcessedRecord(self.group, tp, r.offset, r.value, self.name))
                self.pending[tp] = r.offset + 1
            if self.crash == "after processing":
                c._abandon()
                return
            if self.stall.is_set():
                time.sleep(STALL_S)
                self.stall.clear()
            if self.pending and (self.commit_every_batch or self.commit_requested.is_set()):
                if self.commit(dict(self.pending), "after processing"):
                    self.commit_requested.clear()

    def commit(self, offsets: dict[TopicPartition, int], why: str) -> bool:
        must_refuse = self.checker.commit_must_be_refused(self, offsets)
        try:
            with self.checker.commit_lock:
                self.consumer.commit(offsets)
                self.checker.on_commit(self, offsets, why, must_refuse)
        except CommitFailedError as e:
            self.checker.on_commit_refused(self, offsets, e, why)
            return False
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]
        return True

    def _close(self) -> None:
        membership = self.consumer._group
        member = membership.member if membership is not None else None
        self.consumer.close()
        if member is not None:
            with self.checker.coordinator._lock:
                g = self.checker.coordinator._groups.get(self.group)
                if g is not None and member.member_id in g.members:
                    self.checker.violation(f"{self.name}: closed, yet member {member.member_id} is in {self.group}")

    def stop(self) -> None:
        self.running = False
        self.leave.set()
        self.consumer.wakeup()


# -- the driver -------------------------------------------------------------------------------------

class Run:
    """One example: the store, the workers, what was produced and processed."""

    def __init__(self, path: Path, partitions: int, eager_assignor: str) -> None:
        self.store = logstore.open(path, cleaner=False)
        self.store.create_topic(TOPIC, partitions)
        self.assignors = {COOP: "cooperative-sticky", EAGER: eager_assignor}
        self.checker = GroupChecker(self.store, GROUPS)
        self.producer = self.store.producer()
        self.produced: dict[TopicPartition, dict[int, bytes]] = defaultdict(dict)
        self.processed: list[ProcessedRecord] = []
        self.workers: list[Worker] = []
        self.sequence = 0
        self._produced_lock = threading.Lock()
        # a trickle of records to every partition while the ops run, so that members have records
        # in hand whenever a rebalance, crash or stall hits them
        self._trickle_stop = threading.Event()
        self._trickle = threading.Thread(target=self._trickle_loop, name="group-model-trickle", daemon=True)

    def running(self, group: str | None = None) -> list[Worker]:
        return [w for w in self.workers if w.running and (group is None or w.group == group)]

    def pick(self, index: int) -> Worker | None:
        running = self.running()
        return running[index % len(running)] if running else None

    def apply(self, op: Op) -> None:
        if isinstance(op, Join):
            if len(self.running(op.group)) < MAX_WORKERS_PER_GROUP:
                self.join(op)
        elif isinstance(op, Leave):
            if (w := self.pick(op.worker)) is not None:
                w.stop()
        elif isinstance(op, Crash):
            if (w := self.pick(op.worker)) is not None:
                w.running = False
                w.crash = "after processing" if op.after_processing else "after poll"
                w.consumer.wakeup()
        elif isinstance(op, Stall):
            if (w := self.pick(op.worker)) is not None:
                w.stall.set()
        elif isinstance(op, Commit):
            if (w := self.pick(op.worker)) is not None:
                w.commit_requested.set()
        elif isinstance(op, Produce):
            self.produce(op)
        elif isinstance(op, AddPartitions):
            current = self.store._partition_count(TOPIC) or 0
            if current < MAX_PARTITIONS:
                self.store.create_partitions(TOPIC, min(MAX_PARTITIONS, current + op.partitions))
        else:
            time.sleep(op.ms / 1000.0)

    def join(self, op: Join) -> Worker:
        w = Worker(f"{op.group}-{len(self.workers)}", op.group, self.assignors[op.group], self.store, self.checker,
                   self.processed, op)
        self.workers.append(w)
        self.checker.workers.append(w)
        w.thread.start()
        return w

    def produce(self, op: Produce) -> None:
        for i in range(op.records):
            self._send(self.producer, b"k%d" % (i % 5) if op.keyed else None, None)

    def _send(self, producer: logstore.Producer, key: bytes | None, partition: int | None) -> None:
        with self._produced_lock:
            value = b"v%d" % self.sequence
            self.sequence += 1
            meta = producer.send(TOPIC, value=value, key=key, partition=partition)
            self.produced[TopicPartition(TOPIC, meta.partition)][meta.offset] = value

    def start_trickle(self) -> None:
        self._trickle.start()

    def stop_trickle(self) -> None:
        self._trickle_stop.set()
        if self._trickle.ident is not None:
            self._trickle.join()

    def _trickle_loop(self) -> None:
        producer = self.store.producer()
        try:
            n = 0
            while not self._trickle_stop.wait(TRICKLE_INTERVAL_S):
                self._send(producer, None, n % (self.store._partition_count(TOPIC) or 1))
                n += 1
        except BaseException:
            self.checker.violation(f"the trickle producer died:\n{traceback.format_exc()}")
        finally:
            producer.close()

    # -- settling -------------------------------------------------------------------------------

    def settle(self) -> list[str]:
        """Stop producing and let the groups finish the work; returns why they did not within the deadline."""
        self.stop_trickle()
        for group in GROUPS:
            if not self.running(group):
                self.join(Join(group, commit_every_batch=True, commit_on_revoke=True, max_records=500))
        for w in self.running():
            w.commit_every_batch = True
            w.slow_revoke = False
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            problems = self.unsettled()
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.01)

    def unsettled(self) -> list[str]:
        problems = []
        count = self.store._partition_count(TOPIC) or 0
        tps = [TopicPartition(TOPIC, p) for p in range(count)]
        ends = {tp: self.store.end_offset(tp) for tp in tps}
        coordinator = self.checker.coordinator
        for group in GROUPS:
            live = {w.consumer.member_id for w in self.running(group)}
            with coordinator._lock:
                g = coordinator._groups.get(group)
                state = g.state if g is not None else None
                members = set(g.members) if g is not None else set()
                assigned = sorted(tp for m in (g.members.values() if g is not None else ()) for tp in m.assignment)
            if state != STABLE:
                problems.append(f"{group}: {state}")
            if members != live:
                problems.append(f"{group}: members {sorted(members)}, live workers {sorted(m or '-' for m in live)}")
            if assigned != tps:
                problems.append(f"{group}: assigned {assigned}, partitions {tps}")
            committed = coordinator.committed(group, tps)
            for tp in tps:
                om = committed[tp]
                if (om.offset if om is not None else 0) != ends[tp]:
                    problems.append(f"{group}: {tp} committed {om}, log end {ends[tp]}")
        return problems

    def check_outcome(self) -> None:
        """At-least-once: every produced record processed by each group, with its value; commits
        recorded by the checker are what the store holds."""
        checker = self.checker
        count = self.store._partition_count(TOPIC) or 0
        tps = [TopicPartition(TOPIC, p) for p in range(count)]
        for tp in tps:
            end = self.store.end_offset(tp)
            if sorted(self.produced.get(tp, {})) != list(range(end)):
                checker.violation(f"{tp}: produced offsets {sorted(self.produced.get(tp, {}))}, log end {end}")
        seen: dict[str, dict[TopicPartition, set[int]]] = {g: defaultdict(set) for g in GROUPS}
        for r in self.processed:
            if self.produced.get(r.tp, {}).get(r.offset) != r.value:
                checker.violation(f"{r.worker} processed {r.tp}@{r.offset} = {r.value!r}; produced "
                                  f"{self.produced.get(r.tp, {}).get(r.offset)!r}")
            seen[r.group][r.tp].add(r.offset)
        for group in GROUPS:
            committed = checker.coordinator.committed(group, tps)
            for tp in tps:
                lost = sorted(set(self.produced.get(tp, {})) - seen[group][tp])
                if lost:
                    checker.violation(f"{group}: {len(lost)} records of {tp} never processed: offsets {lost[:20]}")
                om = committed[tp]
                logged = checker.committed_log.get((group, tp))
                if (om.offset if om is not None else None) != logged:
                    checker.violation(f"{group}: the store has {tp} committed at {om}, the commits made say {logged}")
        checker.check_polls_against_snapshots()

    def shutdown(self) -> None:
        self.stop_trickle()
        for w in self.running():
            w.stop()
        for w in self.workers:
            w.thread.join(timeout=10)
            if w.thread.is_alive():
                self.checker.violation(f"{w.name}: its thread did not end")
        self.checker.stop()
        self.producer.close()
        self.store.close()


@contextmanager
def started(run: Run) -> Iterator[Run]:
    run.checker.start()
    run.start_trickle()
    try:
        yield run
    finally:
        run.shutdown()


def describe(ops: Sequence[Op], run: Run, problems: Sequence[str]) -> str:
    lines = [f"{len(run.checker.violations)} violation(s):"]
    lines += [f"  - {v}" for v in run.checker.violations]
    if problems:
        lines.append(f"the groups did not settle within {SETTLE_TIMEOUT_S} s:")
        lines += [f"  - {p}" for p in problems]
    checker = run.checker
    lines.append(f"{run.sequence} records produced, {checker.commits} commits stored and {checker.refused_commits} "
                 f"refused, generations reached {dict(checker.max_generation)}")
    lines.append(f"eager assignor {run.assignors[EAGER]}; ops:")
    lines += [f"  {i:2d}. {op!r}" for i, op in enumerate(ops)]
    return "\n".join(lines)


# Shrinking a failing run replays it many times with real timeouts; a failure is reported as found
# unless LOGSTORE_SHRINK=1 asks for a minimal op sequence.
PHASES = tuple(Phase) if os.environ.get("LOGSTORE_SHRINK") else tuple(p for p in Phase if p != Phase.shrink)


@settings(max_examples=40, deadline=None, phases=PHASES, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(partitions=st.integers(1, 6), eager_assignor=st.sampled_from(["range", "roundrobin", "sticky"]),
       ops=SCENARIOS)
def test_consumer_groups_against_model(tmp_path: Path, partitions: int, eager_assignor: str, ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as path:
        run = Run(Path(path), partitions, eager_assignor)
        problems: list[str] = []
        with started(run):
            for i, op in enumerate(ops):
                run.checker.current_op = i
                run.apply(op)
                time.sleep(OP_GAP_S)
                run.checker.observe()
            run.checker.current_op = len(ops)
            problems = run.settle()
            run.checker.observe()
            run.check_outcome()
        assert not run.checker.violations and not problems, describe(ops, run, problems)
