"""What every ``fuzz_<target>.py`` does: instrument the Python side, then hand the target's
check from ``checks.py`` to atheris (libFuzzer). Native coverage comes only from an extension
built with ``-fsanitize=fuzzer-no-link`` (``fuzz/build_native.sh``); see README.md."""

from __future__ import annotations

import atexit
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["logstore", "checks"]):
    import checks  # noqa: E402  (imports logstore: its Python modules get instrumented)

import logstore._native.codec  # noqa: E402


def run(target: str) -> None:
    check = checks.CHECKS[target]
    # say which build is under test: an instrumented one lives outside site-packages
    print(f"logstore fuzz target {target!r}: native code from {os.path.dirname(logstore._native.codec.__file__)}",
          file=sys.stderr)
    atexit.register(checks.cleanup)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
