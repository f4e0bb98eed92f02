"""kill -9 of a relay process at each step of its cycle (after the claim, in the middle of the
publishes, after the flush, after the marks but before their commit), one after another on the same
outbox: then the scheduler and a fresh relay finish, and every message is in the topic exactly once,
at the position its row records, with each key's messages in order.

The child (``relay_crash_child.py``) is a relay that SIGKILLs itself at the injected step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import logstore
from logstore import outbox

from .conftest import TOPIC, Backend, message_ids, topic_records

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of a child process is POSIX")]

CHILD = Path(__file__).with_name("relay_crash_child.py")
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
BATCH = 8
LEASE = 0.5  # the child's lease_seconds
KILLS = [("claimed", 2), ("published", 5), ("flushed", 2), ("marked", 2)]


def run_child(data_dir: Path, backend: Backend, step: str, nth: int) -> None:
    """Run a relay process until it kills itself at the ``nth`` call of ``step``."""
    proc = subprocess.run([sys.executable, str(CHILD), str(data_dir), backend.url, backend.table, step, str(nth),
                           str(BATCH)], env=CHILD_ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the child did not die at {step}: {proc.returncode}\n{proc.stderr}"


def test_relay_killed_at_each_step_loses_nothing_and_duplicates_nothing(tmp_path: Path, backend: Backend) -> None:
    data_dir = tmp_path / "crash-data"
    with logstore.open(data_dir, cleaner=False) as store:  # the children open the store: one process at a time
        store.create_topic(TOPIC, 3)
    conn = backend.connect()
    keys = [b"k%d" % (i % 5) if i % 7 else None for i in range(80)]
    ids = [outbox.add(conn, TOPIC, b"m%d" % i, k, table=backend.table) for i, k in enumerate(keys)]
    conn.commit()

    for step, nth in KILLS:
        run_child(data_dir, backend, step, nth)
        conn.commit()  # a fresh snapshot (PostgreSQL)
        leased = [r for r in outbox.rows(conn, table=backend.table) if r.lease_owner is not None]
        assert 0 < len(leased) <= BATCH, step  # the killed relay's batch, leased until its lease expires
        time.sleep(LEASE + 0.05)

    backoff = outbox.Backoff(initial=0.01, maximum=0.01, jitter=0.0)
    with logstore.open(data_dir, cleaner=False) as store:
        scheduler = outbox.Scheduler(connect=backend.connect, table=backend.table, backoff=backoff)
        report = scheduler.run_once()
        assert report.requeued == len(leased) and report.dead == 0
        relay = outbox.Relay(store, connect=backend.connect, table=backend.table, backoff=backoff)
        deadline = time.monotonic() + 30
        while outbox.metrics(conn, table=backend.table).pending:
            assert time.monotonic() < deadline, relay.stats
            relay.run_until_idle()
            conn.commit()
            time.sleep(0.02)
        # the last child died after flushing its batch: all of it was in the topic already
        assert relay.stats.duplicates == len(leased) == BATCH
        relay.close()
        scheduler.close()
        records = topic_records(store)

    conn.commit()
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    assert {r.status for r in rows.values()} == {"published"}
    in_log = message_ids([r for _, r in records])
    assert sorted(in_log) == sorted(ids), "a message lost or duplicated"
    for (partition, record), message_id in zip(records, in_log):
        assert (rows[message_id].partition, rows[message_id].offset) == (partition, record.offset)
        assert record.value == b"m%d" % ids.index(message_id)
    order = {message_id: n for n, message_id in enumerate(ids)}
    for key in {k for k in keys if k is not None}:
        seen = [(p, r.offset, order[m]) for (p, r), m in zip(records, in_log) if r.key == key]
        assert [n for _, _, n in sorted(seen)] == sorted(n for _, _, n in seen), f"key {key!r} out of order"
    assert sum(r.attempts for r in rows.values()) > len(ids)  # the killed batches were attempted again
