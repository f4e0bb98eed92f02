"""``python -m logstore``: the embedded demo (the `logstore` CLI proper arrives with the broker)."""

from __future__ import annotations

import argparse
import os
import time


def demo(data_dir: str, records: int) -> None:
    from logstore import PartitionLog

    path = os.path.join(data_dir, "demo-0")
    print(f"logstore demo: partition log at {path}")
    with PartitionLog.open(path, flush="interval") as log:
        start = log.log_end_offset
        print(f"  opened: offsets [{log.log_start_offset}, {start}), recovery: "
              f"{'clean' if log.recovery.clean_shutdown else 'after a crash'}")
        keys = [b"user-%04d" % (i % 100) for i in range(records)]
        values = [b"order %d: %s" % (start + i, os.urandom(40).hex().encode()) for i in range(records)]
        t = time.perf_counter()
        for i in range(0, records, 1000):
            log.append_many(values[i:i + 1000], keys[i:i + 1000])
        log.flush()
        took = time.perf_counter() - t
        print(f"  appended {records:,} records at offsets [{start}, {log.log_end_offset}) "
              f"in {took * 1000:.1f} ms ({records / took / 1e6:.2f} M records/s, fsynced)")
        log.set_high_watermark(log.log_end_offset)
        t = time.perf_counter()
        offset, seen = start, 0
        while offset < log.log_end_offset:
            view = log.read(offset, 1 << 20)
            seen += len(view)
            offset = view.next_offset
        took = time.perf_counter() - t
        print(f"  read them back: {seen:,} records in {took * 1000:.1f} ms, CRC32C checked")
        first = log.read(start, 1)[0]
        print(f"  first: offset={first.offset} key={first.key!r} value={(first.value or b'')[:24]!r}...")
        print(f"  segments: {len(log.segments())}, size {log.size_bytes:,} bytes; run again to append more")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="logstore")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="write and read a partition in a local data directory")
    p.add_argument("--data-dir", default="logstore-data")
    p.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        demo(getattr(args, "data_dir", "logstore-data"), getattr(args, "records", 100_000))


if __name__ == "__main__":
    main()
