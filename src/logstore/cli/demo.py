"""``logstore demo``: a producer and a consumer on the embedded store, showing partitions and offsets."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field

import click
from rich.table import Table

import logstore
from logstore.cli.consume import ConsumedRecord
from logstore.cli.output import CliContext, progress, stdout_console, text_of, want_progress
from logstore.cli.store import open_store

TOPIC = "demo"
PARTITIONS = 3
KEYS = [b"user-%d" % i for i in range(12)]  # 12 keys reach all 3 partitions (xxh64 mod 3)
SAMPLE_PER_PARTITION = 2


@dataclass
class PartitionRun:
    records: int = 0
    first_offset: int = -1
    last_offset: int = -1
    keys: set[bytes] = field(default_factory=set)


@click.command()
@click.option("--records", "-n", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="How many records to produce.")
@click.option("--data-dir", hidden=True, help="Same as the global --dir (the option of the first demo).")
@click.pass_obj
def demo(ctx: CliContext, records: int, data_dir: str | None) -> None:
    """Produce keyed records to a 3-partition topic and consume them back.

    Uses a temporary data directory (removed afterwards) unless --dir is given; with --dir, run it
    again to see the offsets continue where the last run stopped.
    """
    temporary = None
    if data_dir is not None:
        ctx = CliContext(data_dir, True, ctx.progress)
    elif not ctx.data_dir_given:
        temporary = tempfile.mkdtemp(prefix="logstore-demo-")
        ctx = CliContext(temporary, True, ctx.progress)
    try:
        run_demo(ctx, records, temporary is not None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def run_demo(ctx: CliContext, records: int, temporary: bool) -> None:
    console = stdout_console()
    where = f"{ctx.data_dir} (temporary: removed at the end)" if temporary else ctx.data_dir
    console.print(f"logstore demo: data directory {where}")
    with open_store(ctx, create=True) as store:
        if TOPIC in store.list_topics():
            partitions = store.partitions_for(TOPIC)
            console.print(f"topic {TOPIC!r} exists with {partitions} partitions: appending to it")
        else:
            partitions = len(store.create_topic(TOPIC, partitions=PARTITIONS).partitions)
            console.print(f"created topic {TOPIC!r} with {partitions} partitions")

        runs: dict[int, PartitionRun] = {p: PartitionRun() for p in range(partitions)}
        producer = store.producer(acks="all", linger_ms=0)
        started = time.perf_counter()
        with progress(want_progress(ctx), "produce", records) as bar:
            for i in range(records):
                key = KEYS[i % len(KEYS)]
                meta = producer.send(TOPIC, value=b"event %d for %s" % (i, key), key=key)
                run = runs[meta.partition]
                if run.records == 0:
                    run.first_offset = meta.offset
                run.records += 1
                run.last_offset = meta.offset
                run.keys.add(key)
                if i % 4096 == 4095:
                    bar.advance(4096)
        producer.flush()
        producer.close()
        produce_seconds = time.perf_counter() - started

        table = Table(title=f"Produced {records:,} records: a key always goes to the same partition",
                      title_justify="left")
        for name in ("Partition", "Records", "First offset", "Last offset", "Keys"):
            table.add_column(name, justify="left" if name == "Keys" else "right")
        for p, run in runs.items():
            keys = ", ".join(k.decode() for k in sorted(run.keys, key=lambda k: int(k.split(b"-")[1])))
            table.add_row(str(p), f"{run.records:,}", str(run.first_offset) if run.records else "-",
                          str(run.last_offset) if run.records else "-", keys)
        console.print(table)
        empty = [str(p) for p, run in runs.items() if not run.records]
        if empty:
            console.print(f"(partition {', '.join(empty)} got none of the {len(KEYS)} keys: the partition is the "
                          f"key's hash modulo {partitions}, and a few keys need not cover every partition)")

        consumer = store.consumer(auto_offset_reset="earliest")
        tps = [logstore.TopicPartition(TOPIC, p) for p in range(partitions) if runs[p].records]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, runs[tp.partition].first_offset)
        sample: dict[int, list[ConsumedRecord]] = {tp.partition: [] for tp in tps}
        seen = 0
        started = time.perf_counter()
        while seen < records:
            batch = consumer.poll(timeout=1.0, max_records=records - seen)
            if not batch:
                raise click.ClickException(f"consumer stopped after {seen} of {records} records")
            seen += len(batch)
            for record in batch:
                if len(sample[record.partition]) < SAMPLE_PER_PARTITION:
                    sample[record.partition].append(record)
        consume_seconds = time.perf_counter() - started
        consumer.close()

        table = Table(title=f"Consumed {seen:,} records back; a sample", title_justify="left")
        for name in ("Partition", "Offset", "Key", "Value"):
            table.add_column(name, justify="right" if name in ("Partition", "Offset") else "left")
        for r in (r for p in sorted(sample) for r in sample[p]):
            table.add_row(str(r.partition), str(r.offset), text_of(r.key), text_of(r.value))
        console.print(table)
        console.print(f"produce: {records:,} records in {produce_seconds * 1000:.1f} ms "
                      f"({records / produce_seconds / 1e6:.2f} M records/s, one send() per record)")
        console.print(f"consume: {seen:,} records in {consume_seconds * 1000:.1f} ms "
                      f"({seen / consume_seconds / 1e6:.2f} M records/s)")
