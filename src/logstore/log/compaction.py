"""Log compaction of one partition (cleanup_policy="compact"): keep the latest record of each key.

A pass over a log (``CompactionPass``, or ``compact`` for all of it at once):

1. **Plan** (under the log lock, metadata only). The *cleanable* range is the sealed segments from
   the first one up to, not including, the first that is the active segment, reaches past the
   high watermark, or holds a record newer than ``now - min_compaction_lag_ms``. The *first dirty
   offset* (where the last complete pass stopped) comes from ``cleaner.checkpoint``.
2. **Map** (no lock). The native ``KeyMap`` records XXH64(key) -> latest offset for the dirty range
   [first dirty, cleanable end). It holds at most ``max_map_records`` keys: if the dirty range has
   more, the pass cleans only up to the batch where the map filled (``clean_upto``) and the next
   pass goes on from there.
3. **Clean**, one group at a time. The segments below ``clean_upto`` (clean and dirty alike: an
   older value in the clean part goes once a newer one turns up) are cleaned in order into
   groups: a segment joins the group's output segment while what the group has written so far
   plus the whole segment fits ``segment_bytes`` (and the offsets a segment's 32-bit relative
   range), so compaction also reduces the segment count.
   The native ``BatchFilter`` keeps a record unless the map holds a later offset for its key, and
   drops a tombstone (null value) below ``clean_upto`` whose timestamp is older than
   ``now - delete_retention_ms`` (the record's own timestamp: create time, or the batch's
   log-append time; Kafka instead counts from when the tombstone's segment was first cleaned).
   Records with a null key are kept. Batch headers survive (a batch emptied of records stays as a
   header-only batch; consecutive ones merge when epoch, attributes and producer allow, see
   ``logstore._native.compact``), so offsets, producer state and the leader-epoch cache rebuild
   as before.
4. **Swap**, per group. The cleaned segment is written and indexed in a scratch directory
   ``.cleaning-*`` of the partition directory, fsynced, with a ``manifest`` naming the segments it
   replaces. Then, under the log lock (held only for this): check the replaced segments are still
   the log's, unchanged (retention or truncation may have run meanwhile; if not, the group is
   dropped); commit by renaming the scratch directory to ``.swap-<base>`` and fsyncing the
   partition directory; delete the old segments' files, move the new ones in, remove the swap
   directory (``recovery.complete_swap``, which ``PartitionLog.open`` also runs on any
   ``.swap-*`` it finds, so a kill -9 anywhere loses nothing); install the new segment.
5. **Checkpoint**: once every group is done, ``cleaner.checkpoint`` records ``clean_upto`` as the
   next first dirty offset, with a fingerprint of the batch just below it (base and last offset,
   base and max timestamp). A checkpoint whose batch no longer matches (the log was truncated and
   written again, or a pass that did not finish merged that batch into a header-only one) is
   ignored: the next pass treats the whole log as dirty, which is always safe.

Readers never see a missing range: the swap happens under the lock that reads take, and the new
segment covers exactly the offsets of the ones it replaces. ``max_bytes_per_s`` throttles a pass
(the background cleaner's default does), so that it leaves CPU to the appenders.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import xxhash

from logstore._native.compact import BatchFilter, KeyMap
from logstore._native.segment import Segment, segment_name
from logstore.errors import CorruptRecordError, InvalidArgumentError, LogClosedError, LogstoreError
from logstore.log.checkpoint import fsync_directory, write_atomic
from logstore.log.partition import PartitionLog
from logstore.log.recovery import MANIFEST, SCRATCH_PREFIX, SWAP_PREFIX, complete_swap, encode_swap_manifest

log = logging.getLogger("logstore.log.compaction")

CHECKPOINT_FILE = "cleaner.checkpoint"
CHECKPOINT_MAGIC = "logstore-cleaner 1"
MAX_RELATIVE_OFFSET = 0x7FFFFFFF
_HEADER = struct.Struct(">qiibIhiqq")  # base offset .. max timestamp of a batch header

# Crash tests set this to a function called at each step of a swap ("scratch-written",
# "committed", "old-deleted", "new-moved", "swapped", "checkpointed").
CRASH_HOOK: Callable[[str], None] | None = None

_scratch_ids = itertools.count()
_busy: weakref.WeakKeyDictionary[PartitionLog, threading.Lock] = weakref.WeakKeyDictionary()
_busy_guard = threading.Lock()


def _crash_point(point: str) -> None:
    if CRASH_HOOK is not None:
        CRASH_HOOK(point)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CompactionOptions:
    """How a pass cleans (Kafka's topic configs of the same names)."""

    delete_retention_ms: int = 24 * 3600 * 1000
    """A tombstone whose timestamp is older than now - this is removed by the next pass."""
    min_compaction_lag_ms: int = 0
    """A record stays uncompacted at least this long after its timestamp."""
    max_map_records: int = 4_000_000
    """Keys mapped per pass: the map takes 16-byte slots, at most 3/4 of them used, so up to
    about 32 bytes a key (128 MiB at the default). A larger dirty range takes several passes."""
    read_chunk_bytes: int = 8 << 20
    """Bytes read from a segment file per call."""
    max_bytes_per_s: int | None = None
    """Throttle: segment bytes a pass reads per second (None: as fast as it can; Kafka's
    log.cleaner.io.max.bytes.per.second)."""
    verify_crc: bool = True
    """Check each input batch's CRC32C (a damaged batch stops the pass; it is never rewritten)."""

    def __post_init__(self) -> None:
        if not isinstance(self.verify_crc, bool):
            raise InvalidArgumentError(f"verify_crc must be a bool, not {self.verify_crc!r}")
        for name, low in (("delete_retention_ms", 0), ("min_compaction_lag_ms", 0), ("max_map_records", 1),
                          ("read_chunk_bytes", 1), ("max_bytes_per_s", 1)):
            v = getattr(self, name)
            if v is None and name == "max_bytes_per_s":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InvalidArgumentError(f"{name} must be an int >= {low}, not {v!r}")


@dataclass
class CompactionStats:
    """What a pass (or the part of it run so far) did."""

    path: str = ""
    first_dirty_offset: int = -1
    """Where the dirty range started."""
    clean_upto: int = -1
    """Offsets below this were cleaned (the next pass's first dirty offset once ``complete``)."""
    cleanable_end: int = -1
    """End of the cleanable range (``clean_upto`` is below it if the key map filled)."""
    map_keys: int = 0
    records_mapped: int = 0
    records_read: int = 0
    records_kept: int = 0
    records_removed: int = 0
    """Records removed because a later record has the same key."""
    tombstones_removed: int = 0
    null_key_records: int = 0
    empty_batches_merged: int = 0
    bytes_before: int = 0
    """Bytes of the segments the pass rewrote (or found unchanged)."""
    bytes_after: int = 0
    segments_before: int = 0
    segments_after: int = 0
    groups_swapped: int = 0
    groups_unchanged: int = 0
    """Single segments the pass left alone: nothing in them to remove."""
    groups_aborted: int = 0
    """Groups dropped because the log changed under them (retention, truncation, close)."""
    complete: bool = False
    """Every group was done and the checkpoint advanced to ``clean_upto``."""
    seconds: float = 0.0
    lock_held_max_s: float = 0.0
    """Longest the log's lock was held for a swap (appends and reads wait that long)."""
    per_group: list[dict[str, int]] = field(default_factory=list)

    @property
    def bytes_removed(self) -> int:
        return self.bytes_before - self.bytes_after


@dataclass(frozen=True)
class _SegmentRef:
    """A segment as the plan saw it; the swap checks the log still has it, unchanged."""

    segment: Segment
    base_offset: int
    next_offset: int
    size: int
    max_timestamp: int
    index_entries: int
    time_entries: int

    @classmethod
    def of(cls, seg: Segment) -> _SegmentRef:
        return cls(seg, seg.base_offset, seg.next_offset, seg.size, seg.max_timestamp,
                   seg.offset_index.entries, seg.time_index.entries)

    def unchanged(self) -> bool:
        seg = self.segment
        return seg.sealed and not seg.closed and seg.next_offset == self.next_offset and seg.size == self.size


class _LogChanged(Exception):
    """The segments a group was built from are no longer the log's (or the log closed)."""


class CompactionStopped(LogstoreError):
    """``should_stop`` asked a pass to stop (the cleaner is shutting down)."""


# -- the cleaner checkpoint ---------------------------------------------------------------------

@dataclass(frozen=True)
class CleanerCheckpoint:
    first_dirty_offset: int
    batch: tuple[int, int, int, int] | None
    """(base offset, last offset, base timestamp, max timestamp) of the batch holding
    first_dirty_offset - 1, to tell whether the log below it is still the one that was cleaned."""

    def encode(self) -> bytes:
        batch = " ".join(map(str, self.batch)) if self.batch is not None else "-"
        body = f"{CHECKPOINT_MAGIC}\nfirst_dirty_offset {self.first_dirty_offset}\nbatch {batch}\n".encode()
        return body + f"xxh64 {xxhash.xxh64_hexdigest(body)}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> CleanerCheckpoint | None:
        try:
            body, _, tail = data.rpartition(b"xxh64 ")
            if not body or tail.strip().decode() != xxhash.xxh64_hexdigest(body):
                return None
            lines = body.decode().splitlines()
            if len(lines) != 3 or lines[0] != CHECKPOINT_MAGIC:
                return None
            values = dict(line.partition(" ")[::2] for line in lines[1:])
            first = int(values["first_dirty_offset"])
            parts = values["batch"].split()
            batch = None if parts == ["-"] else (int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]))
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return None
        return cls(first, batch) if first >= 0 else None


