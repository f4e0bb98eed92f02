"""``logstore dump``: decode segment (.log) and index (.index, .timeindex) files, and verify them.

Works on the files alone (nothing is opened for writing, no lock is taken), so it can look at the
directory of a running store or at a copy of a damaged one. The layout is docs/format.md: batches
are parsed here with ``struct`` so a damaged header can be described rather than only rejected; the
records of a batch are decoded by the native ``RecordBatchView``; CRC32C is the native one.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TextIO

import click
import numpy as np
import numpy.typing as npt

from logstore._native.codec import HEADER_SIZE, LOG_OVERHEAD, MAGIC, RecordBatchView, crc32c
from logstore._native.index import OFFSET_ENTRY_SIZE, TIME_ENTRY_SIZE
from logstore.cli.output import CliContext, format_timestamp, preview, progress, want_progress, write_line
from logstore.errors import LogstoreError
from logstore.log.checkpoint import FILE_NAME as CHECKPOINT_FILE, Checkpoint

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
# maxTimestamp, producerId, producerEpoch, baseSequence, recordCount (docs/format.md §2)
BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
assert BATCH_HEADER.size == HEADER_SIZE
CRC_START = 21  # the CRC covers attributes .. end of batch
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
MAX_BATCH_LENGTH = 0x7FFFFFFF - LOG_OVERHEAD
MIN_RECORD_BYTES = 7  # length, attributes, timestamp delta, offset delta, key length, value length, header count
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
OFFSET_ENTRY = np.dtype([("relative_offset", ">u4"), ("position", ">u4")])
TIME_ENTRY = np.dtype([("timestamp", ">i8"), ("relative_offset", ">u4")])
assert OFFSET_ENTRY.itemsize == OFFSET_ENTRY_SIZE and TIME_ENTRY.itemsize == TIME_ENTRY_SIZE
SEGMENT_SUFFIXES = (".log", ".index", ".timeindex")


@dataclass
class DumpOptions:
    """The command's flags, handed to each file's dumper."""

    verify: bool
    print_records: bool
    offsets_only: bool
    quiet: bool


@dataclass
class Batch:
    """One batch header as found in a .log, with what the scan concluded about it."""

    position: int
    base_offset: int
    length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    crc_computed: int

    @property
    def size(self) -> int:
        return self.length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def crc_valid(self) -> bool:
        return self.crc == self.crc_computed

    @property
    def codec(self) -> int:
        return self.attributes & 0x07

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & 0x08)

    def describe(self) -> str:
        return f"batch at position {self.position} (offsets {self.base_offset}..{self.last_offset})"


@dataclass
class LogScan:
    """Everything verification of a .log and its indexes needs, kept as compact columns."""

    path: str
    base_offset: int
    file_size: int
    positions: list[int] = field(default_factory=list)
    base_offsets: list[int] = field(default_factory=list)
    last_offsets: list[int] = field(default_factory=list)
    max_timestamps: list[int] = field(default_factory=list)
    records: int = 0
    valid_end: int = 0  # where the last well-framed batch ends
    problems: list[str] = field(default_factory=list)

    @property
    def next_offset(self) -> int:
        return self.last_offsets[-1] + 1 if self.last_offsets else self.base_offset


class Findings:
    """Problems found so far, printed to stderr as they are found (the dump itself goes to stdout)."""

    def __init__(self) -> None:
        self.count = 0
        self.files: set[str] = set()

    def report(self, path: str, message: str) -> None:
        self.count += 1
        self.files.add(path)
        sys.stdout.flush()  # keep the problem next to the batch it is about when both go to a terminal
        click.echo(f"PROBLEM {path}: {message}", err=True)


def segment_base_offset(path: str) -> int | None:
    """The base offset in a segment file's name (20 decimal digits), or None for another name."""
    stem = os.path.basename(path).rsplit(".", 1)[0]
    return int(stem) if len(stem) == 20 and stem.isdigit() else None


