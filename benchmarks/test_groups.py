"""Benchmarks of consumer groups (issue 4): rebalance time, group poll + commit throughput, commit latency.

Rebalance (group ``rebalance``): a store with one topic of 100 partitions (empty: the rebalance's
own cost, no fetching) and a group of 10 members, each a consumer polling in its own thread
(``poll(timeout=0.5)`` in a loop, as an application would). A trigger is either an 11th member
joining (the time is taken right before its first ``poll``, which joins) or one of the 10
leaving (right before its ``close()``, which revokes, commits and leaves). The main thread waits on
the store's notifier (the coordinator wakes it at every state change) until the group *settled*:
the coordinator's group is Stable, its members are exactly the live consumers, every consumer's
``generation`` is the group's and its ``assignment()`` is what the coordinator gave it, and the
100 partitions are all assigned, once each. That time - the trigger's is one sample. Between two
samples the group is put back to 10 members (untimed). For cooperative-sticky a join takes two
rounds when partitions move (revoke, then assign); the generations a rebalance took are reported.
100 rebalances per case (quick: 3, of 4 members x 20 partitions). Floor: <= 10 ms (median and p99
reported). At the end the members are abandoned (they stop without leaving: no rebalance each).

Throughput (group ``groups: poll + commit``): a topic of 1 and one of 8 partitions holding the same
``sizes.read_records`` standard records written by ``producer.send`` (as test_consumer.py). A round
seeks to the beginning (untimed) and polls (``timeout=0``, ``max_poll_records`` 500) until the topic
is drained. Three consumers on the same data in the same run: no group (``assign`` of every
partition: the baseline), a group member owning every partition (``enable_auto_commit=False``),
and the same member calling ``commit()`` after every poll (every 500 records; ``commit()`` stores
the position of every assigned partition: 1 or 8 offsets per call). The notes give the group
cases' rate as a share of the baseline of the same partition count in the same run (the
overhead of groups). Floor: poll + commit >= 3 M records/s.

Commit latency (group ``groups: commit latency``): ``commit()`` of a member owning 1 or 8
partitions, each call timed alone (``perf_counter_ns``), in a store opened with
``topic_defaults={"flush": ...}`` "interval" (the default: the offsets topic is fsynced every
second) and "always" (every commit waits for its fsync). The "always" case also times the
device floor in the same run: ``os.write`` + ``os.fdatasync`` of one commit's bytes to a plain
file. Floor: p99 <= 1 ms. A diagnostic (group ``groups: concurrent durable commits``) has 1 and 4
threads commit at once (each a member of its own group) with flush "always", next to as many
threads appending one-record batches to a flush "always" topic: whether commits share fsyncs
(group commit) as appends do.

Run: ``PYTHONPATH=src python -m pytest benchmarks/test_groups.py -p no:cacheprovider`` (~1 min);
``--benchmark-disable`` is the quick smoke (.ci/bench-quick).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import Consumer, Store, TopicPartition

from .conftest import Reporter, Sizes
from .report import Row
from .workload import Workload

# -- rebalance ------------------------------------------------------------------------------------

MEMBERS = 10
REBALANCE_PARTITIONS = 100
QUICK_MEMBERS, QUICK_PARTITIONS = 4, 20  # quick mode: creating 100 partitions alone takes ~1 s
REBALANCES = 100
QUICK_REBALANCES = 3
TARGET_REBALANCE_MS = 10.0
MEMBER_POLL_S = 0.5
SETTLE_TIMEOUT_S = 30.0
STRATEGIES = ("cooperative-sticky", "range")
TRIGGERS = ("join", "leave")
GROUP = "bench"
REBALANCE_TOPIC = "rebalance"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Member(threading.Thread):
    """A group member polling in its own thread until told to leave; it notes the time right
    before the call that triggers a rebalance: its first poll (join) or its close (leave)."""

    def __init__(self, store: Store, strategy: str, name: str) -> None:
        super().__init__(name=f"bench-member-{name}", daemon=True)
        self.consumer: Consumer = store.consumer(REBALANCE_TOPIC, group_id=GROUP, client_id=name,
                                                 auto_offset_reset="earliest",
                                                 partition_assignment_strategy=strategy)
        self.leaving = False
        self.abandoning = False  # teardown: stop without leaving (no rebalance per member)
        self.joined_at = 0.0
        self.left_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        consumer = self.consumer
        try:
            self.joined_at = time.perf_counter()
            while not self.leaving:
                consumer.poll(MEMBER_POLL_S)
            if self.abandoning:
                consumer._abandon()
                return
            self.left_at = time.perf_counter()
            consumer.close()
        except BaseException as e:  # reported by the main thread
            self.error = e

    def leave(self) -> None:
        """Ask the thread to close its consumer (it notes the time before ``close``); returns at once."""
        self.leaving = True
        self.consumer.wakeup()


@dataclass
class RebalanceResult:
    samples_ms: list[float]
    generations: list[int]  # how many generations (rounds) each rebalance took
    sizes: Counter[int] = field(default_factory=Counter)  # partitions per member once settled, over all samples

    def quantile(self, q: float) -> float:
        return percentile(sorted(self.samples_ms), q)


class GroupHarness:
    """A store, the 100-partition topic, and the live members of the group."""

    def __init__(self, path: Path, strategy: str, partitions: int) -> None:
        self.store = logstore.open(path)
        self.store.create_topic(REBALANCE_TOPIC, partitions)
        self.partitions = partitions
        self.coordinator = self.store._group_coordinator()
        self.strategy = strategy
        self.members: list[Member] = []  # live: not asked to leave
        self.started: list[Member] = []

    def add(self) -> Member:
        member = Member(self.store, self.strategy, f"m{len(self.started)}")
        self.started.append(member)
        self.members.append(member)
        member.start()
        return member

    def remove(self, member: Member) -> None:
        self.members.remove(member)
        member.leave()

    def _settled(self) -> tuple[int, list[int]] | None:
        """(generation, partitions per member) once the group settled, else None."""
        with self.coordinator._lock:
            group = self.coordinator._groups.get(GROUP)
            if group is None or group.state != "Stable":
                return None
            generation = group.generation
            assigned = {mid: state.assignment for mid, state in group.members.items()}
        live = {m.consumer.member_id: m for m in self.members}
        if set(assigned) != set(live):
            return None
        taken = [tp for tps in assigned.values() for tp in tps]
        if len(taken) != self.partitions or len(set(taken)) != self.partitions:
            return None
        for member in self.members:
            consumer = member.consumer
            given = assigned.get(consumer.member_id or "", frozenset())
            if consumer.generation != generation or consumer.assignment() != given:
                return None
        return generation, [len(tps) for tps in assigned.values()]

    def wait_settled(self) -> tuple[float, int, list[int]]:
        """Blocks until the group settled: (perf_counter then, generation, partitions per member)."""
        notifier = self.store._notifier
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            seen = notifier.current_version
            found = self._settled()
            if found is not None:
                return time.perf_counter(), found[0], found[1]
            for m in self.members:
                if m.error is not None:
                    raise AssertionError(f"member {m.name} failed: {m.error!r}") from m.error
            if time.monotonic() > deadline:
                group = self.coordinator._groups.get(GROUP)
                raise AssertionError(f"the group did not settle within {SETTLE_TIMEOUT_S} s: "
                                     f"{group.state if group else None}, {group.members if group else None}")
            notifier.wait(seen, 0.05)

    def close(self) -> None:
        for m in self.members:
            m.abandoning = True
            m.leave()
        for m in self.started:
            m.join(SETTLE_TIMEOUT_S)
        self.store.close()


def measure_rebalances(path: Path, strategy: str, trigger: str, count: int, members: int = MEMBERS,
                       partitions: int = REBALANCE_PARTITIONS) -> RebalanceResult:
    """``count`` rebalances of a group of ``members`` (10) triggered by one more member joining, or
    one of them leaving; the group is brought back to ``members`` (untimed) between them."""
    harness = GroupHarness(path, strategy, partitions)
    result = RebalanceResult([], [])
    try:
        for _ in range(members):
            harness.add()
        _, generation, _ = harness.wait_settled()
        for _ in range(count):
            if trigger == "join":
                member = harness.add()
                settled_at, new_generation, sizes = harness.wait_settled()
                started_at = member.joined_at
                harness.remove(member)  # back to 10
            else:
                member = harness.members[0]
                harness.remove(member)
                settled_at, new_generation, sizes = harness.wait_settled()
                member.join(SETTLE_TIMEOUT_S)
                started_at = member.left_at
                harness.add()  # back to 10
            assert started_at > 0, "the trigger's time was not taken"
            result.samples_ms.append((settled_at - started_at) * 1e3)
            result.generations.append(new_generation - generation)
            result.sizes.update(sizes)
            _, generation, _ = harness.wait_settled()
    finally:
        harness.close()
    return result


@pytest.mark.benchmark(group="rebalance")
@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rebalance(benchmark: Any, report: Reporter, sizes: Sizes, tmp_path: Path, strategy: str,
                   trigger: str) -> None:
    """Rebalances of 10 members x 100 partitions: trigger -> every member has its new assignment."""
    count, members, partitions = ((QUICK_REBALANCES, QUICK_MEMBERS, QUICK_PARTITIONS) if sizes.quick
                                  else (REBALANCES, MEMBERS, REBALANCE_PARTITIONS))
    results: list[RebalanceResult] = []
    benchmark.pedantic(lambda: results.append(measure_rebalances(tmp_path / "store", strategy, trigger, count,
                                                                 members, partitions)),
                       rounds=1, iterations=1)
    res = results[-1]
    assert len(res.samples_ms) == count and all(s > 0 for s in res.samples_ms)
    assert all(g >= 1 for g in res.generations), res.generations
    after = members + 1 if trigger == "join" else members - 1
    # balanced: every member ends with floor(partitions / n) or ceil(partitions / n) partitions
    assert set(res.sizes) <= {partitions // after, -(-partitions // after)}, res.sizes
    assert sum(res.sizes.values()) == after * count
    rounds = Counter(res.generations)
    p50, p99 = res.quantile(0.5), res.quantile(0.99)
    benchmark.extra_info.update(samples_ms=res.samples_ms, generations=res.generations, p50_ms=p50, p99_ms=p99)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, no row
        return
    what = "an 11th member joins" if trigger == "join" else "1 of 10 members leaves"
    spread = ", ".join(f"{n} generation{'s' if n > 1 else ''}: {k}" for n, k in sorted(rounds.items()))
    note = (f"p90 {res.quantile(0.9):.2f} ms, max {max(res.samples_ms):.2f} ms; {count} rebalances; "
            f"{spread}")
    name = f"rebalance, {strategy}, {what}, 10 members x 100 partitions"
    best = min(res.samples_ms)
    report.add(Row(name + ": median", p50, best, "ms", TARGET_REBALANCE_MS, False, note))
    report.add(Row(name + ": p99", p99, best, "ms", TARGET_REBALANCE_MS, False))


# -- poll + commit throughput ---------------------------------------------------------------------

TARGET_COMMIT_MRPS = 3.0
PARTITION_COUNTS = (1, 8)
THROUGHPUT_MODES = ("no group", "group", "group + commit/500")
WARMUP_ROUNDS = 2


@dataclass
class Topic:
    name: str
    partitions: int
    records: int


@pytest.fixture(scope="module")
def group_data(sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[int, Topic]]]:
    """A store with a 1- and an 8-partition topic of the same keyed records (producer.send)."""
    path = tmp_path_factory.mktemp("groups") / "store"
    wl = Workload(sizes.read_records, seed=7)
    store = logstore.open(path)
    try:
        topics = {}
        with store.producer() as producer:
            for partitions in PARTITION_COUNTS:
                name = f"group-read-{partitions}"
                store.create_topic(name, partitions)
                for value, key in zip(wl.values, wl.keys):
                    producer.send(name, value, key)
                topics[partitions] = Topic(name, partitions, wl.n)
        store.flush()
        yield store, topics
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


# the no-group baseline's median rate of this session, by partition count (for the notes)
_BASELINE: dict[int, float] = {}


def consumer_for(store: Store, topic: Topic, mode: str) -> Consumer:
    if mode == "no group":
        consumer = store.consumer(auto_offset_reset="earliest")
        consumer.assign([TopicPartition(topic.name, p) for p in range(topic.partitions)])
        return consumer
    consumer = store.consumer(topic.name, group_id=f"tp-{topic.partitions}-{mode}", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    consumer.poll(0.0, 1)  # joins: the only member gets every partition at once
    expected = {TopicPartition(topic.name, p) for p in range(topic.partitions)}
    assert consumer.assignment() == expected, consumer.assignment()
    return consumer


@pytest.mark.benchmark(group="groups: poll + commit")
@pytest.mark.parametrize(("partitions", "mode"), [(p, m) for p in PARTITION_COUNTS for m in THROUGHPUT_MODES])
def test_group_poll_commit(benchmark: Any, report: Reporter, sizes: Sizes, group_data: tuple[Store, dict[int, Topic]],
                           partitions: int, mode: str) -> None:
    """poll(timeout=0) until the topic is drained; "commit/500": commit() after every poll."""
    store, topics = group_data
    topic = topics[partitions]
    consumer = consumer_for(store, topic, mode)
    commit = mode.endswith("commit/500")

    def run() -> int:
        poll = consumer.poll
        n = 0
        records = poll(0.0)
        while records:
            n += len(records)
            if commit:
                consumer.commit()
            records = poll(0.0)
        return n

    counts: list[int] = []
    timing = {"rounds": 1, "warmup_rounds": 0} if sizes.quick else {"rounds": sizes.read_rounds,
                                                                     "warmup_rounds": WARMUP_ROUNDS}
    benchmark.pedantic(lambda: counts.append(run()), setup=consumer.seek_to_beginning, **timing)
    assert counts and all(n == topic.records for n in counts), counts
    tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    ends = {tp: store.end_offset(tp) for tp in tps}
    assert sum(ends.values()) == topic.records
    if commit:  # the last commit of the last round stored every partition's end
        committed = consumer.committed(tps)
        assert {tp: om.offset for tp, om in committed.items() if om is not None} == ends, committed
    consumer.close()
    st = benchmark.stats.stats if benchmark.stats is not None else None
    if st is None:
        return
    rate = topic.records / st.median
    note = ""
    if mode == "no group":
        _BASELINE[partitions] = rate
    elif partitions in _BASELINE:
        note = f"{rate / _BASELINE[partitions]:.0%} of the no-group consumer's rate in this session"
    report.rate(f"{mode}: poll, {partitions} partition{'s' if partitions > 1 else ''}, max_records=500",
                topic.records, target_mrps=TARGET_COMMIT_MRPS if commit else None, note=note)


# -- commit latency -------------------------------------------------------------------------------

TARGET_COMMIT_P99_US = 1000.0
FLUSH_MODES = ("interval", "always")
COMMITS = {"interval": 20_000, "always": 2_000}
QUICK_COMMITS = 50
COMMIT_WARMUP = 200
COMMIT_TOPIC_RECORDS = 10  # per partition: positions above 0


@dataclass
class LatencyResult:
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def of(cls, values_ns: list[int]) -> LatencyResult:
        us = sorted(v / 1e3 for v in values_ns)
        return cls(len(us), percentile(us, 0.5), percentile(us, 0.9), percentile(us, 0.99), percentile(us, 0.999),
                   us[-1])


def measure_commits(path: Path, flush: str, partitions: int, calls: int, warmup: int) -> tuple[LatencyResult, int]:
    """``calls`` timed ``commit()`` calls of a member owning ``partitions`` partitions; returns
    the latencies and the offsets topic's growth in records (checked by the caller)."""
    store = logstore.open(path, topic_defaults={"flush": flush})
    try:
        topic = f"commit-{partitions}"
        store.create_topic(topic, partitions)
        with store.producer() as producer:
            for p in range(partitions):
                for i in range(COMMIT_TOPIC_RECORDS):
                    producer.send(topic, b"v%d" % i, partition=p)
        consumer = store.consumer(topic, group_id="commit-latency", auto_offset_reset="earliest",
                                  enable_auto_commit=False)
        got = 0
        while got < partitions * COMMIT_TOPIC_RECORDS:
            got += len(consumer.poll(1.0))
        offsets_log = store.partition_log(TopicPartition("__consumer_offsets", 0))
        assert offsets_log.config.flush == flush
        commit = consumer.commit
        for _ in range(warmup):
            commit()
        before = offsets_log.log_end_offset
        clock = time.perf_counter_ns
        times = [0] * calls
        for i in range(calls):
            t0 = clock()
            commit()
            times[i] = clock() - t0
        grown = offsets_log.log_end_offset - before
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(tps)
        assert all(committed[tp] is not None and committed[tp].offset == COMMIT_TOPIC_RECORDS for tp in tps), committed
        consumer.close()
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    return LatencyResult.of(times), grown