def read_cleaner_checkpoint(directory: str) -> CleanerCheckpoint | None:
    try:
        with open(os.path.join(directory, CHECKPOINT_FILE), "rb") as f:
            return CleanerCheckpoint.decode(f.read())
    except FileNotFoundError:
        return None


def _batch_fingerprint(segments: list[Segment], offset: int) -> tuple[int, int, int, int] | None:
    """(base, last offset, base timestamp, max timestamp) of the batch holding ``offset``, found
    through the segments (the caller holds the log lock); None if no segment holds it."""
    for seg in segments:
        if seg.base_offset <= offset < seg.next_offset:
            seg.flush_buffer()
            pos = seg.position_of(offset)
            if pos < 0:
                return None
            header = seg.read_bytes(pos, _HEADER.size)
            if len(header) < _HEADER.size:
                return None
            base, _length, _epoch, _magic, _crc, _attrs, last_delta, base_ts, max_ts = _HEADER.unpack(header)
            return (base, base + last_delta, base_ts, max_ts)
    return None


def _first_dirty(plog: PartitionLog, first_base: int) -> int:
    """The validated first dirty offset (the caller holds the log lock)."""
    cp = read_cleaner_checkpoint(plog.path)
    if cp is None or cp.first_dirty_offset <= first_base:
        return first_base
    if cp.first_dirty_offset > plog.log_end_offset or cp.batch is None or \
            _batch_fingerprint(plog._segments, cp.first_dirty_offset - 1) != cp.batch:
        log.info("cleaner checkpoint of %s does not match the log (truncated?): cleaning all of it", plog.path)
        return first_base
    return cp.first_dirty_offset


