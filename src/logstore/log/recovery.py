"""Bringing a partition directory back to a consistent state on open.

Clean open (shutdown marker present, checkpoint valid): every segment's indexes are trusted after
a sanity check. Unclean open: segments wholly below the checkpointed recovery point are trusted
the same way; the rest are re-validated batch by batch (size, magic, CRC32C, offset order), the
first bad or torn batch cuts the log, and every later segment is dropped. Any index that fails
its sanity check is rebuilt from its segment. Nothing here raises on damage: it is reported in
``RecoveryReport`` and logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from logstore._native.segment import Segment
from logstore.errors import CorruptRecordError, UnsupportedCodecError
from logstore.log.checkpoint import Checkpoint

log = logging.getLogger("logstore.log")

SUFFIXES = (".log", ".index", ".timeindex")
# index entries are 32-bit offsets relative to the segment's base: base + 2**32 must fit int64
MAX_BASE_OFFSET = 2**63 - 1 - 2**32


@dataclass
class RecoveryReport:
    """What opening the log found and did (all zero after a clean shutdown of a healthy log)."""

    clean_shutdown: bool = True
    checkpoint_valid: bool = True
    segments_scanned: int = 0
    indexes_rebuilt: int = 0
    truncated_bytes: int = 0
    segments_dropped: int = 0
    stray_files_removed: int = 0
    epochs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def cut(self) -> bool:
        return self.truncated_bytes > 0 or self.segments_dropped > 0


def segment_bases(directory: str, report: RecoveryReport) -> list[int]:
    """Base offsets of the segments on disk; removes leftovers (temp files, orphan indexes)."""
    bases = set()
    names = os.listdir(directory)
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext == ".log" and len(stem) == 20 and stem.isdigit() and int(stem) <= MAX_BASE_OFFSET:
            bases.add(int(stem))
    for name in names:
        stem, ext = os.path.splitext(name)
        stray = name.endswith((".tmp", ".deleted", ".cleaned")) and not name.startswith("partition.checkpoint")
        orphan = ext in (".index", ".timeindex") and (not stem.isdigit() or int(stem) not in bases)
        if stray or orphan:
            os.unlink(os.path.join(directory, name))
            report.stray_files_removed += 1
    return sorted(bases)


def open_segments(directory: str, bases: list[int], index_interval: int, max_index_bytes: int,
                  clean: bool, checkpoint: Checkpoint | None, full: bool,
                  report: RecoveryReport) -> list[Segment]:
    """Open and (where needed) recover every segment; returns the consistent prefix."""
    recovery_point = checkpoint.recovery_point if checkpoint is not None else 0
    trust_all = clean and checkpoint is not None and not full
    segments: list[Segment] = []
    for i, base in enumerate(bases):
        is_last = i == len(bases) - 1
        seg = Segment(directory, base, index_interval, max_index_bytes, is_last)
        next_base = bases[i + 1] if not is_last else None
        trusted = trust_all or (not full and next_base is not None and next_base <= recovery_point)
        expect_start = segments[-1].next_offset if segments else base
        if base != expect_start:
            # a gap or overlap with the previous segment: everything from here on is unusable
            seg.delete()
            report.segments_dropped += 1
            log.warning("dropping segment %d of %s: it does not follow offset %d", base, directory, expect_start)
            _drop(directory, bases[i + 1:], report)
            break
        if trusted:
            try:
                seg.load()
                if next_base is not None and seg.next_offset != next_base:
                    raise CorruptRecordError("segment does not end where the next one starts")
            except CorruptRecordError as e:
                log.warning("rebuilding indexes of segment %d in %s: %s", base, directory, e)
                report.indexes_rebuilt += 1
                trusted = False
        if not trusted:
            report.segments_scanned += 1
            try:
                truncated, epochs = seg.recover(True, base)
            except UnsupportedCodecError:
                seg.close()
                raise
            report.epochs.extend(epochs)
            if truncated or (next_base is not None and seg.next_offset != next_base):
                report.truncated_bytes += truncated
                log.warning("cut %s at offset %d: %d bytes of invalid or torn batches removed from segment %d",
                            directory, seg.next_offset, truncated, base)
                segments.append(seg)
                _drop(directory, bases[i + 1:], report)
                break
        segments.append(seg)
    return segments


def _drop(directory: str, bases: list[int], report: RecoveryReport) -> None:
    for base in bases:
        stem = os.path.join(directory, "%020d" % base)
        for suffix in SUFFIXES:
            try:
                os.unlink(stem + suffix)
            except FileNotFoundError:
                pass
        report.segments_dropped += 1
        log.warning("dropped segment %d of %s after a cut", base, directory)
