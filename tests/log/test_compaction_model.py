"""Model-based test of compaction: a hypothesis state machine appends keyed records (tombstones
and null keys included, timestamps chosen), rolls, moves the high watermark, truncates the tail,
compacts with random clocks and settings (a small key map included), reopens (cleanly or not),
and after every step
checks what a reader sees from the log start against the list of every record appended:

* offsets strictly increase and every visible record is the one appended at its offset;
* a record is missing only if some pass was allowed to remove it: it was below that pass's
  ``clean_upto`` and either a later record with its key was too, or it is a tombstone older than
  that pass's horizon (now - delete_retention_ms); null keys never go. So each key's latest
  record stays unless it is such a tombstone;
* after a pass, below its ``clean_upto`` no key appears twice and no expired tombstone is left;
* after a full compaction (everything sealed and below the high watermark) exactly what the
  rules keep is left.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from logstore import PartitionLog
from logstore.log.compaction import compact

KEYS = [b"k%d" % i for i in range(10)]


@dataclass(frozen=True)
class Pass:
    clean_upto: int
    horizon: int


def read_all(log: PartitionLog) -> list[tuple]:
    offset, out = log.log_start_offset, []
    while offset < log.log_end_offset:
        view = log.read(offset, max_bytes=512)
        assert view.next_offset > offset
        out.extend((r.offset, r.timestamp, r.key, r.value) for r in view)
        offset = view.next_offset
    return out


# (key, value, timestamp): a null key now and then, a tombstone about one time in three
record = st.tuples(st.sampled_from([*KEYS, None]),
                   st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=1, max_size=8)),
                   st.integers(0, 1000))


class CompactionModel(RuleBasedStateMachine):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.log: PartitionLog | None = None
        self.records: list[tuple] = []   # (offset, timestamp, key, value): everything appended
        self.passes: list[Pass] = []
        self.now = 1000

    @initialize(segment_bytes=st.sampled_from([300, 700, 2000]), index_interval=st.sampled_from([0, 100, 400]))
    def open(self, segment_bytes: int, index_interval: int) -> None:
        self.cfg = dict(segment_bytes=segment_bytes, index_interval_bytes=index_interval, max_index_bytes=1024,
                        flush="never")
        self.log = PartitionLog.open(self.path, **self.cfg)

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close()

    # -- operations ------------------------------------------------------------------------------

    @rule(batch=st.lists(record, min_size=1, max_size=6), single=st.booleans())
    def append(self, batch: list[tuple], single: bool) -> None:
        first = self.log.log_end_offset
        if single:
            for key, value, ts in batch:
                self.log.append(value, key=key, timestamp=ts)
        else:
            self.log.append_many([v for _, v, _ in batch], keys=[k for k, _, _ in batch],
                                 timestamps=[t for _, _, t in batch])
        self.records.extend((first + i, ts, key, value) for i, (key, value, ts) in enumerate(batch))

    @rule(n=st.integers(5, 60), seed=st.integers(0, 2**32 - 1), per_batch=st.integers(1, 12))
    def bulk_append(self, n: int, seed: int, per_batch: int) -> None:
        """Many records at once (drawn from a seeded generator: cheap to shrink)."""
        rng = random.Random(seed)
        batch = [(rng.choice([*KEYS, None]), None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 30)),
                  rng.randint(0, 1000)) for _ in range(n)]
        for i in range(0, n, per_batch):
            self.append(batch[i:i + per_batch], single=False)

    @rule(fraction=st.floats(0, 1))
    def truncate(self, fraction: float) -> None:
        """Replication-style truncation of the uncleaned tail (compacted data counts as committed:
        it was below the high watermark, and a log is never cut below what it committed)."""
        floor = max((p.clean_upto for p in self.passes), default=0)
        offset = max(floor, int(self.log.log_end_offset * fraction))
        if offset < self.log.log_end_offset:
            leo = self.log.truncate_to(offset)
            assert floor <= leo <= offset
            del self.records[leo:]

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(fraction=st.floats(0, 1))
    def set_high_watermark(self, fraction: float) -> None:
        self.log.set_high_watermark(int(self.log.log_end_offset * fraction))

    @rule(advance=st.integers(0, 400), retention=st.sampled_from([0, 150, 600, 10**6]),
          map_records=st.sampled_from([1, 2, 5, 4_000_000]), lag=st.sampled_from([0, 0, 200]), seal=st.booleans())
    def compact(self, advance: int, retention: int, map_records: int, lag: int, seal: bool) -> None:
        if seal:  # everything so far becomes cleanable
            self.log.roll()
            self.log.set_high_watermark(self.log.log_end_offset)
        self.now += advance
        stats = compact(self.log, now=self.now, delete_retention_ms=retention, max_map_records=map_records,
                        min_compaction_lag_ms=lag)
        if stats.segments_before:
            assert stats.complete and stats.groups_aborted == 0
            self.passes.append(Pass(stats.clean_upto, self.now - retention))
            self.check_clean_below(stats.clean_upto, self.now - retention)

    @rule(retention=st.sampled_from([0, 150, 600, 10**6]))
    def full_compaction(self, retention: int) -> None:
        self.log.roll()
        self.log.set_high_watermark(self.log.log_end_offset)
        stats = compact(self.log, now=self.now, delete_retention_ms=retention)
        end = self.log.log_end_offset
        if stats.segments_before:
            assert stats.clean_upto == end
            self.passes.append(Pass(end, self.now - retention))
        horizon = self.now - retention
        latest = {r[2]: r[0] for r in self.records if r[2] is not None}
        expect = [r for r in self.records
                  if r[2] is None or (latest[r[2]] == r[0] and not (r[3] is None and r[1] < horizon))]
        if any(p.horizon > horizon for p in self.passes):
            # an earlier pass had a later horizon: it may have removed tombstones this one keeps
            expect_set = {r[0] for r in expect}
            got = read_all(self.log)
            assert {r[0] for r in got} <= expect_set
            assert all(r[3] is None for r in expect if r[0] not in {g[0] for g in got})
        else:
            assert read_all(self.log) == expect

    @precondition(lambda self: self.log is not None)
    @rule(unclean=st.booleans())
    def reopen(self, unclean: bool) -> None:
        self.log.close()
        if unclean:
            os.unlink(os.path.join(self.path, ".clean_shutdown"))
        self.log = PartitionLog.open(self.path, **self.cfg)
        assert not self.log.recovery.cut
        assert self.log.log_end_offset == len(self.records)

    # -- checks ------------------------------------------------------------------------------------

    def check_clean_below(self, upto: int, horizon: int) -> None:
        below = [r for r in read_all(self.log) if r[0] < upto]
        keys = [r[2] for r in below if r[2] is not None]
        assert len(keys) == len(set(keys)), "a key appears twice below clean_upto after a pass"
        assert not [r for r in below if r[2] is not None and r[3] is None and r[1] < horizon], \
            "an expired tombstone survived a pass"

    @invariant()
    def reader_sees_only_allowed_records(self) -> None:
        if self.log is None:
            return
        got = read_all(self.log)
        offsets = [r[0] for r in got]
        assert offsets == sorted(set(offsets))
        assert self.log.log_end_offset == len(self.records)
        for r in got:
            assert r == self.records[r[0]], f"offset {r[0]} holds something else"
        visible = set(offsets)
        later_by_key: dict[bytes, list[int]] = {}
        for r in self.records:
            if r[2] is not None:
                later_by_key.setdefault(r[2], []).append(r[0])
        for r in self.records:
            if r[0] in visible:
                continue
            assert r[2] is not None, f"a record with a null key (offset {r[0]}) is gone"
            newer = [o for o in later_by_key[r[2]] if o > r[0]]
            allowed = any(r[0] < p.clean_upto and ((newer and newer[0] < p.clean_upto)
                                                   or (r[3] is None and r[1] < p.horizon))
                          for p in self.passes)
            assert allowed, f"offset {r[0]} ({r[2]!r}) was removed though no pass could remove it"


def test_compaction_against_model(tmp_path):
    counter = iter(range(10**6))

    class Machine(CompactionModel):
        def __init__(self) -> None:
            super().__init__(str(tmp_path / f"log-{next(counter)}"))

    examples = int(os.environ.get("LOGSTORE_COMPACTION_EXAMPLES", "40"))  # more for a longer search
    run_state_machine_as_test(Machine, settings=settings(max_examples=examples, stateful_step_count=40, deadline=None,
                                                         suppress_health_check=[HealthCheck.too_slow]))
