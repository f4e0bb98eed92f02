"""The standard benchmark workload, shared by the pytest benchmarks and ``compare.py``.

One partition, 16-byte keys (``b"key-%012d"``), 100-byte random values, batches of 1000 records
per call, page-cache durability (``flush="never"``). Everything here runs outside timed regions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

VALUE_BYTES = 100
KEY_BYTES = 16
BATCH = 1000
KEY_FORMAT = b"key-%012d"


def make_key(i: int) -> bytes:
    return KEY_FORMAT % i


@dataclass
class Workload:
    """``n`` records as parallel lists of bytes, plus the same split into ``batch``-sized calls.
    Values are ``value_bytes`` (default: the standard 100) random bytes each."""

    n: int
    batch: int = BATCH
    seed: int = 1
    value_bytes: int = VALUE_BYTES
    keys: list[bytes] = field(init=False, repr=False)
    values: list[bytes] = field(init=False, repr=False)
    batches: list[tuple[list[bytes], list[bytes]]] = field(init=False, repr=False)
    """(values, keys) per call of ``batch`` records (the last one may be shorter)."""

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        size = self.value_bytes
        blob = rng.randbytes(self.n * size)
        self.values = [blob[i * size:(i + 1) * size] for i in range(self.n)]
        self.keys = [make_key(i) for i in range(self.n)]
        assert all(len(k) == KEY_BYTES for k in self.keys[:1] + self.keys[-1:])
        self.batches = [(self.values[s:s + self.batch], self.keys[s:s + self.batch])
                        for s in range(0, self.n, self.batch)]

    @property
    def payload_bytes(self) -> int:
        """Key + value bytes of all records (what a caller hands over)."""
        return self.n * (KEY_BYTES + self.value_bytes)


# -- the machine, for reports -------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def filesystem_of(path: str) -> str:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    import os
    real = os.path.realpath(path)
    best, fstype = "", "?"
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, f"{parts[2]} ({parts[0]} on {mnt})"
    return fstype


def machine_info(tmpdir: str | None = None) -> dict[str, str]:
    """CPU model, cores, RAM, kernel, Python, numpy, filesystem of the temp dir, logstore build."""
    import os
    import platform
    import tempfile
    import time

    import numpy

    model = "?"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info = {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "tmp_fs": filesystem_of(tmpdir or tempfile.gettempdir()),
    }
    try:
        import logstore._native.codec as codec
        import logstore._native.core as core
        info["hw_crc32c"] = str(bool(codec.HARDWARE_CRC32C))
        info["native_build"] = time.strftime("%Y-%m-%d %H:%M:%S",
                                             time.localtime(os.path.getmtime(core.__file__)))
    except Exception:  # pragma: no cover - report what we can
        pass
    return info


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())