# -- planning -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CleanableRange:
    """What a pass could clean now, without reading any record."""

    segments: tuple[_SegmentRef, ...]
    first_dirty_offset: int

    @property
    def end_offset(self) -> int:
        return self.segments[-1].next_offset if self.segments else -1

    @property
    def clean_bytes(self) -> int:
        return sum(r.size for r in self.segments if r.next_offset <= self.first_dirty_offset)

    @property
    def dirty_bytes(self) -> int:
        return sum(r.size for r in self.segments if r.next_offset > self.first_dirty_offset)

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def cleanable_range(plog: PartitionLog, min_compaction_lag_ms: int = 0, now: int | None = None) -> CleanableRange:
    """The sealed segments a pass may clean now (metadata only, under the log lock briefly)."""
    now = now_ms() if now is None else now
    with plog._lock:
        if plog._closed:
            raise LogClosedError("the log is closed")
        segs = plog._segments
        refs: list[_SegmentRef] = []
        for seg in segs[:-1]:
            if not seg.sealed or seg is plog._active or seg.next_offset > plog._high_watermark:
                break
            if min_compaction_lag_ms > 0 and seg.max_timestamp > now - min_compaction_lag_ms:
                break
            refs.append(_SegmentRef.of(seg))
        first_dirty = _first_dirty(plog, segs[0].base_offset) if refs else segs[0].base_offset
    if refs:
        first_dirty = min(first_dirty, refs[-1].next_offset)
    return CleanableRange(tuple(refs), first_dirty)


