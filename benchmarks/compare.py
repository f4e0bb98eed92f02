"""logstore against the stores a Python user would otherwise pick, on the standard workload, in one run.

    PYTHONPATH=src python benchmarks/compare.py [--n N] [--repeat R] [--peers a,b] [--json out.json]
    PYTHONPATH=src python benchmarks/compare.py --quick      # CI smoke: tiny N, every available peer
    PYTHONPATH=src python benchmarks/compare.py --workload broker   # logstore's producer/consumer instead

Workload (benchmarks/workload.py): N records, 16-byte key, 100-byte value, one partition/table/
stream, page-cache durability (nobody fsyncs while writing). Cells, each timed separately:

- batched write: 1000 records per call/transaction/pipeline, into an empty store;
- single write: one record per call (sqlite: one autocommit INSERT; lmdb: one write transaction;
  redis: one XADD round trip; NATS: one JetStream publish awaiting its ack; every write is
  acknowledged by the store before the cell ends);
- sequential read: every record of the batched store, in order, as Python objects: key and
  value each as bytes.

Peers: a plain Python file (len + CRC-32 framing), sqlite3 (WAL), lmdb, rocksdict (RocksDB), and,
when their servers are on PATH, Redis Streams (``redis-server``, AOF, appendfsync everysec) and
NATS JetStream (``nats-server -js``, file storage). The runner starts each server on 127.0.0.1 on
a free port with its data in a fresh temp dir for every cell (untimed), waits until it answers,
and always terminates it. A peer whose client library or server is missing is reported as
skipped, with the reason; a peer that fails is reported as failed and the exit code is 1.

A write cell ends when the last call returns and the data is with the OS or the server (logstore's
batch appends are in the page cache when append_many returns; its single appends may still sit in
its write buffer, which the next read or flush hands over; the plain file's BufferedWriter is
flushed). The durability step after each write (fsync / env.sync / wal_checkpoint / flush_wal;
none for the servers) is timed apart and only written to the JSON. Each cell is the median of
``--repeat`` runs, taken round robin; the report gives records/s and the ratio logstore / peer
(> 1: logstore faster).

``--workload broker`` puts logstore's broker API in logstore's row instead of ``PartitionLog``:
``logstore.open`` (topic ``flush="never"``, as the peers: nobody fsyncs while writing), a topic of
one partition, ``producer.send(topic, value, key)`` per record (idempotent, the defaults) and a
consumer's ``poll(timeout=0)`` loop reading every record's key and value. Its cells are the
single-record write (the peers' closest equivalent of one ``send``: one call, insert, transaction,
XADD or acknowledged publish per record) and the sequential read of what that single write
stored (the consumer reads the producer's ~16 KiB batches). There is no batched cell: the
producer has no call that takes 1000 records (``linger_ms`` batches one ``send`` at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import BATCH, KEY_BYTES, Workload, machine_info, machine_markdown  # noqa: E402

CELLS = ("write_batched", "write_single", "read")
CELL_TITLES = {"write_batched": "batched write (1000/call)", "write_single": "single-record write",
               "read": "sequential read"}
BROKER_CELLS = ("write_single", "read")
BROKER_CELL_TITLES = {"write_single": "single-record write (logstore: producer.send)",
                      "read": "sequential read of it (logstore: consumer.poll)"}


class Store:
    """One peer. ``directory`` is fresh and empty for every open."""

    name = "?"

    @staticmethod
    def unavailable() -> str | None:
        """Why this peer cannot run here (a missing package or server), or None."""
        return None

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


class LogstoreBrokerStore(Store):
    """logstore's broker: producer.send per record into a 1-partition topic, consumer.poll to read."""

    name = "logstore broker (producer/consumer)"
    TOPIC = "records"

    def open(self, directory: str) -> None:
        import logstore
        self.store = logstore.open(os.path.join(directory, "store"), topic_defaults={"flush": "never"})
        self.store.create_topic(self.TOPIC, 1)
        self.producer = self.store.producer()

    def write_batched(self, wl: Workload) -> None:
        raise NotImplementedError("the broker workload has no batched cell")

    def write_single(self, wl: Workload) -> None:
        send, topic = self.producer.send, self.TOPIC
        for value, key in zip(wl.values, wl.keys):
            send(topic, value, key)

    def sync(self) -> None:
        self.store.flush()

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        from logstore import TopicPartition
        key = value = None
        n = 0
        with self.store.consumer(auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition(self.TOPIC, 0)])
            poll = consumer.poll
            records = poll(0.0)
            while records:
                for record in records:
                    key = record.key
                    value = record.value
                n += len(records)
                records = poll(0.0)
        return n, key, value

    def close(self) -> None:
        self.producer.close()
        self.store.close()


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
        # the last row's key and value are returned
        for _, key, value in self.db.execute("SELECT offset, key, value FROM log ORDER BY offset"):  # noqa: B007
            n += 1
        return n, key, value

    def close(self) -> None:
        self.db.close()