Buffer = bytes | mmap.mmap


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@contextlib.contextmanager
def mapped_file(path: str) -> Iterator[Buffer]:
    """A segment mapped read-only: a 1 GiB .log is paged through, not copied into memory."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""  # an empty file cannot be mapped
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


# -- .log ----------------------------------------------------------------------------------------


def iter_batches(data: Buffer, scan: LogScan) -> Generator[Batch, None, None]:
    """Batches of a .log in order; framing problems go to ``scan.problems`` and end the walk.

    A batch whose CRC does not match is still yielded (its framing holds, so the walk can go on);
    a header whose length, magic or extent cannot be trusted stops it: what follows cannot be found.
    """
    pos, n = 0, len(data)
    expected_next = scan.base_offset
    view = memoryview(data)
    try:
        while pos < n:
            if n - pos < HEADER_SIZE:
                scan.problems.append(f"position {pos}: {n - pos} trailing bytes, less than a batch header "
                                     f"({HEADER_SIZE} bytes)")
                return
            header = BATCH_HEADER.unpack_from(data, pos)
            (base_offset, length, leader_epoch, magic, crc, attributes, last_offset_delta, base_timestamp,
             max_timestamp, producer_id, producer_epoch, base_sequence, record_count) = header
            where = f"batch at position {pos} (base offset {base_offset})"
            if not MIN_BATCH_LENGTH <= length <= MAX_BATCH_LENGTH:
                scan.problems.append(f"{where}: batch length {length} out of range; the rest of the file "
                                     f"({n - pos} bytes) cannot be framed")
                return
            if magic != MAGIC:
                scan.problems.append(f"{where}: magic {magic}, expected {MAGIC}; the rest of the file "
                                     f"({n - pos} bytes) cannot be framed")
                return
            size = length + LOG_OVERHEAD
            if pos + size > n:
                scan.problems.append(f"{where}: truncated, needs {size} bytes but {n - pos} are left")
                return
            batch = Batch(pos, base_offset, length, leader_epoch, magic, crc, attributes, last_offset_delta,
                          base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, record_count,
                          crc_computed=crc32c(view[pos + CRC_START:pos + size]))
            if not batch.crc_valid:
                scan.problems.append(f"{batch.describe()}: CRC32C mismatch (stored 0x{batch.crc:08x}, "
                                     f"computed 0x{batch.crc_computed:08x})")
            if batch.last_offset_delta < 0 or batch.record_count < 0 \
                    or batch.record_count > (size - HEADER_SIZE) // MIN_RECORD_BYTES:
                scan.problems.append(f"{batch.describe()}: lastOffsetDelta {batch.last_offset_delta} / "
                                     f"recordCount {batch.record_count} impossible for a {size}-byte batch")
            if base_offset < expected_next:
                scan.problems.append(f"{batch.describe()}: base offset below the expected next offset {expected_next}")
            elif base_offset - scan.base_offset > 0xFFFFFFFF:
                scan.problems.append(f"{batch.describe()}: offset too far from the segment base {scan.base_offset}")
            expected_next = max(expected_next, batch.last_offset + 1)
            scan.positions.append(pos)
            scan.base_offsets.append(base_offset)
            scan.last_offsets.append(batch.last_offset)
            scan.max_timestamps.append(batch.max_timestamp)
            scan.records += max(batch.record_count, 0)
            pos += size
            scan.valid_end = pos
            yield batch
    finally:
        view.release()


def decode_records(data: Buffer, batch: Batch) -> RecordBatchView:
    """The batch's records (framing checked by the native walker); CorruptRecordError if it is malformed."""
    records = RecordBatchView(data[batch.position:batch.position + batch.size], verify_crc=False)
    if len(records) != batch.record_count:
        raise LogstoreError(f"recordCount says {batch.record_count} records but {len(records)} were found")
    return records


