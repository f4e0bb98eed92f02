"""logstore against embedded peers on the standard workload, in one run, on one machine.

    PYTHONPATH=src python benchmarks/compare.py [--n N] [--repeat R] [--json out.json]

Workload (benchmarks/workload.py): N records, 16-byte key, 100-byte value, one partition/table,
page-cache durability (nobody fsyncs while writing). Cells, each timed separately:

- batched write: 1000 records per call/transaction, into an empty store;
- single write: one record per call (sqlite: one autocommit INSERT; lmdb: one write transaction);
- sequential read: every record of the batched store, in order, as Python objects: key and
  value each as bytes.

A write cell ends when the last call returns and the data is with the OS (the plain file's
BufferedWriter is flushed; logstore may still hold up to 1 MiB in its own write buffer, which its
next read or flush hands over). The durability step after each write (fsync / env.sync /
wal_checkpoint) is timed apart and only written to the JSON. Each cell is the median of
``--repeat`` runs; the report gives records/s and the ratio logstore / peer (> 1: logstore faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
import zlib
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import BATCH, KEY_BYTES, Workload, machine_info, machine_markdown  # noqa: E402

CELLS = ("write_batched", "write_single", "read")
CELL_TITLES = {"write_batched": "batched write (1000/call)", "write_single": "single-record write",
               "read": "sequential read"}


class Store:
    """One peer. ``directory`` is fresh and empty for every open."""

    name = "?"

    def open(self, directory: str) -> None:
        raise NotImplementedError

    def write_batched(self, wl: Workload) -> None:
        raise NotImplementedError

    def write_single(self, wl: Workload) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        """(records read, last key, last value)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LogstoreStore(Store):
    name = "logstore"

    def open(self, directory: str) -> None:
        from logstore import PartitionLog
        self.log = PartitionLog.open(os.path.join(directory, "log"), flush="never")

    def write_batched(self, wl: Workload) -> None:
        append_many = self.log.append_many
        for values, keys in wl.batches:
            append_many(values, keys)

    def write_single(self, wl: Workload) -> None:
        append = self.log.append
        for value, key in zip(wl.values, wl.keys):
            append(value, key)

    def sync(self) -> None:
        self.log.flush()

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        read = self.log.read
        offset, end, n = self.log.log_start_offset, self.log.log_end_offset, 0
        key = value = None
        while offset < end:
            view = read(offset)
            for record in view:
                key = record.key
                value = record.value
                n += 1
            offset = view.next_offset
        return n, key, value

    def close(self) -> None:
        self.log.close()


