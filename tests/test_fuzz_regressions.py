"""Replay every input the fuzzers ever flagged through the same checks (fuzz/checks.py).

``tests/fuzz_regressions/<target>-<what>.bin`` is one input of the fuzz target ``<target>``,
in that target's layout (see fuzz/checks.py). Each must now pass its check: decoded
consistently, or rejected with a LogstoreError. Fast and without atheris. Some inputs were
found as undefined behaviour (signed overflow, oversized shifts): in a plain build they pass by
luck of the compiler, and they fail loudly only under .ci/sanitize, which runs this file too.

Inputs that made the decoder allocate memory in proportion to a length field are replayed with
the address space capped (on Linux, outside ASan), so "allocate 16 GiB, then notice the data is
short" fails here as a MemoryError instead of passing on a machine with memory to spare.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
INPUTS = sorted((ROOT / "fuzz_regressions").glob("*.bin"))
CHECKS_PATH = ROOT.parent / "fuzz" / "checks.py"


def _load_checks():
    spec = importlib.util.spec_from_file_location("logstore_fuzz_checks", CHECKS_PATH)
    assert spec is not None and spec.loader is not None, f"cannot load {CHECKS_PATH}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep the usual import invariants
    spec.loader.exec_module(module)
    return module


checks = _load_checks()


@pytest.fixture(scope="module", autouse=True)
def _scratch_cleanup():
    yield
    checks.cleanup()


class _AddressSpaceCap:
    """Cap RLIMIT_AS at the current size plus ``headroom`` for the duration (Linux only; not
    under ASan, whose shadow memory needs terabytes of address space)."""

    def __init__(self, headroom: int = 4 << 30) -> None:
        self.headroom = headroom
        self.saved = None

    def __enter__(self):
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return self
        if "asan" in os.environ.get("LD_PRELOAD", "") or not os.path.exists("/proc/self/statm"):
            return self
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + self.headroom
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
            self.saved = (soft, hard)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, self.saved)


def test_every_input_names_a_known_target():
    assert INPUTS, "tests/fuzz_regressions holds no inputs"
    for path in INPUTS:
        assert path.name.split("-", 1)[0] in checks.CHECKS, f"{path.name}: unknown fuzz target"
        assert path.stat().st_size <= 64 * 1024, f"{path.name}: regression inputs stay small"


@pytest.mark.parametrize("path", INPUTS, ids=[p.stem for p in INPUTS])
def test_fuzz_regression(path: Path):
    target = path.name.split("-", 1)[0]
    data = path.read_bytes()
    with _AddressSpaceCap():
        checks.CHECKS[target](data)


APPEND_INPUTS = [p for p in INPUTS if p.name.startswith("append_batch-")]


@pytest.mark.parametrize("path", APPEND_INPUTS, ids=[p.stem for p in APPEND_INPUTS])
def test_append_batch_input_twice(path: Path):
    # the fuzzer appends input after input to one scratch log: an input whose producer id the
    # log has already seen must meet the same oracle (append_batch-producer-seen-before.bin)
    data = path.read_bytes()
    checks.check_append_batch(data)
    checks.check_append_batch(data)
