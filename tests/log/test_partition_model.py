"""Model-based test of PartitionLog: a hypothesis state machine drives a real log with a small
config (so segments roll, indexes fill and retention has something to delete) next to a plain
in-memory model, and checks after every step that both agree.

The model is a list of batches, each a list of records ``(offset, timestamp, key, value, headers)``
with the leader epoch it was stamped with, plus log start offset, high watermark and log end offset.
Batch boundaries of ``append``/``append_many`` are predicted from the Kafka v2 record sizes (greedy
packing up to ``max_record_bytes``), so the encoder's sizing is checked too.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from logstore import PartitionLog, errors

BATCH_HEADER = 61


# -- record sizing (Kafka record batch v2) -----------------------------------------------------

def varint_size(v: int) -> int:
    z = ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF
    n = 1
    while z >= 0x80:
        z >>= 7
        n += 1
    return n


def bytes_field(b: bytes | None) -> int:
    return varint_size(-1) if b is None else varint_size(len(b)) + len(b)


def record_size(ts_delta: int, offset_delta: int, key, value, headers) -> int:
    body = 1 + varint_size(ts_delta) + varint_size(offset_delta) + bytes_field(key) + bytes_field(value)
    headers = headers or []
    body += varint_size(len(headers))
    for hk, hv in headers:
        kb = hk.encode("utf-8")
        body += varint_size(len(kb)) + len(kb) + bytes_field(hv)
    return varint_size(body) + body


def plan_batches(records: list[tuple], max_bytes: int) -> list[list[tuple]] | None:
    """Greedy split of ``records`` (ts, key, value, headers) into batches of at most ``max_bytes``;
    None if some record does not fit a batch of its own."""
    for ts, k, v, h in records:
        if BATCH_HEADER + record_size(0, 0, k, v, h) > max_bytes:
            return None
    out: list[list[tuple]] = []
    i = 0
    while i < len(records):
        base_ts = records[i][0]
        total = BATCH_HEADER
        batch = []
        for j in range(i, len(records)):
            ts, k, v, h = records[j]
            size = record_size(ts - base_ts, j - i, k, v, h)
            if batch and total + size > max_bytes:
                break
            batch.append(records[j])
            total += size
        out.append(batch)
        i += len(batch)
    return out


# -- strategies --------------------------------------------------------------------------------

small_bytes = st.binary(max_size=40)
values = st.one_of(st.none(), st.just(b""), small_bytes, st.binary(min_size=100, max_size=300))
# sometimes larger than a small max_record_bytes: the whole append must then be rejected
large_values = st.binary(min_size=900, max_size=2500)
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=16))
header_lists = st.one_of(
    st.none(),
    st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=12))), max_size=3),
)
timestamps = st.integers(min_value=0, max_value=2**41)

_ids = itertools.count()


class PartitionModel(RuleBasedStateMachine):
    base_dir: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.log: PartitionLog | None = None
        self.source: PartitionLog | None = None
        self.dirs: list[str] = []

    # -- setup / teardown ---------------------------------------------------------------------

    def _new_dir(self, tag: str) -> str:
        d = os.path.join(self.base_dir, f"{tag}-{next(_ids)}")
        self.dirs.append(d)
        return d

    @initialize(
        segment_bytes=st.integers(4096, 16384),
        index_interval_bytes=st.integers(0, 512),
        max_index_bytes=st.integers(64, 400),
        max_record_bytes=st.sampled_from([512, 1024, 2048, 4096]),
        retention_bytes=st.one_of(st.none(), st.integers(0, 60000)),
        initial_epoch=st.integers(0, 3),
    )
    def setup(self, segment_bytes, index_interval_bytes, max_index_bytes, max_record_bytes,
              retention_bytes, initial_epoch):
        self.cfg = dict(segment_bytes=segment_bytes, index_interval_bytes=index_interval_bytes,
                        max_index_bytes=max_index_bytes, max_record_bytes=max_record_bytes,
                        retention_bytes=retention_bytes, segment_ms=None, flush="never")
        self.path = self._new_dir("log")
        self.log = PartitionLog.open(self.path, **self.cfg)
        self.source = PartitionLog.open(self._new_dir("src"), flush="never",
                                        max_record_bytes=max_record_bytes)
        self.log.set_leader_epoch(initial_epoch)
        # model
        self.batches: list[dict] = []  # {"epoch": e, "records": [(off, ts, key, value, headers)]}
        self.log_start = 0
        self.hw = 0
        self.leo = 0
        self.epoch = initial_epoch

    def teardown(self) -> None:
        for lg in (self.log, self.source):
            if lg is not None:
                lg.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    # -- model helpers ------------------------------------------------------------------------

    def visible(self) -> list[tuple]:
        return [r for b in self.batches for r in b["records"] if r[0] >= self.log_start]

    def _drop_below_start(self) -> None:
        self.batches = [b for b in self.batches if b["records"][-1][0] >= self.log_start]

    def _add_batches(self, planned: list[list[tuple]]) -> None:
        """Add batches of (ts, key, value, headers) at the model's log end offset."""
        for batch in planned:
            recs = []
            for ts, k, v, h in batch:
                recs.append((self.leo, ts, k, v, list(h or [])))
                self.leo += 1
            self.batches.append({"epoch": self.epoch, "records": recs})

    def _snapshot(self):
        lg = self.log
        return (lg.log_start_offset, lg.high_watermark, lg.log_end_offset, lg.size_bytes, lg.segments())

    def _append_records(self, call, records: list[tuple], explicit_ts: bool) -> None:
        """``records`` is a list of (ts or None, key, value, headers); ``call`` appends them."""
        before = self._snapshot()
        t0 = int(time.time() * 1000)
        planned_probe = plan_batches([(0 if ts is None else ts, k, v, h) for ts, k, v, h in records],
                                     self.cfg["max_record_bytes"])
        if planned_probe is None:
            with pytest.raises(errors.RecordTooLargeError):
                call()
            assert self._snapshot() == before
            return
        first = call()
        t1 = int(time.time() * 1000)
        assert first == self.leo
        n = len(records)
        assert self.log.log_end_offset == self.leo + n
        if not explicit_ts:
            # the log stamped "now": learn the value it chose, and check it is a plausible now
            view = self.log.read(first, max_bytes=1 << 22, max_offset=first + n)
            got = list(view)
            assert len(got) == n
            stamped = {r.timestamp for r in got}
            assert len(stamped) == 1, "one append call uses one timestamp"
            now = stamped.pop()
            assert t0 - 1 <= now <= t1 + 1
            records = [(now, k, v, h) for _ts, k, v, h in records]
        planned = plan_batches(list(records), self.cfg["max_record_bytes"])
        assert planned is not None
        self._add_batches(planned)

    # -- rules --------------------------------------------------------------------------------

    @rule(value=st.one_of(values, large_values), key=keys, headers=header_lists,
          ts=st.one_of(st.none(), timestamps))
    def append_one(self, value, key, headers, ts):
        self._append_records(lambda: self.log.append(value, key=key, headers=headers, timestamp=ts),
                             [(ts, key, value, headers)], ts is not None)

    @rule(data=st.data(), n=st.integers(1, 50), with_keys=st.booleans(), with_headers=st.booleans(),
          with_ts=st.booleans(), oversize=st.integers(0, 9).map(lambda x: x == 9))
    def append_many(self, data, n, with_keys, with_headers, with_ts, oversize):
        vals = data.draw(st.lists(st.one_of(values, large_values) if oversize else values,
                                  min_size=n, max_size=n))
        ks = data.draw(st.lists(keys, min_size=n, max_size=n)) if with_keys else None
        hs = data.draw(st.lists(header_lists, min_size=n, max_size=n)) if with_headers else None
        ts = data.draw(st.lists(timestamps, min_size=n, max_size=n)) if with_ts else None
        records = [(ts[i] if ts else None, ks[i] if ks else None, vals[i], hs[i] if hs else None)
                   for i in range(n)]
        self._append_records(lambda: self.log.append_many(vals, keys=ks, headers=hs, timestamps=ts),
                             records, with_ts)

    @rule(data=st.data(), n=st.integers(1, 30), with_ts=st.booleans())
    def append_raw_from_other_log(self, data, n, with_ts):
        src = self.source
        vals = data.draw(st.lists(st.one_of(st.none(), small_bytes, st.binary(min_size=60, max_size=200)),
                                  min_size=n, max_size=n))
        ks = data.draw(st.lists(keys, min_size=n, max_size=n))
        hs = data.draw(st.lists(header_lists, min_size=n, max_size=n))
        ts = data.draw(st.lists(timestamps, min_size=n, max_size=n)) if with_ts else None
        start = src.append_many(vals, keys=ks, headers=hs, timestamps=ts)
        view = src.read(start, max_bytes=1 << 22)
        raw = bytes(view.raw)
        src_batches = [[(r.timestamp, r.key, r.value, r.headers) for r in view
                        if b["base_offset"] <= r.offset <= b["last_offset"]] for b in view.batches()]
        assert [rec[2] for b in src_batches for rec in b] == vals
        self._append_raw(raw, src_batches)

    @precondition(lambda self: self.leo > self.log_start)
    @rule(data=st.data(), max_bytes=st.integers(1, 6000))
    def append_raw_from_own_read(self, data, max_bytes):
        offset = data.draw(st.integers(self.log_start, self.leo - 1))
        view = self.log.read(offset, max_bytes=max_bytes)
        raw = bytes(view.raw)
        batches = []
        for b in view.batches():
            mb = next(m for m in self.batches if m["records"][0][0] == b["base_offset"])
            batches.append([(ts, k, v, h) for _o, ts, k, v, h in mb["records"]])
        self._append_raw(raw, batches)

    def _append_raw(self, raw: bytes, batches: list[list[tuple]]) -> None:
        first = self.log.append_batch(raw)
        assert first == self.leo
        self._add_batches(batches)
        assert self.log.log_end_offset == self.leo

    @rule(data=st.data(), max_bytes=st.integers(1, 20000), bounded=st.booleans())
    def read(self, data, max_bytes, bounded):
        offset = data.draw(st.integers(max(0, self.log_start - 3), self.leo + 3))
        max_offset = data.draw(st.integers(max(0, offset - 2), self.leo + 5)) if bounded else None
        if offset < self.log_start or offset > self.leo:
            with pytest.raises(errors.OffsetOutOfRangeError):
                self.log.read(offset, max_bytes=max_bytes, max_offset=max_offset)
            return
        view = self.log.read(offset, max_bytes=max_bytes, max_offset=max_offset)
        limit = self.leo if max_offset is None else min(max_offset, self.leo)
        got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]
        if offset >= limit:
            assert got == []
            assert len(view) == 0
            return
        assert got, "a read below the limit returns at least one record"
        expected = [r for r in self.visible() if offset <= r[0] < limit]
        assert got == expected[:len(got)]
        assert got[0][0] == offset
        assert view.next_offset == got[-1][0] + 1
        # columns agree with the records
        assert list(view.offsets) == [g[0] for g in got]
        assert list(view.timestamps) == [g[1] for g in got]
        # whole batches only, within max_bytes unless the first batch alone is larger
        bs = view.batches()
        assert view.size_bytes == sum(b["size"] for b in bs)
        assert view.size_bytes <= max(max_bytes, bs[0]["size"])
        assert bs[0]["base_offset"] <= offset <= bs[0]["last_offset"]

    @rule()
    def roll(self):
        segs = self.log.segments()
        self.log.roll()
        after = self.log.segments()
        if segs[-1]["size"] == 0:
            assert after == segs
        else:
            assert len(after) == len(segs) + 1
            assert after[-1]["base_offset"] == self.leo and after[-1]["size"] == 0

    @rule(data=st.data())
    def truncate_to(self, data):
        offset = data.draw(st.integers(max(0, self.log_start - 5), self.leo + 3))
        new_leo = self.log.truncate_to(offset)
        if offset >= self.leo:
            pass
        elif offset < self.log_start:
            self.batches = []
            self.log_start = self.leo = self.hw = offset
        else:
            # whole batches: the one holding ``offset`` goes too, even if it starts below log start
            removed = [b for b in self.batches if b["records"][-1][0] >= offset]
            self.batches = [b for b in self.batches if b["records"][-1][0] < offset]
            self.leo = removed[0]["records"][0][0]
            self.log_start = min(self.log_start, self.leo)
            self.hw = min(self.hw, self.leo)
        assert new_leo == self.leo

    @rule(data=st.data())
    def set_high_watermark(self, data):
        offset = data.draw(st.integers(max(0, self.log_start - 2), self.leo + 2))
        if not self.log_start <= offset <= self.leo:
            with pytest.raises(errors.OffsetOutOfRangeError):
                self.log.set_high_watermark(offset)
            return
        self.log.set_high_watermark(offset)
        self.hw = offset

    @rule(bump=st.integers(0, 2))
    def set_leader_epoch(self, bump):
        self.log.set_leader_epoch(self.epoch + bump)
        self.epoch += bump

    @rule(data=st.data())
    def delete_before(self, data):
        offset = data.draw(st.integers(max(0, self.log_start - 2), self.hw + 3))
        before = self._snapshot()
        if offset > self.hw:
            with pytest.raises(errors.OffsetOutOfRangeError):
                self.log.delete_before(offset)
            assert self._snapshot() == before
            return
        self.log.delete_before(offset)
        if offset > self.log_start:
            self.log_start = offset
            self._drop_below_start()
        segs = self.log.segments()
        assert segs[0]["base_offset"] <= self.log_start
        # every segment wholly below the new start is gone (the active one always stays)
        assert len(segs) == 1 or segs[1]["base_offset"] > self.log_start

    @rule()
    def apply_retention(self):
        before = self.log.segments()
        old_start = self.log.log_start_offset
        deleted = self.log.apply_retention()
        after = self.log.segments()
        limit = self.cfg["retention_bytes"]
        if limit is None:
            assert deleted == 0 and after == before
            return
        assert after == before[deleted:], "only whole segments, oldest first"
        assert len(after) >= 1 and after[-1] == before[-1], "the active segment is never deleted"
        for seg in before[:deleted]:
            assert seg["next_offset"] <= self.hw, "retention never passes the high watermark"
        # nothing more was deletable
        total = sum(s["size"] for s in after)
        if len(after) > 1 and after[1]["base_offset"] <= self.hw:
            assert total - after[0]["size"] < limit
        new_start = self.log.log_start_offset
        assert new_start == max(old_start, after[0]["base_offset"])
        assert new_start <= self.hw
        self.log_start = new_start
        self._drop_below_start()

    @rule(data=st.data())
    def offset_for_timestamp(self, data):
        vis = self.visible()
        choices = [st.integers(0, 2**41 + 5)]
        if vis:
            choices.append(st.sampled_from([r[1] + d for r in vis for d in (-1, 0, 1)]))
        t = data.draw(st.one_of(*choices))
        expected = next(((r[0], r[1]) for r in vis if r[1] >= t), None)
        assert self.log.offset_for_timestamp(t) == expected

    @rule()
    def clean_reopen(self):
        segs = self.log.segments()
        self.log.close()
        self.log.close()
        with pytest.raises(errors.LogClosedError):
            self.log.append(b"x")
        self.log = PartitionLog.open(self.path, **self.cfg)
        rep = self.log.recovery
        assert rep.clean_shutdown and rep.checkpoint_valid and not rep.cut
        assert self.log.segments() == segs

    @rule(extra=st.lists(st.tuples(small_bytes, timestamps), max_size=5))
    def unclean_reopen(self, extra):
        """What the disk holds after flush() is what a crash leaves: copy it while the log is open."""
        self.log.flush()
        flushed_leo = self.leo
        if extra:
            # appended after the flush: may or may not survive, but only as whole batches
            # (explicit timestamps: nothing reads them back, so they may still sit in the write buffer)
            self._append_records(
                lambda: self.log.append_many([v for v, _ in extra], timestamps=[t for _, t in extra]),
                [(t, None, v, None) for v, t in extra], True)
        crash_dir = self._new_dir("crash")
        shutil.copytree(self.path, crash_dir)
        assert not os.path.exists(os.path.join(crash_dir, ".clean_shutdown"))
        self.log.close()
        self.path = crash_dir
        self.log = PartitionLog.open(crash_dir, **self.cfg)
        assert not self.log.recovery.clean_shutdown
        leo = self.log.log_end_offset
        assert flushed_leo <= leo <= self.leo
        if leo < self.leo:
            boundaries = {b["records"][0][0] for b in self.batches} | {self.leo}
            assert leo in boundaries
            self.batches = [b for b in self.batches if b["records"][-1][0] < leo]
            self.leo = leo
            self.hw = min(self.hw, leo)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def offsets_agree(self):
        if self.log is None:
            return
        lg = self.log
        assert lg.log_start_offset <= lg.high_watermark <= lg.log_end_offset
        assert (lg.log_start_offset, lg.high_watermark, lg.log_end_offset) == (self.log_start, self.hw, self.leo)

    @invariant()
    def segments_consistent(self):
        if self.log is None:
            return
        segs = self.log.segments()
        assert segs, "a log always has an active segment"
        assert segs[0]["base_offset"] <= self.log_start
        for a, b in zip(segs, segs[1:]):
            assert a["next_offset"] == b["base_offset"]
            assert a["size"] > 0, "only the active segment may be empty"
        assert segs[-1]["next_offset"] == self.leo
        assert sum(s["size"] for s in segs) == self.log.size_bytes
        for s in segs:
            assert s["size"] <= self.cfg["segment_bytes"]

    @invariant()
    def contents_agree(self):
        if self.log is None:
            return
        got, batches = [], []
        offset = self.log_start
        while offset < self.leo:
            view = self.log.read(offset, max_bytes=1 << 20)
            recs = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in view]
            assert recs and recs[0][0] == offset
            got.extend(recs)
            batches.extend(view.batches())
            offset = view.next_offset
        assert got == self.visible()
        expect_batches = [(b["records"][0][0], b["records"][-1][0], b["epoch"]) for b in self.batches]
        assert [(b["base_offset"], b["last_offset"], b["leader_epoch"]) for b in batches] == expect_batches
        for b in batches:
            assert b["size"] <= self.cfg["max_record_bytes"]
        with pytest.raises(errors.OffsetOutOfRangeError):
            self.log.read(self.leo + 1)
        if self.log_start > 0:
            with pytest.raises(errors.OffsetOutOfRangeError):
                self.log.read(self.log_start - 1)

    @invariant()
    def epochs_known(self):
        """Every leader epoch stamped on a batch in the log is in the epoch cache and ends after it."""
        if self.log is None:
            return
        for b in self.batches:
            epoch, last = b["epoch"], b["records"][-1][0]
            found_epoch, end = self.log.end_offset_for_epoch(epoch)
            assert found_epoch == epoch, (epoch, self.log.epoch_cache)
            assert end > last


def test_partition_log_against_model(tmp_path):
    PartitionModel.base_dir = str(tmp_path)
    run_state_machine_as_test(
        PartitionModel,
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    )
