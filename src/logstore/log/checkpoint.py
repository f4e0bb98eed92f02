"""The partition checkpoint file: recovery point, log start offset, high watermark, epoch cache.

Text, one field a line, ending in an xxh64 of everything before it. Written atomically: temp
file, fsync, rename, fsync of the directory. A missing or damaged checkpoint is reported as None,
and the log then recovers from its segments instead of trusting it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import xxhash

FILE_NAME = "partition.checkpoint"
MAGIC = "logstore-checkpoint 1"


@dataclass
class Checkpoint:
    recovery_point: int
    log_start_offset: int
    high_watermark: int
    epochs: list[tuple[int, int]] = field(default_factory=list)

    def encode(self) -> bytes:
        epochs = ",".join(f"{e}:{o}" for e, o in self.epochs)
        body = (f"{MAGIC}\nrecovery_point {self.recovery_point}\nlog_start_offset {self.log_start_offset}\n"
                f"high_watermark {self.high_watermark}\nepochs {epochs}\n").encode()
        return body + f"xxh64 {xxhash.xxh64_hexdigest(body)}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint | None:
        """Parse a checkpoint; None if it is damaged in any way."""
        try:
            body, _, tail = data.rpartition(b"xxh64 ")
            if not body or tail.strip().decode() != xxhash.xxh64_hexdigest(body):
                return None
            lines = body.decode().splitlines()
            if lines[0] != MAGIC:
                return None
            values = {name: value for name, _, value in (line.partition(" ") for line in lines[1:])}
            epochs = []
            for item in filter(None, values["epochs"].split(",")):
                e, o = item.split(":")
                epochs.append((int(e), int(o)))
            cp = cls(int(values["recovery_point"]), int(values["log_start_offset"]),
                     int(values["high_watermark"]), epochs)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            return None
        if min(cp.recovery_point, cp.log_start_offset, cp.high_watermark) < 0:
            return None
        return cp


def fsync_directory(path: str) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(path) or ".")


def write_checkpoint(directory: str, cp: Checkpoint) -> None:
    write_atomic(os.path.join(directory, FILE_NAME), cp.encode())


def read_checkpoint(directory: str) -> Checkpoint | None:
    try:
        with open(os.path.join(directory, FILE_NAME), "rb") as f:
            return Checkpoint.decode(f.read())
    except FileNotFoundError:
        return None
