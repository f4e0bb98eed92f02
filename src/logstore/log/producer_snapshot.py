"""Idempotent producers' state of a partition: snapshot file and rebuild from batch headers.

The state (per producer id: epoch and its last batches' sequence and offset ranges) lives in
``LogCore.producer_state``. It is written to ``producer.snapshot`` with the log end offset it is
valid for whenever the log flushes or closes; on open it is restored from the snapshot and brought
up to date by replaying the headers of the batches after that offset, or, without a usable
snapshot, of the whole log (Kafka does the same with its .snapshot files).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import xxhash

from logstore.log.checkpoint import write_atomic

if TYPE_CHECKING:
    from logstore.log.partition import PartitionLog

FILE_NAME = "producer.snapshot"
VERSION = 1
REPLAY_READ_BYTES = 8 << 20


def write_snapshot(directory: str, offset: int, entries: list[Any]) -> None:
    body = json.dumps({"version": VERSION, "offset": offset, "producers": entries},
                      separators=(",", ":")).encode()
    write_atomic(os.path.join(directory, FILE_NAME), body + b"\n" + xxhash.xxh64_hexdigest(body).encode() + b"\n")


def read_snapshot(directory: str) -> tuple[int, list[Any]] | None:
    """(offset, entries) or None when missing or damaged (the caller then rebuilds)."""
    try:
        with open(os.path.join(directory, FILE_NAME), "rb") as f:
            data = f.read()
        body, digest, tail = data.rsplit(b"\n", 2)
        if tail or digest.decode() != xxhash.xxh64_hexdigest(body):
            return None
        doc = json.loads(body)
        if doc.get("version") != VERSION or not isinstance(doc.get("offset"), int):
            return None
        return doc["offset"], [(int(p), int(e), [tuple(int(x) for x in b) for b in batches])
                               for p, e, batches in doc["producers"]]
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def replay(log: PartitionLog, start: int) -> int:
    """Apply the producer fields of every batch from ``start`` to the log end; returns the
    number of batches read. Called under the log's lock."""
    table = log.producer_state
    offset = max(start, log.log_start_offset)
    batches = 0
    while offset < log.log_end_offset:
        view = log.read(offset, REPLAY_READ_BYTES)
        for b in view.batches():
            batches += 1
            if b["producer_id"] >= 0 and b["base_sequence"] >= 0:
                seq = b["base_sequence"]
                table.replay(b["producer_id"], b["producer_epoch"], seq,
                             seq + b["last_offset"] - b["base_offset"], b["base_offset"])
        if view.next_offset <= offset:
            break
        offset = view.next_offset
    return batches


def restore(log: PartitionLog) -> None:
    """Rebuild the producer state of a just-opened log."""
    snap = read_snapshot(log.path)
    table = log.producer_state
    table.clear()
    if snap is not None and log.log_start_offset <= snap[0] <= log.log_end_offset:
        table.restore(snap[1])
        replay(log, snap[0])
    else:
        replay(log, log.log_start_offset)