def format_batch(batch: Batch) -> str:
    return (f"baseOffset: {batch.base_offset} lastOffset: {batch.last_offset} count: {batch.record_count} "
            f"position: {batch.position} size: {batch.size} leaderEpoch: {batch.leader_epoch} "
            f"producerId: {batch.producer_id} producerEpoch: {batch.producer_epoch} "
            f"baseSequence: {batch.base_sequence} "
            f"isTransactional: {str(bool(batch.attributes & 0x10)).lower()} "
            f"isControl: {str(bool(batch.attributes & 0x20)).lower()} "
            f"compression: {CODECS.get(batch.codec, f'unknown({batch.codec})')} attributes: 0x{batch.attributes:04x} "
            f"timestampType: {'LOG_APPEND_TIME' if batch.log_append_time else 'CREATE_TIME'} "
            f"baseTimestamp: {batch.base_timestamp} maxTimestamp: {batch.max_timestamp} "
            f"({format_timestamp(batch.max_timestamp)}) crc: 0x{batch.crc:08x} isValid: {str(batch.crc_valid).lower()}")


def dump_log(path: str, options: DumpOptions, findings: Findings, advance: Callable[[int], None]) -> LogScan:
    with mapped_file(path) as data:
        return dump_mapped_log(path, data, options, findings, advance)


def dump_mapped_log(path: str, data: Buffer, options: DumpOptions, findings: Findings,
                    advance: Callable[[int], None]) -> LogScan:
    base = segment_base_offset(path)
    scan = LogScan(path, base if base is not None else 0, len(data))
    if base is None and len(data) >= 8:
        scan.base_offset = max(int.from_bytes(data[:8], "big", signed=True), 0)  # not a segment name: trust the file
    out = sys.stdout
    if not options.quiet:
        write_line(f"Dumping {path}", out)
        write_line(f"Starting offset: {scan.base_offset}", out)
    reported = 0
    advanced = 0
    batches = iter_batches(data, scan)
    try:
        for batch in batches:
            for problem in scan.problems[reported:]:
                findings.report(path, problem)
            reported = len(scan.problems)
            if not options.quiet and not options.offsets_only:
                write_line(format_batch(batch), out)
            walk = options.verify or options.print_records or options.offsets_only
            if walk and batch.crc_valid:  # a failed CRC already says the bytes are wrong; do not decode them
                if batch.codec != 0:
                    if options.print_records or options.offsets_only:
                        write_line(f"| records not shown: {CODECS.get(batch.codec, 'unknown')}-compressed batch", out)
                else:
                    try:
                        records = decode_records(data, batch)
                    except LogstoreError as exc:
                        message = f"{batch.describe()}: malformed records: {exc}"
                        scan.problems.append(message)
                        reported += 1
                        findings.report(path, message)
                    else:
                        if not options.quiet:
                            write_records(records, batch, options, out)
            advanced_to = batch.position + batch.size
            advance(advanced_to - advanced)
            advanced = advanced_to
    finally:
        batches.close()  # drop its view of the map before the map is closed
    for problem in scan.problems[reported:]:
        findings.report(path, problem)
    advance(len(data) - advanced)
    if options.verify:
        state = "OK" if not scan.problems else f"{len(scan.problems)} problem(s)"
        span = f"offsets {scan.base_offsets[0]}..{scan.next_offset - 1}" if scan.positions else "no offsets"
        write_line(f"Verified {path}: {len(scan.positions)} batches, {scan.records} records, {span}, "
                   f"{scan.valid_end} of {len(data)} bytes framed: {state}", out)
    return scan


def write_records(records: RecordBatchView, batch: Batch, options: DumpOptions, out: TextIO) -> None:
    if options.offsets_only:
        for offset in records.offsets.tolist():
            out.write(f"offset: {offset} position: {batch.position}\n")
        return
    if not options.print_records:
        return
    time_label = "LogAppendTime" if batch.log_append_time else "CreateTime"
    for record in records:
        key, value = record.key, record.value
        headers = ", ".join(f"{name}={preview(hv, 20)}" for name, hv in record.headers)
        out.write(f"| offset: {record.offset} {time_label}: {record.timestamp} "
                     f"keySize: {-1 if key is None else len(key)} valueSize: {-1 if value is None else len(value)} "
                     f"headers: [{headers}] key: {preview(key)} value: {preview(value)}\n")


