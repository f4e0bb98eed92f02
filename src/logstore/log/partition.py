"""The partition log: an ordered, append-only sequence of record batches in a directory.

Appends and reads are native (``LogCore``); this module owns what happens per segment or per
call rather than per record: open and recovery, roll, retention, truncation, durability and
checkpoints. Both share one reentrant lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from logstore._native.codec import RecordBatchView
from logstore._native.core import LogCore
from logstore._native.segment import Segment
from logstore.errors import InvalidArgumentError, LogClosedError, LogstoreError, OffsetOutOfRangeError
from logstore.log.checkpoint import Checkpoint, fsync_directory, read_checkpoint, write_checkpoint
from logstore.log.config import LogConfig
from logstore.log.dirlock import lock_directory
from logstore.log.epoch_cache import LeaderEpochCache
from logstore.log.flusher import FLUSHER
from logstore.log.producer_snapshot import replay as replay_producers, restore as restore_producers, write_snapshot
from logstore.log.recovery import RecoveryReport, open_segments, segment_bases

log = logging.getLogger("logstore.log")

CLEAN_SHUTDOWN = ".clean_shutdown"


class PartitionLog(LogCore):
    """One partition: ``PartitionLog.open(path, **config)``; see :class:`LogConfig` for config.

    Offsets are assigned densely from 0. ``high_watermark`` is advanced by the owner
    (``set_high_watermark``); retention and ``delete_before`` never pass it.
    """

    path: str
    config: LogConfig
    recovery: RecoveryReport

    def __init__(self) -> None:  # use PartitionLog.open
        raise TypeError("use PartitionLog.open(path, **config)")

    @classmethod
    def open(cls, path: str | os.PathLike[str], **config: Any) -> PartitionLog:
        cfg = LogConfig.from_kwargs(**config)
        self = cls.__new__(cls)
        self._setup(os.fspath(path), cfg)
        return self

    # -- open --------------------------------------------------------------------------------

    def _setup(self, path: str, cfg: LogConfig) -> None:
        self.path = path
        self.config = cfg
        self._sync_cond = threading.Condition()
        self._sync_running = False
        self._last_flush = time.monotonic()
        os.makedirs(path, exist_ok=True)
        self._lock_fd = lock_directory(path)
        try:
            self._load(cfg)
        except BaseException:
            self._release_directory()
            raise

    def _release_directory(self) -> None:
        if getattr(self, "_lock_fd", -1) >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _load(self, cfg: LogConfig) -> None:
        path = self.path
        report = RecoveryReport()
        marker = os.path.join(path, CLEAN_SHUTDOWN)
        checkpoint = read_checkpoint(path)
        bases = segment_bases(path, report)
        report.clean_shutdown = os.path.exists(marker) or not bases  # a new log has nothing to recover
        if checkpoint is None and (bases or os.path.exists(os.path.join(path, "partition.checkpoint"))):
            report.checkpoint_valid = False
            log.warning("checkpoint of %s is missing or damaged: recovering every segment", path)
        segments = open_segments(path, bases, cfg.index_interval_bytes, cfg.max_index_bytes,
                                 report.clean_shutdown, checkpoint, cfg.recovery == "full", report)
        if os.path.exists(marker):
            os.unlink(marker)
            fsync_directory(path)
        if not segments:
            start = checkpoint.log_start_offset if checkpoint is not None and not bases else 0
            segments = [Segment(path, start, cfg.index_interval_bytes, cfg.max_index_bytes, True)]
        elif segments[-1].sealed:
            segments[-1].activate(cfg.max_index_bytes)
        self.recovery = report

        self._segment_bytes = cfg.segment_bytes
        self._segment_ms = cfg.segment_ms or 0
        self._max_record_bytes = cfg.max_record_bytes
        self._verify_crc = cfg.verify_crc
        self._log_append_time = cfg.timestamp_type == "log_append_time"
        self._install_segments(segments)
        leo = self.log_end_offset
        first_base = segments[0].base_offset

        self._epochs = LeaderEpochCache(checkpoint.epochs if checkpoint is not None else None)
        for epoch, start in report.epochs:
            self._epochs.assign(epoch, start)
        self._epochs.truncate_from_end(leo + 1)  # an epoch may start at the end (no appends yet)
        self._leader_epoch = max(self._epochs.latest_epoch, 0)
        if checkpoint is not None:
            self._log_start_offset = min(max(checkpoint.log_start_offset, first_base), leo)
            self._high_watermark = min(max(checkpoint.high_watermark, self._log_start_offset), leo)
        else:
            self._log_start_offset = first_base
            self._high_watermark = first_base
        self._epochs.truncate_from_start(self._log_start_offset)
        if not self._epochs.entries:
            self._epochs.assign(self._leader_epoch, self._log_start_offset)
        if report.cut:
            log.warning("%s recovered with a cut: log end offset is now %d", path, leo)
        self._closed = False
        if report.clean_shutdown and report.checkpoint_valid:
            self._recovery_point = leo
        else:
            # what recovery validated may still be only in the page cache: the recovery point
            # moves past it at the next flush, which fsyncs it first
            self._recovery_point = min(checkpoint.recovery_point if checkpoint is not None else first_base, leo)
        self._synced_offset = self._recovery_point
        self._write_checkpoint()
        restore_producers(self)
        self._wire_appends(cfg.flush)
        # every mode: buffered single appends reach the OS within flush_interval_ms; "interval"
        # also fsyncs then, and "always" (which syncs data per append) moves the recovery point
        FLUSHER.register(self)

    # -- durability --------------------------------------------------------------------------

    def _wire_appends(self, flush: str) -> None:
        """flush="always": every append method waits for its fsync (group commit); other modes
        use LogCore's methods directly."""
        for name in ("append", "append_many", "append_arrays", "append_batch"):
            if flush == "always":
                setattr(self, name, self._durable(getattr(LogCore, name).__get__(self)))
            else:
                self.__dict__.pop(name, None)

    @property
    def durable_appends(self) -> bool:
        """Whether appends return only once fsynced (flush="always")."""
        return "append" in self.__dict__

    def _durable(self, append: Callable[..., int]) -> Callable[..., int]:
        def durable_append(*args: Any, **kwargs: Any) -> int:
            first = append(*args, **kwargs)
            self._sync_through(self.log_end_offset)
            return first

        durable_append.__doc__ = append.__doc__
        return durable_append

    def _sync_through(self, offset: int) -> None:
        """Group commit: return once everything below ``offset`` is fsynced. One caller syncs
        for all who are waiting; the rest wait for its result instead of issuing their own."""
        with self._sync_cond:
            while self._synced_offset < offset:
                if not self._sync_running:
                    self._sync_running = True
                    break
                self._sync_cond.wait()
            else:
                return
        target = self._synced_offset
        try:
            with self._lock:
                if self._closed:
                    raise LogClosedError("the log is closed")
                self._active.flush_buffer()
                target = self.log_end_offset
                pending = [s for s in self._segments if s.next_offset > self._synced_offset or s.buffered_bytes]
            for seg in pending:
                self._sync_segment(seg, data_only=True)
        finally:
            with self._sync_cond:
                self._synced_offset = max(self._synced_offset, target)
                self._sync_running = False
                self._sync_cond.notify_all()

    def flush(self) -> None:
        """Make every appended record durable (fsync data and indexes) and checkpoint."""
        with self._lock:
            self._check_open()
            self._active.flush_buffer()
            target = self.log_end_offset
            pending = [s for s in self._segments if s.next_offset > self._recovery_point or not s.sealed]
        for seg in pending:
            self._sync_segment(seg, data_only=False)
        with self._lock:
            if self._closed:
                return
            self._recovery_point = max(self._recovery_point, min(target, self.log_end_offset))
            with self._sync_cond:
                self._synced_offset = max(self._synced_offset, min(target, self.log_end_offset))
            self._write_checkpoint()
            self._write_producer_snapshot()
            self._last_flush = time.monotonic()

    def _sync_segment(self, seg: Segment, data_only: bool) -> None:
        """fsync outside the lock: the segment may be closed meanwhile by close() (then this
        is a LogClosedError) or retired by retention or a compaction swap (its records are gone
        or already synced in the segment that replaced it: nothing to do)."""
        try:
            if data_only:
                seg.sync_data()
            else:
                seg.sync()
        except (OSError, ValueError):
            if self._closed:
                raise LogClosedError("the log was closed during a flush") from None
            if not seg.closed:
                raise

    def flush_buffer(self) -> None:
        """Hand buffered appends to the OS (they then survive a process crash, not a power
        loss); ``flush()`` also fsyncs."""
        with self._lock:
            self._check_open()
            self._active.flush_buffer()

    def _flush_if_dirty(self) -> None:
        """Called by the background flusher every flush_interval_ms."""
        if self._closed:
            return
        if self.config.flush == "never":
            with self._lock:
                if not self._closed and self._active.buffered_bytes:
                    self._active.flush_buffer()
        elif self.log_end_offset > self._recovery_point or self._active.buffered_bytes:
            try:
                self.flush()
            except LogClosedError:
                return  # closed since the check above: close() flushed it
        self._last_flush = time.monotonic()

    def _write_producer_snapshot(self) -> None:
        """Snapshot the idempotent producers' state at the log end (under the lock, buffers
        drained: the snapshot never claims offsets a process crash could lose)."""
        self._active.flush_buffer()
        write_snapshot(self.path, self.log_end_offset, self.producer_state.snapshot())

    def _write_checkpoint(self) -> None:
        write_checkpoint(self.path, Checkpoint(self._recovery_point, self._log_start_offset,
                                               self._high_watermark, self._epochs.entries))

    # -- roll, retention, truncation -------------------------------------------------------

    def _roll(self) -> None:
        """Seal the active segment and start a new one at the log end offset (under the lock)."""
        self._active.seal()
        seg = Segment(self.path, self.log_end_offset, self.config.index_interval_bytes,
                      self.config.max_index_bytes, True)
        self._install_segments(self._segments + [seg])

    def roll(self) -> None:
        """Start a new segment now (no-op if the active one is empty)."""
        with self._lock:
            self._check_open()
            if not self._active.is_empty:
                self._roll()

    def reconfigure(self, **config: Any) -> None:
        """Apply a new configuration to the open log. New settings apply from the next append,
        roll, flush and retention run."""
        cfg = LogConfig.from_kwargs(**config)
        with self._lock:
            self._check_open()
            if cfg.flush != self.config.flush:
                self._wire_appends(cfg.flush)
            self.config = cfg
            self._segment_bytes = cfg.segment_bytes
            self._segment_ms = cfg.segment_ms or 0
            self._max_record_bytes = cfg.max_record_bytes
            self._verify_crc = cfg.verify_crc
            self._log_append_time = cfg.timestamp_type == "log_append_time"

    def set_high_watermark(self, offset: int) -> None:
        """Advance (or move back) the high watermark; it must lie in [log_start, log_end]."""
        with self._lock:
            self._check_open()
            if not self._log_start_offset <= offset <= self.log_end_offset:
                raise OffsetOutOfRangeError(
                    f"high watermark {offset} outside [{self._log_start_offset}, {self.log_end_offset}]")
            moved = offset > self._high_watermark
            self._high_watermark = offset
            if moved and self._notifier is not None:
                self._notifier.wake()  # consumers blocked in poll may read further now

    def set_leader_epoch(self, epoch: int) -> None:
        """Stamp ``epoch`` on batches appended from now on; it starts at the log end offset."""
        with self._lock:
            self._check_open()
            if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**31:
                raise InvalidArgumentError(f"leader epoch must be an int in [0, 2**31), not {epoch!r}")
            if epoch < self._epochs.latest_epoch:
                raise InvalidArgumentError(f"leader epoch {epoch} is older than {self._epochs.latest_epoch}")
            if self._epochs.assign(epoch, self.log_end_offset):
                self._leader_epoch = epoch
                self._write_checkpoint()

    @property
    def epoch_cache(self) -> list[tuple[int, int]]:
        """(leader epoch, start offset) pairs, oldest first."""
        return self._epochs.entries

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (largest epoch <= ``epoch``, its end offset)."""
        with self._lock:
            self._check_open()
            return self._epochs.end_offset_for(epoch, self.log_end_offset)

    def delete_before(self, offset: int) -> int:
        """Advance the log start offset to ``offset`` (<= high watermark) and delete the segments
        wholly before it. Returns the number of segments deleted."""
        with self._lock:
            self._check_open()
            if offset < 0:
                raise OffsetOutOfRangeError(f"cannot delete before negative offset {offset}")
            if offset <= self._log_start_offset:
                return 0
            if offset > self._high_watermark:
                raise OffsetOutOfRangeError(f"cannot delete before {offset}: high watermark is {self._high_watermark}")
            self._log_start_offset = offset
            deleted = self._delete_segments(lambda seg, next_base: next_base <= offset)
            self._epochs.truncate_from_start(offset)
            self._write_checkpoint()
            return deleted

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete whole sealed segments below the high watermark that retention_ms or
        retention_bytes no longer allow, and any wholly below the log start. Returns the number
        deleted."""
        cfg = self.config
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            self._check_open()
            excess = (sum(s.size for s in self._segments) - cfg.retention_bytes
                      if cfg.retention_bytes is not None else 0)

            def expired(seg: Segment, next_base: int) -> bool:
                nonlocal excess
                if next_base <= self._log_start_offset:  # nothing visible left (delete_before)
                    excess -= seg.size
                    return True
                if next_base > self._high_watermark:
                    return False
                if cfg.retention_ms is not None and 0 <= seg.max_timestamp < now - cfg.retention_ms:
                    excess -= seg.size
                    return True
                if excess > 0 and excess >= seg.size:
                    excess -= seg.size
                    return True
                return False

            deleted = self._delete_segments(expired)
            if deleted:
                start = self._segments[0].base_offset
                if start > self._log_start_offset:
                    self._log_start_offset = start
                    self._epochs.truncate_from_start(start)
                self._write_checkpoint()
            return deleted

    def _delete_segments(self, predicate: Callable[[Segment, int], bool]) -> int:
        """Delete the oldest sealed segments while ``predicate(segment, next_base)`` holds."""
        segs = self._segments
        n = 0
        while n < len(segs) - 1 and predicate(segs[n], segs[n + 1].base_offset):
            n += 1
        if n == 0:
            return 0
        for seg in segs[:n]:
            seg.delete()
        self._install_segments(segs[n:])
        fsync_directory(self.path)
        return n

    def _replace_segments(self, old: list[Segment], new: list[Segment]) -> None:
        """Put ``new`` in place of the consecutive sealed segments ``old``, which cover the same
        offsets (log compaction's swap: the caller holds the lock and has moved the files)."""
        segs = self._segments
        i = segs.index(old[0])
        if segs[i:i + len(old)] != old or self._active in old or new[0].base_offset != old[0].base_offset \
                or new[-1].next_offset != old[-1].next_offset:
            raise LogstoreError(f"compacted segments of {self.path} do not replace consecutive sealed segments")
        self._install_segments(segs[:i] + new + segs[i + len(old):])

    def truncate_to(self, offset: int) -> int:
        """Remove every record at or after ``offset`` (for replication). Whole batches only: if
        ``offset`` falls inside a batch, that batch goes too. Returns the new log end offset.
        Truncating below the log start empties the log and restarts it at ``offset``."""
        with self._lock:
            self._check_open()
            if offset < 0:
                raise OffsetOutOfRangeError(f"cannot truncate to negative offset {offset}")
            if offset >= self.log_end_offset:
                return self.log_end_offset
            segs = self._segments
            if offset < segs[0].base_offset or offset < self._log_start_offset or \
                    self._batch_start(offset) < self._log_start_offset:
                # nothing at or after the log start survives: restart the log empty
                for seg in segs:
                    seg.delete()
                start = max(offset if offset < self._log_start_offset else self._log_start_offset, 0)
                fresh = Segment(self.path, start, self.config.index_interval_bytes, self.config.max_index_bytes, True)
                self._install_segments([fresh])
                self._log_start_offset = start
                self._epochs = LeaderEpochCache([(self._leader_epoch, start)])
            else:
                keep = [s for s in segs if s.base_offset < offset or s is segs[0]]
                for seg in segs[len(keep):]:
                    seg.delete()
                last = keep[-1]
                if last.sealed:
                    last.activate(self.config.max_index_bytes)
                last.truncate_to(offset)
                self._install_segments(keep)
                self._epochs.truncate_from_end(self.log_end_offset)
                if self._epochs.latest_epoch != self._leader_epoch:
                    # the current epoch goes on from the new end (Kafka re-assigns it on append)
                    self._epochs.assign(self._leader_epoch, self.log_end_offset)
            leo = self.log_end_offset
            self._high_watermark = min(self._high_watermark, leo)
            self._recovery_point = min(self._recovery_point, leo)
            with self._sync_cond:
                self._synced_offset = min(self._synced_offset, leo)
            fsync_directory(self.path)
            self._write_checkpoint()
            # the producers' state may name truncated batches: rebuild it from what is left
            self.producer_state.clear()
            replay_producers(self, self._log_start_offset)
            self._write_producer_snapshot()
            return leo

    def _batch_start(self, offset: int) -> int:
        """Base offset of the batch holding ``offset`` (``offset`` itself at the log end)."""
        if offset >= self.log_end_offset:
            return offset
        base, position = self.position_of(offset)
        seg = self._segments[[s.base_offset for s in self._segments].index(base)]
        header = seg.read_bytes(position, 8)
        return int.from_bytes(header, "big", signed=True)

    # -- lookups -----------------------------------------------------------------------------

    def scan(self, start: int | None = None, end: int | None = None, max_bytes: int = 1 << 20
             ) -> Iterator[RecordBatchView]:
        """Views of the records from ``start`` (default: the log start) up to ``end`` (default:
        the high watermark as of the call), in offset order, ``max_bytes`` a read. If retention
        removes the position meanwhile, the scan goes on from the new log start; views holding
        only compacted-away offsets are skipped."""
        pos = self.log_start_offset if start is None else start
        end = self.high_watermark if end is None else end
        while pos < end:
            try:
                view = self.read(pos, max_bytes, end)
            except OffsetOutOfRangeError:
                if self.log_start_offset <= pos:
                    raise
                pos = self.log_start_offset
                continue
            if len(view):
                yield view
            if view.next_offset <= pos:
                return
            pos = view.next_offset

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``; None if
        every record is older."""
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise InvalidArgumentError(f"timestamp must be a non-negative int (ms), not {timestamp!r}")
        with self._lock:
            self._check_open()
            for seg in self._segments:
                if seg.max_timestamp < timestamp or seg.next_offset <= self._log_start_offset:
                    continue
                if seg.buffered_bytes:
                    seg.flush_buffer()
                found = seg.find_timestamp(timestamp, self._log_start_offset)
                if found is not None:
                    return found
            return None

    # -- state -------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        with self._lock:
            self._check_open()
            return sum(s.size for s in self._segments)

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    def segments(self) -> list[dict[str, int]]:
        """One dict per segment: base offset, next offset, size, max timestamp."""
        with self._lock:
            self._check_open()
            return [{"base_offset": s.base_offset, "next_offset": s.next_offset, "size": s.size,
                     "max_timestamp": s.max_timestamp} for s in self._segments]

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the log is closed")

    def close(self) -> None:
        """Flush, trim the indexes, write the checkpoint and the clean-shutdown marker. Idempotent."""
        with self._lock:
            if self._closed:
                return
            FLUSHER.unregister(self)
            try:
                self._active.seal()
                for seg in self._segments:
                    if seg.next_offset > self._recovery_point or seg is self._active:
                        seg.sync()
                self._recovery_point = self.log_end_offset
                self._write_checkpoint()
                write_snapshot(self.path, self.log_end_offset, self.producer_state.snapshot())
                for seg in self._segments:
                    seg.close()
                with open(os.path.join(self.path, CLEAN_SHUTDOWN), "wb") as f:
                    os.fsync(f.fileno())
                fsync_directory(self.path)
            finally:
                self._closed = True
                self._release_directory()
                with self._sync_cond:
                    self._sync_cond.notify_all()

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"[{self._log_start_offset}, {self.log_end_offset})"
        return f"PartitionLog({self.path!r}, {state})"

    def __del__(self) -> None:
        # no flush here: an unreferenced open log behaves like a crash (recovered on next open)
        if getattr(self, "_lock_fd", -1) >= 0 and not self._closed:
            self._release_directory()


__all__ = ["PartitionLog", "RecordBatchView"]