def _guard(plog: PartitionLog) -> threading.Lock:
    with _busy_guard:
        lock = _busy.get(plog)
        if lock is None:
            lock = _busy[plog] = threading.Lock()
        return lock


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _MapFeed:
    """Feeds one segment's chunks to ``KeyMap.add_file``, carrying the expected offset."""

    def __init__(self, keymap: KeyMap, fd: int, start_offset: int, base_offset: int, verify_crc: bool) -> None:
        self.keymap = keymap
        self.fd = fd
        self.start_offset = start_offset
        self.next_offset = base_offset
        self.verify_crc = verify_crc
        self.stopped = False

    def __call__(self, position: int, length: int) -> tuple[int, int]:
        consumed, need, self.next_offset, self.stopped = self.keymap.add_file(
            self.fd, position, length, self.start_offset, self.next_offset, self.verify_crc)
        return consumed, need


class _FilterFeed:
    """Feeds one segment's chunks to a ``BatchFilter`` and its output to the new segment file."""

    def __init__(self, filt: BatchFilter, fd: int, out: int, out_position: int) -> None:
        self.filt = filt
        self.fd = fd
        self.out = out
        self.out_position = out_position

    def __call__(self, position: int, length: int) -> tuple[int, int]:
        consumed, need = self.filt.process_file(self.fd, position, length)
        if self.filt.output_size:
            self.out_position += self.filt.drain_to(self.out, self.out_position)
        return consumed, need