class LmdbStore(Store):
    """py-lmdb, sync=False, writemap=True; key = 8-byte big-endian offset, value = key + value."""

    name = "lmdb (sync=False, writemap)"

    @staticmethod
    def unavailable() -> str | None:
        return missing_module("lmdb")

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


class RocksdictStore(Store):
    """rocksdict (RocksDB) in raw mode, default write options (WAL on, no sync); key = 8-byte
    big-endian offset, value = key + value; one WriteBatch per 1000 records."""

    name = "rocksdict (RocksDB, WAL, no sync)"

    @staticmethod
    def unavailable() -> str | None:
        return missing_module("rocksdict")

    def __init__(self, n: int) -> None:
        self.offset_keys = [struct.pack(">Q", i) for i in range(n)]  # precomputed: favours rocksdict

    def open(self, directory: str) -> None:
        from rocksdict import Options, Rdict
        self.db = Rdict(os.path.join(directory, "rocks"), Options(raw_mode=True))

    def write_batched(self, wl: Workload) -> None:
        from rocksdict import WriteBatch
        db, okeys = self.db, self.offset_keys
        start = 0
        for values, keys in wl.batches:
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            for okey, key, value in zip(okeys[start:start + len(keys)], keys, values):
                put(okey, key + value)
            db.write(wb)
            start += len(keys)

    def write_single(self, wl: Workload) -> None:
        put = self.db.put
        for okey, key, value in zip(self.offset_keys, wl.keys, wl.values):
            put(okey, key + value)

    def sync(self) -> None:
        self.db.flush_wal(True)

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        key = value = None
        n = 0
        for kv in self.db.values():
            key = kv[:KEY_BYTES]
            value = kv[KEY_BYTES:]
            n += 1
        return n, key, value

    def close(self) -> None:
        self.db.close()


# -- servers on loopback --------------------------------------------------------------------------

def missing_module(name: str) -> str | None:
    import importlib.util
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"Python package {name!r} is not installed (pip install '.[bench]')"