class PlainFileStore(Store):
    """Append-only file; each record framed as u32 body length, u32 CRC-32 of the body, u16 key
    length, then key and value (the body). Python does the framing; no index."""

    name = "plain file (len+CRC32)"
    HEAD = struct.Struct("<IIH")

    def open(self, directory: str) -> None:
        self.path = os.path.join(directory, "records.log")
        self.f = open(self.path, "ab")

    def write_batched(self, wl: Workload) -> None:
        pack, crc32, write = self.HEAD.pack, zlib.crc32, self.f.write
        for values, keys in wl.batches:
            buf = bytearray()
            for key, value in zip(keys, values):
                buf += pack(len(key) + len(value), crc32(value, crc32(key)), len(key))
                buf += key
                buf += value
            write(buf)
        self.f.flush()

    def write_single(self, wl: Workload) -> None:
        pack, crc32, write = self.HEAD.pack, zlib.crc32, self.f.write
        for key, value in zip(wl.keys, wl.values):
            write(pack(len(key) + len(value), crc32(value, crc32(key)), len(key)) + key + value)
        self.f.flush()

    def sync(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        unpack, crc32, head = self.HEAD.unpack_from, zlib.crc32, self.HEAD.size
        key = value = None
        n = 0
        with open(self.path, "rb") as f:
            data = f.read()
        pos, end = 0, len(data)
        while pos < end:
            length, crc, klen = unpack(data, pos)
            body = pos + head
            key = data[body:body + klen]
            value = data[body + klen:body + length]
            if crc32(value, crc32(key)) != crc:
                raise ValueError(f"CRC mismatch at {pos}")
            pos = body + length
            n += 1
        return n, key, value

    def close(self) -> None:
        self.f.close()


class SqliteStore(Store):
    """sqlite3, WAL journal, synchronous=NORMAL; rowid is the offset."""

    name = "sqlite3 WAL (sync=NORMAL)"

    def open(self, directory: str) -> None:
        self.db = sqlite3.connect(os.path.join(directory, "log.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, key BLOB, value BLOB)")

    def write_batched(self, wl: Workload) -> None:
        db = self.db
        sql = "INSERT INTO log (key, value) VALUES (?, ?)"
        for values, keys in wl.batches:
            db.execute("BEGIN")
            db.executemany(sql, zip(keys, values))
            db.execute("COMMIT")

    def write_single(self, wl: Workload) -> None:
        execute = self.db.execute
        sql = "INSERT INTO log (key, value) VALUES (?, ?)"
        for key, value in zip(wl.keys, wl.values):
            execute(sql, (key, value))  # autocommit: one transaction per record

    def sync(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(FULL)")

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        key = value = None
        n = 0
        for _, key, value in self.db.execute("SELECT offset, key, value FROM log ORDER BY offset"):
            n += 1
        return n, key, value

    def close(self) -> None:
        self.db.close()


class LmdbStore(Store):
    """py-lmdb, sync=False, writemap=True; key = 8-byte big-endian offset, value = key + value."""

    name = "lmdb (sync=False, writemap)"

    def __init__(self, n: int) -> None:
        self.offset_keys = [struct.pack(">Q", i) for i in range(n)]  # precomputed: favours lmdb

    def open(self, directory: str) -> None:
        import lmdb
        size = max(1 << 26, len(self.offset_keys) * 400)
        self.env = lmdb.open(os.path.join(directory, "lmdb"), map_size=size, sync=False, writemap=True,
                             metasync=False)

    def write_batched(self, wl: Workload) -> None:
        env, okeys, concat = self.env, self.offset_keys, bytes.__add__
        start = 0
        for values, keys in wl.batches:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(zip(okeys[start:start + len(keys)], map(concat, keys, values)),
                                      append=True)
            start += len(keys)

    def write_single(self, wl: Workload) -> None:
        begin = self.env.begin
        for okey, key, value in zip(self.offset_keys, wl.keys, wl.values):
            with begin(write=True) as txn:
                txn.put(okey, key + value, append=True)

    def sync(self) -> None:
        self.env.sync(True)

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        key = value = None
        n = 0
        with self.env.begin() as txn:
            for _, kv in txn.cursor():
                key = kv[:KEY_BYTES]
                value = kv[KEY_BYTES:]
                n += 1
        return n, key, value

    def close(self) -> None:
        self.env.close()


def run_cell(store: Store, wl: Workload, base: str, batched: bool) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="peer-", dir=base)
    try:
        store.open(directory)
        try:
            t0 = time.perf_counter()
            (store.write_batched if batched else store.write_single)(wl)
            t1 = time.perf_counter()
            store.sync()
            t2 = time.perf_counter()
            out = {"write_s": t1 - t0, "sync_s": t2 - t1}
            if batched:
                t0 = time.perf_counter()
                n, key, value = store.read_all()
                out["read_s"] = time.perf_counter() - t0
                if (n, key, value) != (wl.n, wl.keys[-1], wl.values[-1]):
                    raise AssertionError(f"{store.name}: read back {n} records ending in {key!r}, "
                                         f"expected {wl.n} ending in {wl.keys[-1]!r}")
        finally:
            store.close()
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fmt_rate(rps: float) -> str:
    return f"{rps / 1e6:.2f} M/s" if rps >= 1e5 else f"{rps / 1e3:.0f} k/s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="records per cell (default 200000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    ap.add_argument("--peers", default="logstore,file,sqlite,lmdb",
                    help="comma-separated subset of logstore,file,sqlite,lmdb")
    ap.add_argument("--dir", default=None, help="where the stores are written (default: the temp dir)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all numbers to FILE")
    args = ap.parse_args(argv)

    wl = Workload(args.n, BATCH)
    factories = {"logstore": LogstoreStore, "file": PlainFileStore, "sqlite": SqliteStore,
                 "lmdb": lambda: LmdbStore(args.n)}
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in factories]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {list(factories)}")
    base = args.dir or tempfile.gettempdir()
    info = machine_info(base)
    load_before = os.getloadavg()
    print(f"N={wl.n} key={KEY_BYTES}B value=100B batch={BATCH} repeat={args.repeat} dir={base}", flush=True)

    stores = {name: factories[name]() for name in names}
    runs = {name: {"write_batched": [], "write_single": [], "read": [],
                   "sync_after_batched": [], "sync_after_single": []} for name in names}
    warm = Workload(min(args.n, 20_000), BATCH, seed=3)
    for name in names:  # untimed warm-up: imports, allocator, first-use costs of each store
        run_cell(stores[name], warm, base, batched=True)
        run_cell(stores[name], warm, base, batched=False)
    # round robin (every store once per repeat), so a burst of noise from elsewhere on the
    # machine spreads over all stores instead of landing on one
    for r in range(args.repeat):
        for name in names:
            b = run_cell(stores[name], wl, base, batched=True)
            s = run_cell(stores[name], wl, base, batched=False)
            out = runs[name]
            out["write_batched"].append(b["write_s"])
            out["read"].append(b["read_s"])
            out["write_single"].append(s["write_s"])
            out["sync_after_batched"].append(b["sync_s"])
            out["sync_after_single"].append(s["sync_s"])
            print(f"  run {r + 1}/{args.repeat} {stores[name].name:30s} "
                  + "  ".join(f"{c} {fmt_rate(wl.n / out[c][-1]):>10s}" for c in CELLS), flush=True)
    results: dict[str, Any] = {}
    for name in names:
        out = runs[name]
        cell = {c: {"records_per_s": wl.n / statistics.median(out[c]), "seconds": out[c]} for c in CELLS}
        cell["sync_seconds"] = {"after_batched": out["sync_after_batched"], "after_single": out["sync_after_single"]}
        results[stores[name].name] = cell

    load_after = os.getloadavg()
    info["load_avg_before"] = " ".join(f"{x:.2f}" for x in load_before)
    info["load_avg_after"] = " ".join(f"{x:.2f}" for x in load_after)
    ls_name = LogstoreStore.name
    ratios: dict[str, dict[str, float]] = {}
    if ls_name in results:
        for peer, cell in results.items():
            if peer != ls_name:
                ratios[peer] = {c: results[ls_name][c]["records_per_s"] / cell[c]["records_per_s"] for c in CELLS}

    lines = ["| store | " + " | ".join(CELL_TITLES[c] for c in CELLS) + " |",
             "|---|" + "---:|" * len(CELLS)]
    for peer, cell in results.items():
        parts = []
        for c in CELLS:
            text = fmt_rate(cell[c]["records_per_s"])
            if peer in ratios:
                text += f" (logstore {ratios[peer][c]:.2f}x)"
            parts.append(text)
        lines.append(f"| {peer} | " + " | ".join(parts) + " |")
    table = "\n".join(lines)
    print()
    print(f"Records/s, median of {args.repeat} runs, N={wl.n}; in parentheses: logstore / peer (> 1: logstore faster).")
    print()
    print(table)
    print()
    print(machine_markdown(info))
    if max(load_before[0], load_after[0]) > 1.5:
        print("\nWARNING: other processes were busy on this machine (load average above): "
              "numbers may be low; run again")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": {"n": wl.n, "key_bytes": KEY_BYTES, "value_bytes": 100, "batch": BATCH,
                                    "repeat": args.repeat, "dir": base},
                       "machine": info, "results": results, "ratios_logstore_over_peer": ratios,
                       "markdown": table}, f, indent=2)
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
