"""``logstore produce``: records from stdin, one a line (plain, ``KEY<sep>VALUE``, or JSON objects)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import click

from logstore.cli.output import CliContext, bytes_of_json, parse_key_values, parse_timestamp, progress, want_progress
from logstore.cli.store import open_store
from logstore.errors import LogstoreError

Headers = list[tuple[str, bytes | None]]


@dataclass
class OutgoingRecord:
    value: bytes | None
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    partition: int | None = None
    timestamp_ms: int | None = None


class InputError(click.ClickException):
    """A line of input that cannot be turned into a record (exit status 1, with the line number)."""


@dataclass
class PartitionSummary:
    records: int = 0
    first_offset: int = -1
    last_offset: int = -1

    def add(self, offset: int) -> None:
        if self.records == 0:
            self.first_offset = offset
        self.records += 1
        self.last_offset = offset


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its line ending); a last line without a newline still counts."""
    for number, line in enumerate(stream, start=1):
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield number, line


def parse_plain(line: bytes, number: int, separator: bytes | None) -> OutgoingRecord:
    if separator is None:
        return OutgoingRecord(value=line)
    key, found, value = line.partition(separator)
    if not found:
        raise InputError(f"line {number}: no key separator {separator.decode(errors='replace')!r}")
    return OutgoingRecord(value=value, key=key)


def parse_json_headers(raw: Any, number: int) -> Headers:
    if raw is None:
        return []
    pairs: list[Any]
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = raw
    else:
        raise InputError(f"line {number}: headers must be an object or a list of [key, value] pairs")
    headers: Headers = []
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InputError(f"line {number}: each header must be a [string key, value] pair, not {pair!r}")
        headers.append((pair[0], bytes_of_json(pair[1], f"line {number}: header {pair[0]}")))
    return headers


JSON_FIELDS = frozenset({"value", "key", "headers", "partition", "timestamp"})


def parse_json_line(line: bytes, number: int) -> OutgoingRecord:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InputError(f"line {number}: invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"line {number}: expected a JSON object with a \"value\", not {type(obj).__name__}")
    unknown = set(obj) - JSON_FIELDS
    if unknown:
        raise InputError(f"line {number}: unknown field(s) {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(sorted(JSON_FIELDS))}")
    partition = obj.get("partition")
    if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int)):
        raise InputError(f"line {number}: partition must be an integer")
    timestamp = obj.get("timestamp")
    if timestamp is not None:
        if isinstance(timestamp, str):
            try:
                timestamp = parse_timestamp(timestamp)
            except click.BadParameter as exc:
                raise InputError(f"line {number}: timestamp: {exc.message}") from None
        elif isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise InputError(f"line {number}: timestamp must be milliseconds since the epoch or an ISO 8601 string")
    try:
        return OutgoingRecord(value=bytes_of_json(obj.get("value"), f"line {number}: value"),
                              key=bytes_of_json(obj.get("key"), f"line {number}: key"),
                              headers=parse_json_headers(obj.get("headers"), number),
                              partition=partition, timestamp_ms=timestamp)
    except click.UsageError as exc:
        raise InputError(exc.message) from None


def input_size(stream: BinaryIO) -> int | None:
    """Bytes to read when stdin is a regular file (for a real progress bar), else None."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


@click.command()
@click.argument("topic")
@click.option("--key-separator", "-K", metavar="SEP", help="Each line is KEY<SEP>VALUE (split at the first SEP).")
@click.option("--json", "json_lines", is_flag=True,
              help='Each line is a JSON object: {"value": ..., "key": ..., "headers": {...}, "partition": N, '
                   '"timestamp": ms or ISO 8601}; only "value" is required.')
@click.option("--partition", "-p", type=int, help="Send every record to this partition (default: by key).")
@click.option("--header", "-H", "header_options", multiple=True, metavar="KEY=VALUE",
              help="A header on every record (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
@click.pass_obj
def produce(ctx: CliContext, topic: str, key_separator: str | None, json_lines: bool, partition: int | None,
            header_options: tuple[str, ...], quiet: bool) -> None:
    """Append the lines of stdin to TOPIC, one record a line.

    Records go to a partition chosen from the key (records without a key are spread over the
    partitions), unless --partition or a JSON "partition" says where. Prints how many records went
    to which partitions and their offsets.
    """
    if json_lines and key_separator is not None:
        raise click.UsageError("--key-separator and --json exclude each other (JSON lines carry their own key)")
    if key_separator == "":
        raise click.BadParameter("must not be empty", param_hint="--key-separator")
    separator = key_separator.encode() if key_separator is not None else None
    common_headers: Headers = [(k, v.encode()) for k, v in parse_key_values(header_options, "--header")]
    stream: BinaryIO = sys.stdin.buffer
    summary: dict[int, PartitionSummary] = {}
    started = time.perf_counter()
    total = 0
    with open_store(ctx, create=False) as store:
        store.describe_topic(topic)  # an unknown topic fails before stdin is read
        producer = store.producer(acks="all", linger_ms=0)
        size = input_size(stream)
        show_progress = want_progress(ctx) and not stream.isatty()  # not while someone types the records
        try:
            with progress(show_progress, f"produce {topic}", size, unit="bytes" if size else "items") as bar:
                for number, line in read_lines(stream):
                    try:
                        if json_lines:
                            if not line.strip():
                                continue
                            record = parse_json_line(line, number)
                        else:
                            record = parse_plain(line, number, separator)
                    except InputError as exc:
                        exc.message += f" ({total} record(s) before it were written)"
                        raise
                    target = record.partition if record.partition is not None else partition
                    try:
                        meta = producer.send(topic, value=record.value, key=record.key,
                                             headers=common_headers + record.headers or None,
                                             partition=target, timestamp_ms=record.timestamp_ms)
                    except LogstoreError as exc:
                        # the store refused this record (too large, no key for a compacted topic, ...)
                        raise InputError(f"line {number}: {exc} ({total} record(s) before it were written)") from None
                    summary.setdefault(meta.partition, PartitionSummary()).add(meta.offset)
                    total += 1
                    bar.advance(len(line) + 1 if size else 1)
        finally:
            producer.flush()
            producer.close()
    took = time.perf_counter() - started
    if quiet:
        return
    click.echo(f"Produced {total} record(s) to {topic} in {took:.2f} s" + (":" if summary else "."))
    for p in sorted(summary):
        s = summary[p]
        click.echo(f"  partition {p}: {s.records} record(s), offsets {s.first_offset}..{s.last_offset}")