def missing_program(name: str) -> str | None:
    return None if shutil.which(name) else f"{name} is not on PATH (apt-get install {name})"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the server may still lose a
    race for it to another process: Server retries with a new port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port: int, greeting: bytes = b"") -> bool:
    """Something accepts on 127.0.0.1:port (and, with ``greeting``, its first bytes start so)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if not greeting:
                return True
            s.settimeout(0.5)
            return s.recv(len(greeting)) == greeting
    except OSError:
        return False


LIVE_SERVERS: set[Server] = set()


class Server:
    """A server process on 127.0.0.1, started with its working data in ``directory``; the
    constructor returns once ``ready(port)`` is true. ``stop()`` always ends it (SIGTERM, then
    SIGKILL after 10 s); servers still alive when the runner exits are stopped too."""

    START_TIMEOUT = 20.0

    def __init__(self, name: str, argv_for_port: Callable[[int], list[str]], directory: str,
                 ready: Callable[[int], bool]) -> None:
        self.name = name
        self.output = os.path.join(directory, f"{name}.out")
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            with open(self.output, "ab") as out:
                self.proc = subprocess.Popen(argv_for_port(self.port), cwd=directory, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT)
            LIVE_SERVERS.add(self)
            deadline = time.monotonic() + self.START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if ready(self.port):
                    return
                time.sleep(0.01)
            code = self.proc.poll()
            self.stop()
            last_error = (f"{name} exited with code {code}" if code is not None
                          else f"{name} did not answer on port {self.port} within {self.START_TIMEOUT:.0f} s")
            # a port lost to another process makes the server exit at once: try another port
        raise RuntimeError(f"{last_error}; its output:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            with open(self.output, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        LIVE_SERVERS.discard(self)


def stop_all_servers() -> None:
    for server in list(LIVE_SERVERS):
        server.stop()


class RedisStreamsStore(Store):
    """Redis Streams on a local redis-server (appendonly yes, appendfsync everysec, no RDB
    snapshots), redis-py client (hiredis parser when installed). One stream; each record is
    ``XADD s * k <key> v <value>``; batches are one non-transactional pipeline of 1000 XADDs; the
    read pages through XRANGE, 1000 entries per call."""

    name = "Redis Streams (AOF everysec)"
    STREAM = b"s"

    @staticmethod
    def unavailable() -> str | None:
        return missing_program("redis-server") or missing_module("redis")

    def open(self, directory: str) -> None:
        import redis

        def argv(port: int) -> list[str]:
            return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
                    "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                    "--daemonize", "no", "--logfile", ""]

        def ready(port: int) -> bool:
            try:
                return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
            except redis.RedisError:
                return False

        self.server = Server("redis-server", argv, directory, ready)
        try:
            self.r = redis.Redis(port=self.server.port)
            config = self.r.config_get("append*")
            assert config.get("appendonly") == "yes" and config.get("appendfsync") == "everysec", config
        except BaseException:
            self.server.stop()
            raise

    def write_batched(self, wl: Workload) -> None:
        pipeline, stream = self.r.pipeline, self.STREAM
        for values, keys in wl.batches:
            pipe = pipeline(transaction=False)
            xadd = pipe.xadd
            for key, value in zip(keys, values):
                xadd(stream, {b"k": key, b"v": value})
            pipe.execute()

    def write_single(self, wl: Workload) -> None:
        xadd, stream = self.r.xadd, self.STREAM
        for key, value in zip(wl.keys, wl.values):
            xadd(stream, {b"k": key, b"v": value})

    def sync(self) -> None:
        pass  # no client command fsyncs the AOF (WAITAOF is Redis 7.2+); everysec does it

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        xrange, stream = self.r.xrange, self.STREAM
        key = value = None
        n, start = 0, b"-"
        while True:
            entries = xrange(stream, min=start, count=BATCH)
            if not entries:
                break
            for _id, fields in entries:
                key = fields[b"k"]
                value = fields[b"v"]
            n += len(entries)
            start = b"(" + entries[-1][0]  # exclusive start (Redis >= 6.2)
        return n, key, value

    def close(self) -> None:
        try:
            self.r.close()
        finally:
            self.server.stop()


class NatsJetStreamStore(Store):
    """NATS JetStream on a local ``nats-server -js`` (file storage, server default sync), nats-py
    client. One stream on subject ``s``; each record is one message whose payload is key + value.
    Batched: 1000 ``publish_async`` then wait for their 1000 acks; single: ``publish`` awaiting its
    ack. The read replays the stream through an ordered push consumer (no acks)."""

    name = "NATS JetStream (file)"
    SUBJECT = "s"

    @staticmethod
    def unavailable() -> str | None:
        return missing_program("nats-server") or missing_module("nats")

    def open(self, directory: str) -> None:
        store_dir = os.path.join(directory, "jetstream")

        def argv(port: int) -> list[str]:
            return ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store_dir]

        self.server = Server("nats-server", argv, directory, lambda port: port_answers(port, b"INFO"))
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._connect())
        except BaseException:
            self.close()
            raise

    async def _connect(self) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        self.nc = await nats.connect(f"nats://127.0.0.1:{self.server.port}", allow_reconnect=False,
                                     max_reconnect_attempts=0)
        self.js = self.nc.jetstream()
        deadline = time.monotonic() + Server.START_TIMEOUT
        while True:  # JetStream may come up a moment after the client port
            try:
                await self.js.account_info()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        info = await self.js.add_stream(StreamConfig(name="S", subjects=[self.SUBJECT], storage=StorageType.FILE))
        assert info.config.storage == StorageType.FILE

    def write_batched(self, wl: Workload) -> None:
        self.loop.run_until_complete(self._write_batched(wl))

    async def _write_batched(self, wl: Workload) -> None:
        publish_async, subject = self.js.publish_async, self.SUBJECT
        concat = bytes.__add__
        seq = 0
        for values, keys in wl.batches:
            acks = [await publish_async(subject, payload) for payload in map(concat, keys, values)]
            seq = (await asyncio.gather(*acks))[-1].seq
        if seq != wl.n:
            raise AssertionError(f"last ack has sequence {seq}, expected {wl.n}")

    def write_single(self, wl: Workload) -> None:
        self.loop.run_until_complete(self._write_single(wl))

    async def _write_single(self, wl: Workload) -> None:
        publish, subject = self.js.publish, self.SUBJECT
        for key, value in zip(wl.keys, wl.values):
            await publish(subject, key + value)

    def sync(self) -> None:
        pass  # JetStream fsyncs on its own interval (sync_interval); no client call for it

    def read_all(self) -> tuple[int, bytes | None, bytes | None]:
        return self.loop.run_until_complete(self._read_all())

    async def _read_all(self) -> tuple[int, bytes | None, bytes | None]:
        # an ordered push consumer: JetStream's own way to replay a stream in order (flow
        # controlled, no acks). A pull consumer's fetch(1000) measured 7x slower in nats-py.
        total = (await self.js.stream_info("S")).state.messages
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state: list[Any] = [0, None, None]  # records, last key, last value

        async def on_message(msg: Any) -> None:
            data = msg.data
            state[1] = data[:KEY_BYTES]
            state[2] = data[KEY_BYTES:]
            state[0] += 1
            if state[0] >= total and not done.done():
                done.set_result(None)

        if total == 0:
            return 0, None, None
        sub = await self.js.subscribe(self.SUBJECT, ordered_consumer=True, cb=on_message)
        try:
            seen = -1
            while not done.done():  # fail after 10 s without progress
                if state[0] == seen:
                    raise TimeoutError(f"JetStream replay stalled after {seen} of {total} messages")
                seen = state[0]
                await asyncio.wait([done], timeout=10)
        finally:
            await sub.unsubscribe()
        return state[0], state[1], state[2]

    def close(self) -> None:
        try:
            if getattr(self, "nc", None) is not None:
                self.loop.run_until_complete(self.nc.close())
                self.nc = None
        finally:
            try:
                self.loop.close()
            finally:
                self.server.stop()


def run_cell(store: Store, wl: Workload, base: str, batched: bool, read: bool | None = None) -> dict[str, float]:
    """Write ``wl`` into a fresh store (batched or one record per call), sync, and (by default
    after a batched write; ``read=True`` after either) read it all back and check the last record."""
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
            if batched if read is None else read:
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


PEERS: dict[str, Callable[[int], Store]] = {
    "logstore": lambda n: LogstoreStore(),
    "file": lambda n: PlainFileStore(),
    "sqlite": lambda n: SqliteStore(),
    "lmdb": LmdbStore,
    "rocksdict": RocksdictStore,
    "redis": lambda n: RedisStreamsStore(),
    "nats": lambda n: NatsJetStreamStore(),
}
PEER_CLASSES: dict[str, type[Store]] = {
    "logstore": LogstoreStore, "file": PlainFileStore, "sqlite": SqliteStore, "lmdb": LmdbStore,
    "rocksdict": RocksdictStore, "redis": RedisStreamsStore, "nats": NatsJetStreamStore,
}
QUICK_N = 3000
SERVER_SINGLE_N = 100_000  # ~10-20 s per run at a network round trip per record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="records per cell (default 200000; --quick: 3000)")
    ap.add_argument("--single-n", type=int, default=None, metavar="N",
                    help="records per single-record write cell of the server peers (redis, nats), whose "
                         "single writes are one network round trip each (default: min(--n, 100000))")
    ap.add_argument("--repeat", type=int, default=None, help="runs per cell; the median is reported "
                                                             "(default 3; --quick: 1)")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated subset of {','.join(PEERS)} (default: all; missing ones are "
                         "reported as skipped)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run for CI: N=3000, one run, no warm-up; checks every available peer works")
    ap.add_argument("--dir", default=None, help="where the stores are written (default: the temp dir)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all numbers to FILE")
    ap.add_argument("--workload", choices=("log", "broker"), default="log",
                    help="log: PartitionLog in logstore's row (batched, single, read); broker: logstore's "
                         "producer.send / consumer.poll in its row (single write, read of it)")
    args = ap.parse_args(argv)
    n = args.n if args.n is not None else (QUICK_N if args.quick else 200_000)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if n < 1 or repeat < 1:
        ap.error("--n and --repeat must be >= 1")
    single_n = min(args.single_n or SERVER_SINGLE_N, n)

    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {list(PEERS)}")
    # a SIGTERM (CI timeout, kill) unwinds like Ctrl-C, so every server is stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(args, names, n, single_n, repeat)
    finally:
        stop_all_servers()


def run(args: argparse.Namespace, names: list[str], n: int, single_n: int, repeat: int) -> int:
    broker = args.workload == "broker"
    cells = BROKER_CELLS if broker else CELLS
    titles = BROKER_CELL_TITLES if broker else CELL_TITLES
    wl = Workload(n, BATCH)
    server_peers = {"redis", "nats"}
    single_wl = wl if single_n == n else Workload(single_n, BATCH)
    base = args.dir or tempfile.gettempdir()
    info = machine_info(base)
    load_before = os.getloadavg()
    print(f"workload={args.workload} N={wl.n} key={KEY_BYTES}B value=100B batch={BATCH} repeat={repeat} dir={base}"
          + (f" (server peers' single-record writes: N={single_n})" if single_n != n else ""), flush=True)

    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    stores: dict[str, Store] = {}
    for name in names:
        reason = PEER_CLASSES[name].unavailable()
        if reason:
            skipped[name] = reason
            print(f"  skipped {name}: {reason}", flush=True)
        elif broker and name == "logstore":
            stores[name] = LogstoreBrokerStore()
        else:
            stores[name] = PEERS[name](n)
    versions = peer_versions(stores)
    info.update(versions)

    def single_for(name: str) -> Workload:
        return single_wl if name in server_peers else wl

    def cell_n(c: str, name: str) -> int:
        return single_for(name).n if c == "write_single" or broker else wl.n

    runs = {name: {"write_batched": [], "write_single": [], "read": [],
                   "sync_after_batched": [], "sync_after_single": []} for name in stores}
    if not args.quick:
        warm = Workload(min(n, 20_000), BATCH, seed=3)
        for name in list(stores):  # untimed warm-up: imports, allocator, first-use costs of each store
            try:
                if not broker:
                    run_cell(stores[name], warm, base, batched=True)
                run_cell(stores[name], warm, base, batched=False, read=broker)
            except Exception as e:  # reported below, the others still run
                failed[name] = f"{type(e).__name__}: {e}"
                print(f"  FAILED {name} (warm-up): {failed[name]}", flush=True)
                del stores[name]
    # round robin (every store once per repeat), so a burst of noise from elsewhere on the
    # machine spreads over all stores instead of landing on one
    for r in range(repeat):
        for name in list(stores):
            try:
                if broker:  # the read is of what the single write stored
                    s = run_cell(stores[name], single_for(name), base, batched=False, read=True)
                    b = None
                else:
                    b = run_cell(stores[name], wl, base, batched=True)
                    s = run_cell(stores[name], single_for(name), base, batched=False)
            except Exception as e:
                failed[name] = f"{type(e).__name__}: {e}"
                print(f"  FAILED {name}: {failed[name]}", flush=True)
                del stores[name]
                continue
            out = runs[name]
            if b is not None:
                out["write_batched"].append(b["write_s"])
                out["sync_after_batched"].append(b["sync_s"])
            out["read"].append((s if b is None else b)["read_s"])
            out["write_single"].append(s["write_s"])
            out["sync_after_single"].append(s["sync_s"])
            print(f"  run {r + 1}/{repeat} {stores[name].name:34s} "
                  + "  ".join(f"{c} {fmt_rate(cell_n(c, name) / out[c][-1]):>10s}" for c in cells), flush=True)

    results: dict[str, Any] = {}
    for name, store in stores.items():
        out = runs[name]
        cell = {c: {"records_per_s": cell_n(c, name) / statistics.median(out[c]), "records": cell_n(c, name),
                    "seconds": out[c]} for c in cells}
        cell["sync_seconds"] = {"after_batched": out["sync_after_batched"], "after_single": out["sync_after_single"]}
        results[store.name] = cell

    load_after = os.getloadavg()
    info["load_avg_before"] = " ".join(f"{x:.2f}" for x in load_before)
    info["load_avg_after"] = " ".join(f"{x:.2f}" for x in load_after)
    ls_name = LogstoreBrokerStore.name if broker else LogstoreStore.name
    ratios: dict[str, dict[str, float]] = {}
    run_ratios: dict[str, dict[str, list[float]]] = {}  # run r of logstore / run r of the peer
    if ls_name in results:
        mine = results[ls_name]
        for peer, cell in results.items():
            if peer != ls_name:
                ratios[peer] = {c: mine[c]["records_per_s"] / cell[c]["records_per_s"] for c in cells}
                run_ratios[peer] = {c: [(mine[c]["records"] / a) / (cell[c]["records"] / b)
                                        for a, b in zip(mine[c]["seconds"], cell[c]["seconds"])] for c in cells}

    lines = ["| store | " + " | ".join(titles[c] for c in cells) + " |",
             "|---|" + "---:|" * len(cells)]
    for peer, cell in results.items():
        parts = []
        for c in cells:
            text = fmt_rate(cell[c]["records_per_s"])
            if peer in ratios:
                text += f" (logstore {ratios[peer][c]:.2f}x)"
            if cell[c]["records"] != wl.n:
                text += f" [N={cell[c]['records']}]"
            parts.append(text)
        lines.append(f"| {peer} | " + " | ".join(parts) + " |")
    empty_cells = " |" * (len(cells) - 1)
    for name, reason in failed.items():
        shown = LogstoreBrokerStore.name if broker and name == "logstore" else PEER_CLASSES[name].name
        lines.append(f"| {shown} | FAILED: {reason} |{empty_cells}")
    for name, reason in skipped.items():
        lines.append(f"| {PEER_CLASSES[name].name} | skipped: {reason} |{empty_cells}")
    table = "\n".join(lines)
    print()
    print(f"Records/s, median of {repeat} run(s), N={wl.n}; in parentheses: logstore / peer (> 1: logstore faster).")
    print()
    print(table)
    print()
    if repeat > 1 and run_ratios:
        print("logstore / peer within each run (min - max over the runs):")
        print()
        print("| store | " + " | ".join(titles[c] for c in cells) + " |")
        print("|---|" + "---:|" * len(cells))
        for peer, per in run_ratios.items():
            print(f"| {peer} | " + " | ".join(f"{min(per[c]):.2f}x - {max(per[c]):.2f}x" for c in cells) + " |")
        print()
    print(machine_markdown(info))
    if max(load_before[0], load_after[0]) > 1.5:
        print("\nWARNING: other processes were busy on this machine (load average above): "
              "numbers may be low; run again")
    if skipped:
        print(f"\nskipped (not installed): {', '.join(skipped)}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": {"n": wl.n, "single_n_servers": single_n, "key_bytes": KEY_BYTES,
                                    "value_bytes": 100, "batch": BATCH, "repeat": repeat, "dir": base,
                                    "quick": args.quick, "kind": args.workload, "cells": list(cells)},
                       "machine": info, "results": results, "ratios_logstore_over_peer": ratios,
                       "ratios_within_runs": run_ratios,
                       "skipped": skipped, "failed": failed, "markdown": table}, f, indent=2)
        print(f"\nwritten to {args.json}")
    return 1 if failed else 0


def peer_versions(stores: dict[str, Store]) -> dict[str, str]:
    """Versions of the peers' libraries and servers, for the report."""
    import importlib.metadata as md
    out: dict[str, str] = {}
    dists = {"lmdb": "lmdb", "rocksdict": "rocksdict", "redis": "redis", "nats": "nats-py"}
    for name in stores:
        if name in dists:
            try:
                out[f"{dists[name]}_version"] = md.version(dists[name])
            except md.PackageNotFoundError:
                pass
    if "redis" in stores:
        try:
            out["hiredis_version"] = md.version("hiredis")
        except md.PackageNotFoundError:
            out["hiredis_version"] = "not installed (pure-Python RESP parser)"
    for name, argv in (("redis", ["redis-server", "--version"]), ("nats", ["nats-server", "--version"])):
        if name in stores:
            try:
                out[f"{argv[0]}_version"] = subprocess.run(argv, capture_output=True, text=True,
                                                           timeout=10).stdout.strip()
            except (OSError, subprocess.SubprocessError) as e:
                out[f"{argv[0]}_version"] = f"? ({e})"
    if "sqlite" in stores:
        out["sqlite_version"] = sqlite3.sqlite_version
    return out


if __name__ == "__main__":
    sys.exit(main())