# -- indexes -------------------------------------------------------------------------------------


def load_entries(path: str, dtype: np.dtype[np.void], findings: Findings) -> tuple[npt.NDArray[np.void], int]:
    """The entries of an index file and how many unused (all-zero, preallocated) entries follow them."""
    data = read_file(path)
    whole = len(data) - len(data) % dtype.itemsize
    if whole != len(data):
        findings.report(path, f"size {len(data)} is not a multiple of the {dtype.itemsize}-byte entry size; "
                              f"{len(data) - whole} trailing bytes ignored")
    entries = np.frombuffer(data, dtype=dtype, count=whole // dtype.itemsize)
    # an active segment's index is preallocated with zeros: its entries end where the zero tail starts
    raw = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(-1, dtype.itemsize)
    nonzero = np.flatnonzero(raw.any(axis=1))
    used = int(nonzero[-1]) + 1 if len(nonzero) else 0
    return entries[:used], len(entries) - used


def matching_log(path: str, scans: dict[str, LogScan], findings: Findings) -> LogScan | None:
    log_path = path.rsplit(".", 1)[0] + ".log"
    if log_path in scans:
        return scans[log_path]
    if not os.path.exists(log_path):
        findings.report(path, f"no matching {os.path.basename(log_path)}: the entries cannot be checked")
        return None
    base = segment_base_offset(log_path)
    with mapped_file(log_path) as data:
        scan = LogScan(log_path, base if base is not None else 0, len(data))
        for _ in iter_batches(data, scan):
            pass
    scans[log_path] = scan
    return scan


def index_base_offset(path: str, scans: dict[str, LogScan]) -> int:
    base = segment_base_offset(path)
    if base is not None:
        return base
    log_scan = scans.get(path.rsplit(".", 1)[0] + ".log")
    return log_scan.base_offset if log_scan is not None else 0


def dump_offset_index(path: str, options: DumpOptions, findings: Findings, scans: dict[str, LogScan]) -> None:
    entries, unused = load_entries(path, OFFSET_ENTRY, findings)
    log_scan = matching_log(path, scans, findings) if options.verify else None
    base = log_scan.base_offset if log_scan is not None else index_base_offset(path, scans)
    out = sys.stdout
    if not options.quiet:
        write_line(f"Dumping {path}", out)
        for rel, position in zip(entries["relative_offset"].tolist(), entries["position"].tolist()):
            write_line(f"offset: {base + rel} position: {position}", out)
        if unused:
            write_line(f"({unused} unused preallocated entries)", out)
    if not options.verify:
        return
    problems = 0
    batch_at = {} if log_scan is None else dict(zip(log_scan.positions, log_scan.base_offsets))
    previous_rel, previous_position = -1, 0
    for i, (rel, position) in enumerate(zip(entries["relative_offset"].tolist(), entries["position"].tolist())):
        where = f"entry {i} (offset {base + rel}, position {position})"
        message = None
        if rel <= previous_rel or position <= previous_position:
            message = f"{where}: entries must strictly increase (previous: offset {base + previous_rel}, " \
                      f"position {previous_position})"
        elif log_scan is not None:
            if position >= log_scan.file_size:
                message = (f"{where}: position past the end of {os.path.basename(log_scan.path)} "
                           f"({log_scan.file_size} bytes)")
            elif position not in batch_at:
                message = f"{where}: position is not the start of a batch"
            elif batch_at[position] != base + rel:
                message = f"{where}: the batch at that position has base offset {batch_at[position]}"
        if message is not None:
            problems += 1
            findings.report(path, message)
        previous_rel, previous_position = rel, position
    write_line(f"Verified {path}: {len(entries)} entries: {'OK' if not problems else f'{problems} problem(s)'}", out)


def dump_time_index(path: str, options: DumpOptions, findings: Findings, scans: dict[str, LogScan]) -> None:
    entries, unused = load_entries(path, TIME_ENTRY, findings)
    log_scan = matching_log(path, scans, findings) if options.verify else None
    base = log_scan.base_offset if log_scan is not None else index_base_offset(path, scans)
    out = sys.stdout
    timestamps, rels = entries["timestamp"].tolist(), entries["relative_offset"].tolist()
    if not options.quiet:
        write_line(f"Dumping {path}", out)
        for ts, rel in zip(timestamps, rels):
            write_line(f"timestamp: {ts} ({format_timestamp(ts)}) offset: {base + rel}", out)
        if unused:
            write_line(f"({unused} unused preallocated entries)", out)
    if not options.verify:
        return
    problems = 0
    last_offsets = np.asarray(log_scan.last_offsets if log_scan else [], dtype=np.int64)
    base_offsets = np.asarray(log_scan.base_offsets if log_scan else [], dtype=np.int64)
    # running maximum of maxTimestamp: what an entry's timestamp must equal at its batch (docs/format.md §4.2)
    running_max = np.maximum.accumulate(np.asarray(log_scan.max_timestamps if log_scan else [], dtype=np.int64))
    previous_ts, previous_rel = None, -1
    for i, (ts, rel) in enumerate(zip(timestamps, rels)):
        offset = base + rel
        where = f"entry {i} (timestamp {ts}, offset {offset})"
        message = None
        if previous_ts is not None and ts <= previous_ts:
            message = f"{where}: timestamps must increase (previous {previous_ts})"
        elif rel < previous_rel:
            message = f"{where}: offsets must not decrease (previous {base + previous_rel})"
        elif log_scan is not None:
            k = int(np.searchsorted(last_offsets, offset))  # first batch whose last offset >= offset
            if k == len(last_offsets) or base_offsets[k] > offset:
                message = f"{where}: no batch in {os.path.basename(log_scan.path)} holds that offset"
            elif running_max[k] != ts or (k > 0 and running_max[k - 1] >= ts):
                message = (f"{where}: the batches up to that offset reach timestamp {int(running_max[k])}, "
                           f"not first at that offset")
        if message is not None:
            problems += 1
            findings.report(path, message)
        previous_ts, previous_rel = ts, rel
    # a sealed segment's time index ends with an entry for its maximum timestamp; an active one (still
    # preallocated: unused entries) gets it only when sealed, so it may be empty
    if log_scan is not None and log_scan.positions and not len(entries) and not unused:
        problems += 1
        findings.report(path, "empty, but the segment holds batches (a sealed segment's time index has its "
                              "final entry)")
    write_line(f"Verified {path}: {len(entries)} entries: {'OK' if not problems else f'{problems} problem(s)'}", out)


# -- partition directories -----------------------------------------------------------------------


def segment_files(directory: str) -> list[str]:
    """The segment files of a partition directory in base-offset order: .log, .index, .timeindex each."""
    bases = sorted(base for name in os.listdir(directory) if name.endswith(".log")
                   and (base := segment_base_offset(name)) is not None)
    files = []
    for base in bases:
        for suffix in SEGMENT_SUFFIXES:
            path = os.path.join(directory, "%020d%s" % (base, suffix))
            if os.path.exists(path):
                files.append(path)
    return files


def dump_checkpoint(directory: str, options: DumpOptions, findings: Findings) -> None:
    path = os.path.join(directory, CHECKPOINT_FILE)
    if not os.path.exists(path):
        if not options.quiet:
            write_line(f"{path}: missing (the log recovers from its segments)")
        return
    with open(path, "rb") as f:
        checkpoint = Checkpoint.decode(f.read())
    if checkpoint is None:
        message = "damaged (wrong checksum or fields); the log will recover from its segments"
        if options.verify:
            findings.report(path, message)
        elif not options.quiet:
            write_line(f"{path}: {message}")
        return
    if options.quiet:
        return
    epochs = ", ".join(f"{e}@{o}" for e, o in checkpoint.epochs) or "none"
    write_line(f"{path}: recovery point {checkpoint.recovery_point}, log start offset {checkpoint.log_start_offset}, "
               f"high watermark {checkpoint.high_watermark}, leader epochs {epochs}")


def check_chain(directory: str, scans: dict[str, LogScan], findings: Findings) -> None:
    """Each segment must start where the previous one ends (recovery drops everything after a gap)."""
    logs = [scans[p] for p in segment_files(directory) if p.endswith(".log") and p in scans]
    for previous, current in zip(logs, logs[1:]):
        if previous.next_offset != current.base_offset:
            findings.report(current.path, f"segment starts at offset {current.base_offset} but the previous one "
                                          f"ends at {previous.next_offset}")


# -- the command ---------------------------------------------------------------------------------


def expand_paths(paths: tuple[str, ...], data_dir: str) -> list[tuple[str, str | None]]:
    """(file, partition directory it came from) for each PATH; a missing PATH may name a partition in --dir."""
    out: list[tuple[str, str | None]] = []
    for given in paths:
        path = given
        if not os.path.exists(path) and os.path.isdir(os.path.join(data_dir, given)):
            path = os.path.join(data_dir, given)  # `logstore dump orders-0`
        if os.path.isdir(path):
            files = segment_files(path)
            if not files:
                raise click.BadParameter(f"{given}: a directory without segment files", param_hint="PATH")
            out.extend((f, path) for f in files)
        elif os.path.isfile(path):
            if not path.endswith(SEGMENT_SUFFIXES):
                raise click.BadParameter(f"{given}: not a .log, .index or .timeindex file", param_hint="PATH")
            out.append((path, None))
        else:
            raise click.BadParameter(f"{given}: no such file or directory", param_hint="PATH")
    return out


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--verify", is_flag=True, help="Check CRC32C and framing of every batch and that index entries "
              "point at real batches; exit 1 if anything is wrong.")
