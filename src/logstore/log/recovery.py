"""Bringing a partition directory back to a consistent state on open.

Clean open (shutdown marker present, checkpoint valid): every segment's indexes are trusted after
a sanity check. Unclean open: segments wholly below the checkpointed recovery point are trusted
the same way; the rest are re-validated batch by batch (size, magic, CRC32C, offset order), the
first bad or torn batch cuts the log, and every later segment is dropped. Any index that fails
its sanity check is rebuilt from its segment. Nothing here raises on damage: it is reported in
``RecoveryReport`` and logged.

Compaction (``logstore.log.compaction``) swaps cleaned segments in through two directories in the
partition directory. ``.cleaning-*`` holds a cleaned segment being written: it is not committed,
and is deleted on open. ``.swap-<base>`` is a committed swap: its ``manifest`` names the segments
it replaces, and ``complete_swap`` finishes it (deletes those, moves the new files into place) on
open, before the segments are listed, and idempotently, so a crash at any point of the swap, or of
its completion, leaves the log either as before the swap or as after it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash

from logstore._native.segment import Segment
from logstore.errors import CorruptRecordError, UnsupportedCodecError
from logstore.log.checkpoint import Checkpoint, fsync_directory

log = logging.getLogger("logstore.log")

SUFFIXES = (".log", ".index", ".timeindex")
# index entries are 32-bit offsets relative to the segment's base: base + 2**32 must fit int64
MAX_BASE_OFFSET = 2**63 - 1 - 2**32

SCRATCH_PREFIX = ".cleaning"
SWAP_PREFIX = ".swap-"
MANIFEST = "manifest"
MANIFEST_MAGIC = "logstore-swap 1"


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
    compactions_completed: int = 0
    """Compaction swaps that were committed but interrupted, finished on open."""

    @property
    def cut(self) -> bool:
        return self.truncated_bytes > 0 or self.segments_dropped > 0


def segment_bases(directory: str, report: RecoveryReport) -> list[int]:
    """Base offsets of the segments on disk; finishes interrupted compaction swaps first, then
    removes leftovers (temp files, orphan indexes, uncommitted compaction output)."""
    finish_compactions(directory, report)
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


# -- compaction swaps ---------------------------------------------------------------------------

def encode_swap_manifest(replaces: list[int], installs: list[int]) -> bytes:
    """The manifest of a swap: the segments it replaces and the ones it installs (base offsets)."""
    body = (f"{MANIFEST_MAGIC}\nreplaces {' '.join(map(str, replaces))}\n"
            f"installs {' '.join(map(str, installs))}\n").encode()
    return body + f"xxh64 {xxhash.xxh64_hexdigest(body)}\n".encode()


def decode_swap_manifest(data: bytes) -> tuple[list[int], list[int]] | None:
    """(replaces, installs) of a manifest; None if it is damaged in any way."""
    try:
        body, _, tail = data.rpartition(b"xxh64 ")
        if not body or tail.strip().decode() != xxhash.xxh64_hexdigest(body):
            return None
        lines = body.decode().splitlines()
        if len(lines) != 3 or lines[0] != MANIFEST_MAGIC:
            return None
        fields = dict(line.partition(" ")[::2] for line in lines[1:])
        replaces = [int(b) for b in fields["replaces"].split()]
        installs = [int(b) for b in fields["installs"].split()]
    except (ValueError, KeyError, UnicodeDecodeError):
        return None
    if not replaces or not installs or min(replaces + installs) < 0:
        return None
    return replaces, installs


def complete_swap(directory: str, name: str, hook: Callable[[str], None] | None = None) -> bool:
    """Finish the committed swap ``directory/name``: delete the segments it replaces (except
    those it installs anew), move its files into ``directory``, remove it. Idempotent: safe to
    run again after a crash at any point of a previous run. ``hook(point)`` is called after each
    step (crash tests). Returns False, leaving everything as it is, if the manifest is damaged."""
    swap = os.path.join(directory, name)
    try:
        with open(os.path.join(swap, MANIFEST), "rb") as f:
            manifest = decode_swap_manifest(f.read())
    except FileNotFoundError:
        manifest = None
        if not os.listdir(swap):  # a crash after the last file moved, before the directory went
            os.rmdir(swap)
            fsync_directory(directory)
            return True
    if manifest is None:
        log.error("compaction swap %s cannot be completed: its manifest is missing or damaged; left in place", swap)
        return False
    replaces, installs = manifest
    for base in replaces:
        if base in installs:
            continue  # replaced by the file of the same name moved in below
        stem = os.path.join(directory, "%020d" % base)
        for suffix in SUFFIXES:
            try:
                os.unlink(stem + suffix)
            except FileNotFoundError:
                pass
        if hook is not None:
            hook("old-deleted")
    for file_name in sorted(os.listdir(swap)):
        if file_name != MANIFEST:
            os.replace(os.path.join(swap, file_name), os.path.join(directory, file_name))
            if hook is not None:
                hook("new-moved")
    fsync_directory(directory)
    os.unlink(os.path.join(swap, MANIFEST))
    os.rmdir(swap)
    fsync_directory(directory)
    return True


def finish_compactions(directory: str, report: RecoveryReport) -> None:
    """On open: delete uncommitted compaction output and complete committed swaps."""
    for name in sorted(os.listdir(directory)):
        if name.startswith(SCRATCH_PREFIX):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            report.stray_files_removed += 1
        elif name.startswith(SWAP_PREFIX) and os.path.isdir(os.path.join(directory, name)):
            if complete_swap(directory, name):
                report.compactions_completed += 1
                log.warning("completed an interrupted compaction swap in %s (%s)", directory, name)
