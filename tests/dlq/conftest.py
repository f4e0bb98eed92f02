from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import logstore

from .support import Clock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[logstore.Store]:
    s = logstore.open(tmp_path / "data", cleaner=False)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()