def measure_fsync_floor(path: Path, nbytes: int, calls: int) -> LatencyResult:
    """The device floor of a durable commit: write + fdatasync of ``nbytes`` to a plain file."""
    data = os.urandom(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = [0] * calls
    clock = time.perf_counter_ns
    try:
        for i in range(calls):
            t0 = clock()
            os.write(fd, data)
            os.fdatasync(fd)
            times[i] = clock() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return LatencyResult.of(times)


@pytest.mark.benchmark(group="groups: commit latency")
@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
@pytest.mark.parametrize("flush", FLUSH_MODES)
def test_commit_latency(benchmark: Any, report: Reporter, sizes: Sizes, tmp_path: Path, flush: str,
                        partitions: int) -> None:
    """commit() of 1 or 8 partitions, each call timed; offsets topic flush "interval" or "always"."""
    calls, warmup = (QUICK_COMMITS, 5) if sizes.quick else (COMMITS[flush], COMMIT_WARMUP)
    results: list[tuple[LatencyResult, int]] = []
    benchmark.pedantic(lambda: results.append(measure_commits(tmp_path / "store", flush, partitions, calls, warmup)),
                       rounds=1, iterations=1)
    res, grown = results[-1]
    assert res.samples == calls and 0 < res.p50_us <= res.p99_us <= res.max_us
    assert grown == calls * partitions, (grown, calls, partitions)  # one record per partition per commit
    benchmark.extra_info.update(latency=res.__dict__)
    floor = None
    if flush == "always":
        # one commit's batch: ~61 bytes of header + ~50 bytes per offset record
        floor = measure_fsync_floor(tmp_path / "floor", 61 + 50 * partitions, calls)
        benchmark.extra_info.update(fsync_floor=floor.__dict__)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, no row
        return
    name = f"commit() latency p99, {partitions} partition{'s' if partitions > 1 else ''}, flush={flush}"
    note = (f"p50 {res.p50_us:.1f} us, p90 {res.p90_us:.1f} us, p99.9 {res.p999_us:,.0f} us, "
            f"max {res.max_us:,.0f} us; {calls:,} commits")
    report.add(Row(name, res.p99_us, res.p99_us, "us", TARGET_COMMIT_P99_US, False, note))
    if floor is not None:
        report.add(Row(f"floor: os.write + os.fdatasync of one commit's bytes, p99 (no logstore; {partitions} "
                       f"partition{'s' if partitions > 1 else ''})", floor.p99_us, floor.p99_us, "us", None, False,
                       f"p50 {floor.p50_us:.1f} us, p99.9 {floor.p999_us:,.0f} us, max {floor.max_us:,.0f} us"))



# -- concurrent durable commits -------------------------------------------------------------------

CONCURRENT_COMMITS = 300  # per thread
COMMIT_THREADS = (1, 4)


def measure_concurrent(path: Path, threads: int, calls: int) -> tuple[float, float]:
    """commits/s of ``threads`` members (each of its own group) committing at once with
    flush="always", and appends/s of as many threads doing one-record ``append_many`` to a plain
    flush="always" log: what group commit gives the same number of writers."""
    store = logstore.open(path, topic_defaults={"flush": "always"})
    try:
        store.create_topic("concurrent", 1)
        store.producer().send("concurrent", b"x")
        consumers = []
        for i in range(threads):
            consumer = store.consumer("concurrent", group_id=f"concurrent-{i}", enable_auto_commit=False,
                                      auto_offset_reset="earliest")
            while not consumer.poll(1.0):
                pass
            consumers.append(consumer)
        plog = store.partition_log(TopicPartition("concurrent", 0))
        offsets_log = store.partition_log(TopicPartition("__consumer_offsets", 0))

        def timed(work: list[Callable[[], None]]) -> float:
            workers = [threading.Thread(target=w) for w in work]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return threads * calls / (time.perf_counter() - start)

        def committer(consumer: Consumer) -> Callable[[], None]:
            def commit_many() -> None:
                for _ in range(calls):
                    consumer.commit()
            return commit_many

        def append_many() -> None:
            for _ in range(calls):
                plog.append_many([b"x"], keys=[b"k"])

        before = offsets_log.log_end_offset
        commit_rate = timed([committer(c) for c in consumers])
        assert offsets_log.log_end_offset - before == threads * calls
        before = plog.log_end_offset
        append_rate = timed([append_many] * threads)
        assert plog.log_end_offset - before == threads * calls
        for consumer in consumers:
            consumer.close()
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    return commit_rate, append_rate


@pytest.mark.benchmark(group="groups: concurrent durable commits")
@pytest.mark.parametrize("threads", COMMIT_THREADS)
def test_concurrent_commits_always(benchmark: Any, report: Reporter, sizes: Sizes, tmp_path: Path,
                                   threads: int) -> None:
    """Diagnostic: do concurrent durable commits share fsyncs (group commit) as appends do?"""
    calls = 10 if sizes.quick else CONCURRENT_COMMITS
    results: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: results.append(measure_concurrent(tmp_path / "store", threads, calls)),
                       rounds=1, iterations=1)
    commit_rate, append_rate = results[-1]
    benchmark.extra_info.update(commits_per_s=commit_rate, appends_per_s=append_rate)
    if benchmark.stats is None:
        return
    label = f"{threads} thread{'s' if threads > 1 else ''}"
    report.add(Row(f"flush=always, {label} committing at once (each its own group), commits/s", commit_rate,
                   commit_rate, "/s", None, True, "diagnostic"))
    report.add(Row(f"flush=always, {label} appending 1-record batches at once (no group), appends/s", append_rate,
                   append_rate, "/s", None, True, "diagnostic: group commit"))