class CompactionPass:
    """One pass over one log: ``build_map()``, then ``run_group()`` until it returns False, then
    ``finish()``; or ``run()`` for all of it. Only one pass per log runs at a time (a second one
    raises ``LogstoreError``). ``should_stop`` is polled between chunks of I/O."""

    def __init__(self, plog: PartitionLog, options: CompactionOptions | None = None, now: int | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.log = plog
        self.options = options if options is not None else CompactionOptions()
        self.now = now_ms() if now is None else now
        self.should_stop = should_stop
        self._guard = _guard(plog)
        if not self._guard.acquire(blocking=False):
            raise LogstoreError(f"{plog.path} is being compacted already")
        self._released = False
        try:
            self.range = cleanable_range(plog, self.options.min_compaction_lag_ms, self.now)
        except BaseException:
            self.release()
            raise
        self.stats = CompactionStats(path=plog.path, first_dirty_offset=self.range.first_dirty_offset,
                                     cleanable_end=self.range.end_offset)
        self.keymap: KeyMap | None = None
        self._todo: list[_SegmentRef] = []
        self._started = time.perf_counter()
        self._started_monotonic = time.monotonic()
        self._bytes_read = 0

    # -- lifecycle --------------------------------------------------------------------------

    def release(self) -> None:
        """Let another pass run on this log (``finish`` and ``run`` do this)."""
        if not self._released:
            self._released = True
            self.keymap = None
            self._guard.release()

    def __enter__(self) -> CompactionPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if not getattr(self, "_released", True):
            self.release()

    @property
    def done(self) -> bool:
        return self.keymap is not None and not self._todo

    def run(self) -> CompactionStats:
        try:
            self.build_map()
            while self.run_group():
                pass
            self.finish()
        finally:
            self.release()
        return self.stats

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise CompactionStopped("compaction stopped")

    # -- 2. key map ---------------------------------------------------------------------------

    def _open_inputs(self, refs: list[_SegmentRef]) -> list[int]:
        """Our own descriptors on the segment files (a concurrent delete does not take them
        away), opened while the log still has the segments, unchanged."""
        fds: list[int] = []
        with self.log._lock:
            try:
                if self.log._closed or not all(r.segment in self.log._segments and r.unchanged() for r in refs):
                    raise _LogChanged()
                for r in refs:
                    fds.append(os.open(r.segment.log_path, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
        return fds

    def _chunks(self, ref: _SegmentRef, consume: Callable[[int, int], tuple[int, int]]) -> bool:
        """Feed the segment's bytes to ``consume(position, length) -> (consumed, need)`` chunk by
        chunk until it has consumed them all (True) or stops early (False)."""
        chunk = self.options.read_chunk_bytes
        pos, want = 0, chunk
        while pos < ref.size:
            self._check_stop()
            n = min(want, ref.size - pos)
            try:
                consumed, need = consume(pos, n)
            except EOFError:
                raise _LogChanged() from None  # the file shrank: truncated under us
            if consumed == 0:
                if need == 0:
                    return False
                if need <= n or pos + need > ref.size:
                    raise CorruptRecordError(f"segment {ref.segment.log_path} does not end on a whole batch")
            pos += consumed
            self._throttle(consumed)
            want = max(chunk, need)
            if consumed < n and need == 0:
                return False
        return True

    def _throttle(self, nbytes: int) -> None:
        """Hold the pass to ``max_bytes_per_s`` of segment bytes read (sleeping in slices so a
        stop request is seen)."""
        limit = self.options.max_bytes_per_s
        if limit is None:
            return
        self._bytes_read += nbytes
        while True:
            ahead = self._bytes_read / limit - (time.monotonic() - self._started_monotonic)
            if ahead <= 0:
                return
            self._check_stop()
            time.sleep(min(ahead, 0.05))

    def build_map(self) -> None:
        """Map the dirty range's keys (no lock held) and group what will be cleaned."""
        rng, opts = self.range, self.options
        first_dirty, end = rng.first_dirty_offset, rng.end_offset
        if not rng.segments:
            self.keymap = KeyMap(1)
            self.stats.clean_upto = first_dirty
            return
        keymap = KeyMap(opts.max_map_records, max(end - first_dirty, 1))
        clean_upto = end
        dirty = [r for r in rng.segments if r.next_offset > first_dirty]
        try:
            fds = self._open_inputs(dirty)
        except _LogChanged:
            self.keymap = KeyMap(1)
            self.stats.groups_aborted += 1
            return
        try:
            for ref, fd in zip(dirty, fds):
                feed = _MapFeed(keymap, fd, first_dirty, ref.base_offset, opts.verify_crc)
                if not self._chunks(ref, feed):
                    if not feed.stopped:
                        raise CorruptRecordError(f"segment {ref.segment.log_path} holds a record batch it cannot parse")
                    clean_upto = feed.next_offset
                    break
                if feed.next_offset != ref.next_offset:
                    raise CorruptRecordError(f"segment {ref.segment.log_path} ends at offset {feed.next_offset}, "
                                             f"expected {ref.next_offset}")
        except _LogChanged:
            self.keymap = KeyMap(1)
            self.stats.groups_aborted += 1
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.keymap = keymap
        self.stats.clean_upto = clean_upto
        self.stats.map_keys = len(keymap)
        self.stats.records_mapped = keymap.records_mapped
        self._todo = [r for r in rng.segments if r.base_offset < clean_upto]

    def _fits(self, group: list[_SegmentRef], ref: _SegmentRef, filt: BatchFilter) -> bool:
        """Can ``ref`` join the output segment being written? Judged by what the group has
        written so far plus all of ``ref`` (its output is no larger), so groups grow as the
        filter shrinks their input."""
        cfg = self.log.config
        return (filt.bytes_written + 61 + ref.size <= cfg.segment_bytes
                and ref.next_offset - 1 - group[0].base_offset <= MAX_RELATIVE_OFFSET
                and sum(r.index_entries + 1 for r in group) + ref.index_entries + 1 < cfg.max_index_bytes // 8
                and sum(r.time_entries + 1 for r in group) + ref.time_entries + 1 < cfg.max_index_bytes // 12)

    def run_group(self) -> bool:
        """Clean and swap in the next group; returns whether more groups remain. A group whose
        segments changed under it ends the pass (``stats.groups_aborted``)."""
        if self.keymap is None:
            raise LogstoreError("build_map() first")
        if not self._todo:
            return False
        try:
            self._clean_group()
        except _LogChanged:
            self.stats.groups_aborted += 1
            self._todo = []
            return False
        return bool(self._todo)

    def _clean_group(self) -> None:
        plog, opts, cfg = self.log, self.options, self.log.config
        assert self.keymap is not None
        base = self._todo[0].base_offset
        horizon = self.now - opts.delete_retention_ms
        filt = BatchFilter(self.keymap, self.stats.clean_upto, horizon, base, opts.verify_crc)
        scratch = os.path.join(plog.path, f"{SCRATCH_PREFIX}-{os.getpid()}-{next(_scratch_ids)}")
        group: list[_SegmentRef] = []
        try:
            os.mkdir(scratch)
            out_path = os.path.join(scratch, segment_name(base) + ".log")
            out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
            out_position = 0
            try:
                while self._todo and (not group or self._fits(group, self._todo[0], filt)):
                    ref = self._todo[0]
                    if filt.next_offset != ref.base_offset:
                        raise CorruptRecordError(f"segment {ref.segment.log_path} starts at {ref.base_offset}, "
                                                 f"expected {filt.next_offset}")
                    fd = self._open_inputs([ref])[0]
                    try:
                        feed = _FilterFeed(filt, fd, out, out_position)
                        done = self._chunks(ref, feed)
                        out_position = feed.out_position
                        if not done or filt.next_offset != ref.next_offset:
                            raise CorruptRecordError(f"segment {ref.segment.log_path} ends at {filt.next_offset}, "
                                                     f"expected {ref.next_offset}")
                    finally:
                        os.close(fd)
                    group.append(self._todo.pop(0))
                filt.finish()
                out_position += filt.drain_to(out, out_position)
                if filt.changed or len(group) > 1:
                    os.fsync(out)
            finally:
                os.close(out)
            self._account(group, filt)
            if not filt.changed and len(group) == 1:
                self.stats.groups_unchanged += 1
                self.stats.bytes_after += group[0].size
                self.stats.segments_after += 1
                return
            self._check_stop()
            # index the new segment exactly as recovery would, which also re-validates it
            seg = Segment(scratch, base, cfg.index_interval_bytes, cfg.max_index_bytes, False)
            try:
                truncated, _epochs = seg.recover(True, base)
                if truncated or seg.next_offset != group[-1].next_offset:
                    raise LogstoreError(f"compacted segment {base} of {plog.path} failed validation "
                                        f"(cut {truncated} bytes, ends at {seg.next_offset})")
                new_size = seg.size
                seg.sync()
            finally:
                seg.close()
            for name in os.listdir(scratch):
                _fsync_file(os.path.join(scratch, name))
            with open(os.path.join(scratch, MANIFEST), "wb") as f:
                f.write(encode_swap_manifest([r.base_offset for r in group], [base]))
                f.flush()
                os.fsync(f.fileno())
            fsync_directory(scratch)
            _crash_point("scratch-written")
            self._swap(group, scratch)
            self.stats.groups_swapped += 1
            self.stats.bytes_after += new_size
            self.stats.segments_after += 1
            self.stats.per_group.append({"base_offset": base, "segments": len(group),
                                         "bytes_before": sum(r.size for r in group), "bytes_after": new_size})
        finally:
            if os.path.isdir(scratch):
                shutil.rmtree(scratch, ignore_errors=True)

    def _account(self, group: list[_SegmentRef], filt: BatchFilter) -> None:
        s = self.stats
        s.records_read += filt.records_read
        s.records_kept += filt.records_kept
        s.records_removed += filt.records_removed
        s.tombstones_removed += filt.tombstones_removed
        s.null_key_records += filt.null_key_records
        s.empty_batches_merged += filt.empty_batches_merged
        s.bytes_before += sum(r.size for r in group)
        s.segments_before += len(group)

    def _swap(self, group: list[_SegmentRef], scratch: str) -> None:
        """Commit and install the group's new segment, under the log lock."""
        plog, cfg = self.log, self.log.config
        base = group[0].base_offset
        with plog._lock:
            locked = time.perf_counter()
            segs = plog._segments
            old = [r.segment for r in group]
            if plog._closed or old[0] not in segs:
                raise _LogChanged()
            i = segs.index(old[0])
            if segs[i:i + len(old)] != old or any(s is plog._active for s in old) or \
                    not all(r.unchanged() for r in group):
                raise _LogChanged()
            swap = SWAP_PREFIX + segment_name(base)
            os.rename(scratch, os.path.join(plog.path, swap))  # the commit point
            fsync_directory(plog.path)
            _crash_point("committed")
            for seg in old:
                seg.close()
            try:
                complete_swap(plog.path, swap, _crash_point)
            except OSError:
                # the files are committed: finishing the swap is the only way on (it is idempotent)
                log.exception("finishing compaction swap %s of %s failed; retrying once", swap, plog.path)
                if not complete_swap(plog.path, swap):
                    raise
            new = Segment(plog.path, base, cfg.index_interval_bytes, cfg.max_index_bytes, False)
            try:
                new.load()
            except CorruptRecordError:
                new.recover(True, base)
            plog._replace_segments(old, [new])
            held = time.perf_counter() - locked
        self.stats.lock_held_max_s = max(self.stats.lock_held_max_s, held)
        _crash_point("swapped")

    # -- 5. checkpoint -----------------------------------------------------------------------

    def finish(self) -> CompactionStats:
        """Advance the cleaner checkpoint if every group was done; returns the stats."""
        s = self.stats
        if self.keymap is not None and not self._todo and s.groups_aborted == 0 and self.range.segments:
            upto = s.clean_upto
            with self.log._lock:
                closed = self.log._closed
                batch = _batch_fingerprint(self.log._segments, upto - 1) if upto > 0 and not closed else None
            if not closed:
                # written without the lock: if the log is truncated meanwhile, the fingerprint
                # no longer matches and the next pass starts from the log start
                write_atomic(os.path.join(self.log.path, CHECKPOINT_FILE), CleanerCheckpoint(upto, batch).encode())
                s.complete = True
                _crash_point("checkpointed")
        s.seconds = time.perf_counter() - self._started
        self.release()
        return s


def compact(plog: PartitionLog, *, now: int | None = None, options: CompactionOptions | None = None,
            **option_values: Any) -> CompactionStats:
    """Run one whole compaction pass over ``plog`` now (see the module docstring); options as
    ``CompactionOptions`` or its fields as keywords. Returns what it did."""
    if options is None:
        options = CompactionOptions(**option_values)
    elif option_values:
        raise InvalidArgumentError("pass options= or option keywords, not both")
    return CompactionPass(plog, options, now).run()


__all__ = ["CHECKPOINT_FILE", "CleanableRange", "CleanerCheckpoint", "CompactionOptions", "CompactionPass",
           "CompactionStats", "CompactionStopped", "cleanable_range", "compact", "read_cleaner_checkpoint"]
