"""``logstore consume``: print the records of a topic (text, JSON lines or raw bytes)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

import click

import logstore
from logstore.cli.output import CliContext, json_of_bytes, parse_timestamp, text_of
from logstore.cli.store import open_store

POLL_SECONDS = 0.2
#: without --follow, how long to keep polling a partition that is behind its end but returns nothing
STALL_SECONDS = 10.0


class ConsumedRecord(Protocol):
    """What the CLI reads of a polled record (a native ``Record`` or a ``ConsumerRecord``)."""

    @property
    def topic(self) -> str | None: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes | None]]: ...


def timestamp_type_of(record: ConsumedRecord, topic_default: str) -> str:
    """"create_time" or "log_append_time": the record's own when it carries one, else the topic's."""
    timestamp_type = getattr(record, "timestamp_type", None)
    if timestamp_type is None:
        return topic_default
    if isinstance(timestamp_type, int):
        return "log_append_time" if timestamp_type == 1 else "create_time"
    return str(getattr(timestamp_type, "name", timestamp_type)).lower()


def record_json(record: ConsumedRecord, topic_timestamp_type: str = "create_time") -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": timestamp_type_of(record, topic_timestamp_type),
        "key": json_of_bytes(record.key),
        "value": json_of_bytes(record.value),
        "headers": [[name, json_of_bytes(value)] for name, value in (record.headers or [])],
    }


def _parse_timestamp_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else parse_timestamp(value)


class RecordWriter:
    """Writes records to stdout in the chosen format."""

    def __init__(self, fmt: str, print_key: bool, print_offset: bool, print_timestamp: bool, separator: str,
                 topic_timestamp_type: str = "create_time") -> None:
        self.fmt = fmt
        self.topic_timestamp_type = topic_timestamp_type
        self.print_key = print_key
        self.print_offset = print_offset
        self.print_timestamp = print_timestamp
        self.separator = separator

    def _prefix(self, record: ConsumedRecord) -> list[str]:
        fields = []
        if self.print_offset:
            fields += [f"Partition:{record.partition}", f"Offset:{record.offset}"]
        if self.print_timestamp:
            append_time = timestamp_type_of(record, self.topic_timestamp_type) == "log_append_time"
            label = "LogAppendTime" if append_time else "CreateTime"
            fields.append(f"{label}:{record.timestamp}")
        return fields

    def write(self, record: ConsumedRecord) -> None:
        if self.fmt == "json":
            sys.stdout.write(json.dumps(record_json(record, self.topic_timestamp_type), ensure_ascii=False) + "\n")
        elif self.fmt == "raw":
            raw_fields = [f.encode() for f in self._prefix(record)]
            if self.print_key:
                raw_fields.append(record.key if record.key is not None else b"null")
            raw_fields.append(record.value if record.value is not None else b"")
            sys.stdout.buffer.write(self.separator.encode().join(raw_fields) + b"\n")
        else:
            fields = self._prefix(record)
            if self.print_key:
                fields.append(text_of(record.key))
            fields.append(text_of(record.value))
            sys.stdout.write(self.separator.join(fields) + "\n")

    def flush(self) -> None:
        if self.fmt == "raw":
            sys.stdout.buffer.flush()
        else:
            sys.stdout.flush()


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the log start of each partition (the default).")
@click.option("--from-end", is_flag=True, help="Start at the end: only records written after now (use with --follow).")
@click.option("--offset", type=int, help="Start at this offset in each partition; negative: that many before the end.")
@click.option("--timestamp", callback=_parse_timestamp_option, metavar="MS|ISO8601",
              help="Start at the first record with a timestamp at or after this time.")
@click.option("--partition", "-p", "partitions", type=int, multiple=True, help="Read only this partition (repeatable).")
@click.option("--max-messages", "-n", type=click.IntRange(min=1), help="Stop after this many records.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Stop when no record arrives for this long (with --follow; default: wait forever).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "raw"]), default="text", show_default=True,
              help="text: values as UTF-8 (invalid bytes replaced); json: one object per record, bytes that are "
                   'not UTF-8 as {"base64": ...}; raw: the bytes as stored.')
@click.option("--print-key", is_flag=True, help="text/raw: print the key before the value.")
@click.option("--print-offset", is_flag=True, help="text/raw: print Partition:P and Offset:O before the record.")
@click.option("--print-timestamp", is_flag=True, help="text/raw: print CreateTime:MS (or LogAppendTime:MS).")
@click.option("--separator", default="\t", show_default=r"\t", help="text/raw: between the printed fields.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new records instead of stopping at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No record count on stderr at the end.")
@click.pass_obj
def consume(ctx: CliContext, topic: str, from_beginning: bool, from_end: bool, offset: int | None,
            timestamp: int | None, partitions: tuple[int, ...], max_messages: int | None, timeout: float | None,
            fmt: str, print_key: bool, print_offset: bool, print_timestamp: bool, separator: str, follow: bool,
            quiet: bool) -> None:
    """Print the records of TOPIC, in offset order within each partition.

    Starts at the beginning unless told otherwise and stops once it has read up to the high
    watermark as of the start (--follow: keeps waiting; Ctrl-C stops it cleanly).
    """
    given = {"--from-beginning": from_beginning, "--from-end": from_end, "--offset": offset is not None,
             "--timestamp": timestamp is not None}
    starts = [name for name, present in given.items() if present]
    if len(starts) > 1:
        raise click.UsageError(f"{' and '.join(starts)} exclude each other: give one start position")
    writer = RecordWriter(fmt, print_key, print_offset, print_timestamp, separator)
    count = 0
    with open_store(ctx) as store:
        total_partitions = store.partitions_for(topic)
        writer.topic_timestamp_type = str(store.describe_topic(topic).config.get("message_timestamp_type",
                                                                                 "create_time"))
        for p in partitions:
            if not 0 <= p < total_partitions:
                raise logstore.errors.UnknownTopicError(f"topic {topic} has no partition {p} "
                                                        f"(it has {total_partitions})")
        tps = [logstore.TopicPartition(topic, p) for p in (sorted(set(partitions)) or range(total_partitions))]
        consumer = store.consumer(auto_offset_reset="earliest")
        try:
            consumer.assign(tps)
            seek_start(consumer, tps, from_end, offset, timestamp)
            ends = consumer.end_offsets(tps)
            last_record = stalled_since = time.monotonic()
            try:
                while max_messages is None or count < max_messages:
                    if not follow and all(consumer.position(tp) >= ends[tp] for tp in tps):
                        break
                    wanted = None if max_messages is None else max_messages - count
                    records = consumer.poll(timeout=POLL_SECONDS, max_records=wanted)
                    now = time.monotonic()
                    for record in records:
                        writer.write(record)
                    count += len(records)
                    if records:
                        last_record = stalled_since = now
                        writer.flush()
                    elif timeout is not None and now - last_record >= timeout:
                        break
                    elif not follow and now - stalled_since >= STALL_SECONDS:
                        behind = [f"{tp.partition} at {consumer.position(tp)} of {ends[tp]}" for tp in tps
                                  if consumer.position(tp) < ends[tp]]
                        raise click.ClickException(f"no records returned for {STALL_SECONDS:.0f} s although "
                                                   f"partition(s) {', '.join(behind)} are not caught up")
            except KeyboardInterrupt:
                pass  # Ctrl-C is how --follow ends: finish the output and the count normally
        finally:
            consumer.close()
    writer.flush()
    if not quiet:
        click.echo(f"Consumed {count} record(s).", err=True)


def seek_start(consumer: logstore.Consumer, tps: list[logstore.TopicPartition], from_end: bool,
               offset: int | None, timestamp: int | None) -> None:
    if from_end:
        consumer.seek_to_end(*tps)
    elif offset is not None:
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            target = ends[tp] + offset if offset < 0 else offset
            # clamped: past the end means "nothing yet" here, not the consumer's reset to the beginning
            consumer.seek(tp, min(max(target, starts[tp]), ends[tp]))
    elif timestamp is not None:
        found = consumer.offsets_for_times({tp: timestamp for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                consumer.seek_to_end(tp)  # nothing at or after that time in this partition
            else:
                consumer.seek(tp, hit[0])
    else:
        consumer.seek_to_beginning(*tps)
