"""Compactor process for ``test_compaction_crash.py``: opens a prepared log and compacts it until
it is killed (SIGKILL), by the parent at a random moment or by itself at a chosen step of a swap.

Usage::

    python compaction_crasher.py DIRECTORY CONFIG_JSON [POINT COUNT]

``CONFIG_JSON`` holds the PartitionLog config plus the private keys ``_now`` (the compaction
clock), ``_delete_retention_ms`` and ``_max_map_records``. With ``POINT COUNT`` the process sends
itself SIGKILL the COUNT-th time compaction reaches POINT (``logstore.log.compaction.CRASH_HOOK``
points: scratch-written, committed, old-deleted, new-moved, swapped, checkpointed).

The log is written by the parent with ``record_for`` (every record a pure function of its
offset), so whoever reopens it can tell an original record at its original offset from anything
else. Lines on stdout (single ``os.write`` calls): ``READY``, then ``PASS <clean_upto>`` after each
complete pass, ``DONE`` once a pass finds nothing to do (then it idles until killed).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time

TS0 = 1_700_000_000_000


def record_for(offset: int, keys: int = 40) -> tuple[bytes | None, bytes | None, int]:
    """(key, value, timestamp) of the record at ``offset``: few keys (so compaction removes most
    records), some tombstones, some null keys, values of varied size."""
    h = hashlib.sha256(b"logstore compaction crash %d" % offset).digest()
    key = None if h[0] % 29 == 0 else b"key-%d" % (h[1] % keys)
    value = None if h[2] % 13 == 0 else hashlib.shake_256(h).digest(8 + h[3] % 120)
    return key, value, TS0 + offset


def _emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    from logstore import PartitionLog
    from logstore.log import compaction

    path, cfg = sys.argv[1], json.loads(sys.argv[2])
    now = cfg.pop("_now")
    options = compaction.CompactionOptions(delete_retention_ms=cfg.pop("_delete_retention_ms"),
                                           max_map_records=cfg.pop("_max_map_records"), read_chunk_bytes=4096)
    if len(sys.argv) > 3:
        point, count = sys.argv[3], int(sys.argv[4])
        seen = 0

        def hook(at: str) -> None:
            nonlocal seen
            if at == point:
                seen += 1
                if seen == count:
                    os.kill(os.getpid(), signal.SIGKILL)

        compaction.CRASH_HOOK = hook
    log = PartitionLog.open(path, **cfg)
    log.set_high_watermark(log.log_end_offset)
    _emit("READY")
    while True:
        stats = compaction.compact(log, now=now, options=options)
        _emit("PASS %d" % stats.clean_upto)
        if stats.groups_swapped == 0 and stats.clean_upto == stats.cleanable_end:
            break
    _emit("DONE")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