@click.option("--print-records", is_flag=True, help="Also print every record of every batch.")
@click.option("--offsets-only", is_flag=True, help="Print one line per record (offset and batch position), no batches.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the --verify summaries.")
@click.pass_obj
def dump(ctx: CliContext, paths: tuple[str, ...], verify: bool, print_records: bool, offsets_only: bool,
         quiet: bool) -> None:
    """Decode .log, .index and .timeindex files (a partition directory: all its segments in order).

    Problems are printed to stderr as PROBLEM lines. With --verify the exit status is 1 when any
    is found; without it, a dump shows damage (isValid: false) but exits 0.
    """
    options = DumpOptions(verify, print_records, offsets_only, quiet)
    files = expand_paths(paths, ctx.data_dir)
    findings = Findings()
    scans: dict[str, LogScan] = {}
    total = sum(os.path.getsize(f) for f, _ in files)
    directories_done: set[str] = set()
    # a bar for big inputs only (a small dump is done before it would draw), unless --progress asks for it
    show = ctx.progress if ctx.progress is not None else want_progress(ctx) and total >= 16 << 20
    with progress(show, "dump", total, unit="bytes") as reporter:
        for path, directory in files:
            if directory is not None and directory not in directories_done:
                directories_done.add(directory)
                dump_checkpoint(directory, options, findings)
            reporter.describe(os.path.basename(path))
            if path.endswith(".log"):
                scans[path] = dump_log(path, options, findings, reporter.advance)
            elif path.endswith(".timeindex"):
                dump_time_index(path, options, findings, scans)
                reporter.advance(os.path.getsize(path))
            else:
                dump_offset_index(path, options, findings, scans)
                reporter.advance(os.path.getsize(path))
        if verify:
            for directory in directories_done:
                check_chain(directory, scans, findings)
    if verify and findings.count:
        raise DumpVerificationError(f"verification failed: {findings.count} problem(s) in "
                                    f"{len(findings.files)} file(s)")


class DumpVerificationError(LogstoreError):
    """``dump --verify`` found damage (exit status 1, like any logstore error)."""
