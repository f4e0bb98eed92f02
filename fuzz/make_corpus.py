"""Write seed corpora for the fuzz targets, made by the real code (so they track the format).

    python fuzz/make_corpus.py OUT_DIR        # OUT_DIR/<target>/seed-NNN for every target

Every seed is small (under 4 KiB, libFuzzer's default -max_len) and is accepted by its target's
check, which this script asserts: a seed that fails is a finding in itself.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402

from logstore import PartitionLog  # noqa: E402
from logstore._native.codec import encode_varint  # noqa: E402
from logstore.log.checkpoint import Checkpoint  # noqa: E402

INT64_MAX = 2**63 - 1


def _raw(log: PartitionLog, offset: int = 0) -> bytes:
    return bytes(log.read(offset, 1 << 20).raw)


def _logs(tmp: str) -> dict[str, object]:
    """Real logs: raw batches of several shapes and one segment's three files."""
    out: dict[str, object] = {}
    log = PartitionLog.open(os.path.join(tmp, "a"), flush="never")
    log.append(b"v0")
    log.append(b"v1", key=b"k1", headers=[("h", b"x"), ("n", None)], timestamp=1_700_000_000_000)
    log.append(None, key=b"")
    out["single_appends"] = _raw(log)  # one coalesced batch of three records
    first = log.append_many([b"a" * 10, b"", None], keys=[b"k", None, b"kk"],
                            headers=[[("x", b"1")], None, [("", b"")]], timestamps=[5, 3, 9])
    out["many"] = _raw(log, first)
    out["both"] = _raw(log)  # two batches back to back
    log.close()
    log = PartitionLog.open(os.path.join(tmp, "b"), flush="never", timestamp_type="log_append_time")
    log.append_many([b"x", b"y"])
    out["append_time"] = _raw(log)
    log.close()
    # a segment with index entries: many small batches, index entry every 128 bytes
    path = os.path.join(tmp, "c")
    log = PartitionLog.open(path, flush="never", index_interval_bytes=128)
    for i in range(24):
        log.append_many([b"r%d" % i] * (1 + i % 3), timestamps=[1000 + 10 * i - (i % 4)] * (1 + i % 3))
    log.close()
    stem = os.path.join(path, "%020d" % 0)
    for suffix in (".log", ".index", ".timeindex"):
        with open(stem + suffix, "rb") as f:
            out["segment" + suffix] = f.read()
    return out


def seeds() -> dict[str, list[bytes]]:
    with tempfile.TemporaryDirectory(prefix="logstore-corpus-") as tmp:
        logs = _logs(tmp)
    batches = [logs[k] for k in ("single_appends", "many", "both", "append_time")]
    assert all(isinstance(b, bytes) for b in batches)
    seg_log, seg_index, seg_time = (logs["segment" + s] for s in (".log", ".index", ".timeindex"))
    assert isinstance(seg_log, bytes) and isinstance(seg_index, bytes) and isinstance(seg_time, bytes)
    out: dict[str, list[bytes]] = {t: [] for t in checks.CHECKS}

    for raw in batches:
        assert isinstance(raw, bytes)
        out["batch"] += [bytes([1, 0, 0]) + raw, bytes([2, 0, 0]) + raw, bytes([5, 1, 2]) + raw]
        out["append_batch"] += [bytes([f]) + raw for f in (0, 2)]
    out["batch"].append(bytes([3, 0, 0]) + seg_log[:3000])

    for v in (0, 1, -1, 63, -64, 64, 300, 2**31 - 1, -(2**31), INT64_MAX, -INT64_MAX - 1):
        out["varint"].append(bytes([0, 9]) + encode_varint(v))
    out["varint"].append(bytes([2, 4]) + b"\xaa\xbb" + encode_varint(-(2**31)) + b"\x80")

    next_offset = sum(1 + i % 3 for i in range(24))  # records in the segment written above

    def index_seed(flags: int, base: int, log_size: int, next_delta: int, probe: int, body: bytes) -> bytes:
        return struct.pack(">BqIII", flags, base, log_size, next_delta, probe) + body

    for base in (0, 1000, 2**32, INT64_MAX - 2**20):
        out["index"].append(index_seed(0, base, len(seg_log), next_offset, 7, seg_index))
        out["index"].append(index_seed(1, base, len(seg_log), next_offset, 1100, seg_time))
    out["index"].append(index_seed(0, 0, 100, 10, 0, b""))

    for cp in (Checkpoint(0, 0, 0), Checkpoint(120, 5, 118, [(0, 0), (3, 40), (7, 99)])):
        encoded = cp.encode()
        out["checkpoint"].append(b"\x00" + encoded)
        out["checkpoint"].append(b"\x01" + encoded[:encoded.rindex(b"xxh64 ")])

    small_log = seg_log[:2400]
    for flags in (0, 1, 2):
        out["segment"].append(struct.pack(">BHHHH", flags, 128, 0, 0, 0) + small_log)
    out["segment"].append(struct.pack(">BHHHH", 4, 128, 0, len(seg_index), len(seg_time))
                          + seg_index + seg_time + seg_log[:3000 - len(seg_index) - len(seg_time)])
    out["segment"].append(struct.pack(">BHHHH", 5, 0, 0, 0, 0) + batches[2])
    out["open"] = _open_seeds()
    return out


def _open_seeds() -> list[bytes]:
    """Whole log directories (three small segments, checkpoint) in the ``open`` layout."""
    seeds = []
    with tempfile.TemporaryDirectory(prefix="logstore-corpus-") as tmp:
        path = os.path.join(tmp, "d")
        log = PartitionLog.open(path, flush="never", segment_bytes=400, index_interval_bytes=128)
        for i in range(9):
            log.append_many([b"value-%d" % i] * 2, keys=[b"k", None], timestamps=[100 + i, 90 + i])
        log.set_high_watermark(log.log_end_offset - 3)
        log.close()
        entries = b""
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                content = f.read()
            stem, ext = os.path.splitext(name)
            if name == "partition.checkpoint":
                entries += struct.pack(">BQH", 3, 0, len(content)) + content
            elif ext in checks.OPEN_KINDS:
                entries += struct.pack(">BQH", checks.OPEN_KINDS.index(ext), int(stem), len(content)) + content
    for flags in (1, 0, 2, 4):
        seeds.append(bytes([flags]) + entries)
    return seeds


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    try:
        for target, items in seeds().items():
            d = os.path.join(root, target)
            os.makedirs(d, exist_ok=True)
            for i, data in enumerate(items):
                assert len(data) <= 4096, (target, i, len(data))
                checks.CHECKS[target](data)  # every seed must pass its own check
                with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
                    f.write(data)
            print(f"{target}: {len(items)} seeds", file=sys.stderr)
    finally:
        checks.cleanup()


if __name__ == "__main__":
    main()
