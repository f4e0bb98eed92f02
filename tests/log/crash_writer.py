"""Writer process for ``test_crash.py``: appends deterministic records to a PartitionLog until it
is killed, reporting on stdout which offsets it knows to be durable.

Usage::

    python crash_writer.py DIRECTORY CONFIG_JSON SEED

``CONFIG_JSON`` holds PartitionLog config plus two private keys: ``_max_records`` (stop appending
after this many, then idle until killed) and ``_flush_prob`` (chance of an explicit ``flush()``
after each operation, for flush="never"/"interval").

Every record is a pure function of its offset (:func:`record_for`), so whoever reads the log
afterwards can recompute what each offset must hold. Lines written to stdout (each one a single
``os.write`` of less than PIPE_BUF bytes, so a kill never leaves half a line that parses):

``READY <leo> <clean>``  the log is open (recovery done), ``leo`` is its log end offset
``D <n>``                every offset below ``n`` is durable (reported only after an append
                         returned with flush="always", or after ``flush()`` returned)
``DONE <leo>``           the cap was reached; the process now idles until killed
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time

TS0 = 1_700_000_000_000


def record_for(offset: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None, int]:
    """(key, value, headers, timestamp) of the record at ``offset``; headers None means none."""
    h = hashlib.sha256(b"logstore crash test %d" % offset).digest()
    size = int.from_bytes(h[0:2], "big") % 600
    if h[2] % 16 == 0:
        size *= 8  # now and then a large record
    if h[9] % 97 == 0:
        value = None  # a tombstone
    else:
        value = hashlib.shake_256(h + b"value").digest(size) if size else b""
    key = None if h[3] % 4 == 0 else b"key-%d-%s" % (h[4] % 32, h[10:10 + h[11] % 12].hex().encode())
    if h[5] % 3 == 0:
        headers = [("offset", b"%d" % offset), ("digest", h[12:20])][: 1 + h[6] % 2]
    else:
        headers = None
    # mostly increasing timestamps with jitter and rare spikes (so a segment's largest timestamp
    # is not always its last one)
    ts = TS0 + 10 * offset + (h[7] % 21) - 10
    if h[8] % 16 == 0:
        ts += 5000
    return key, value, headers, ts


def _emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    from logstore import PartitionLog

    path, cfg_json, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.loads(cfg_json)
    cap = cfg.pop("_max_records", 50_000)
    flush_prob = cfg.pop("_flush_prob", 0.1)
    rng = random.Random(seed)
    log = PartitionLog.open(path, **cfg)
    always = cfg.get("flush") == "always"
    _emit("READY %d %d" % (log.log_end_offset, int(log.recovery.clean_shutdown)))
    stop = log.log_end_offset + cap

    def single() -> None:
        expect = log.log_end_offset
        key, value, headers, ts = record_for(expect)
        got = log.append(value, key=key, headers=headers, timestamp=ts)
        if got != expect:
            raise AssertionError(f"append returned {got}, expected {expect}")
        if always:
            _emit("D %d" % (got + 1))

    while log.log_end_offset < stop:
        r = rng.random()
        if r < 0.4:
            single()
        elif r < 0.8:
            first = log.log_end_offset
            n = rng.randint(2, 40)
            recs = [record_for(first + i) for i in range(n)]
            got = log.append_many([v for _, v, _, _ in recs], keys=[k for k, _, _, _ in recs],
                                  headers=[h for _, _, h, _ in recs], timestamps=[t for _, _, _, t in recs])
            if got != first:
                raise AssertionError(f"append_many returned {got}, expected {first}")
            if always:
                _emit("D %d" % (first + n))
        elif r < 0.97:
            for _ in range(rng.randint(2, 60)):  # consecutive singles share an open batch
                single()
        else:
            log.roll()
        if not always and rng.random() < flush_prob:
            target = log.log_end_offset
            log.flush()
            _emit("D %d" % target)
    _emit("DONE %d" % log.log_end_offset)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
