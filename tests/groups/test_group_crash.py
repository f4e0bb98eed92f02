"""kill -9 of a process that consumes in a group and commits after every batch, then reopen:
the committed offsets are at least the last ones it reported (a commit returns after its batch
is appended to ``__consumer_offsets``, handed to the OS even with flush "never") and at most what
it had read; a commit never moved an offset back; and a new member resumes exactly there:
nothing lost, no gap. Run twice in a row (the second child resumes from the first one's
offsets), under each flush policy.

The child (``group_crash_child.py``) runs two members in turns and replaces one every few
rounds, so the kill can also land inside a rebalance.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import TopicPartition

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("group_crash_child.py")
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
PARTITIONS = 3
PER_PARTITION = 1500


def run_and_kill(data_dir: Path, seed: int, flush: str, commits_before_kill: int, delay: float
                 ) -> list[dict[str, Any]]:
    """Run the child until it has reported ``commits_before_kill`` commits, wait ``delay``
    seconds, SIGKILL it; returns every report it wrote (those after the last read too)."""
    errors = data_dir.with_name(f"{data_dir.name}.{seed}.stderr")
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(seed), flush],
                                stdout=subprocess.PIPE, stderr=stderr, env=CHILD_ENV, text=True)
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a hung child ends the test instead of hanging it
    watchdog.start()
    reports: list[dict[str, Any]] = []
    try:
        commits = 0
        while commits < commits_before_kill:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"the child ended early:\n{errors.read_text()}")
            reports.append(json.loads(line))
            commits += "committed" in reports[-1]
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        # a last line without its newline was cut by the kill and reports nothing
        reports += [json.loads(line) for line in proc.stdout.read().split("\n")[:-1]]
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, errors.read_text()
    return reports


def check_reports(reports: list[dict[str, Any]], floor: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """The last reported commit and the furthest read of every partition; checks that reported
    commits never go back and never pass what was read (``floor``: the offsets at the start)."""
    last_commit = dict(floor)
    read_end = dict(floor)
    for report in reports:
        for p, first, end in report.get("read", []):
            assert first < end <= PER_PARTITION
            read_end[p] = max(read_end.get(p, 0), end)
        for key, offset in report.get("committed", {}).items():
            p = int(key)
            assert offset >= last_commit.get(p, 0), f"partition {p}: commit {offset} after {last_commit[p]}"
            assert offset <= read_end.get(p, 0)
            last_commit[p] = offset
    return last_commit, read_end


@pytest.mark.parametrize("flush", ["never", "interval", "always"])
def test_committed_offsets_survive_kill_9(tmp_path: Path, flush: str) -> None:
    data_dir = tmp_path / "data"
    store = logstore.open(data_dir, cleaner=False)
    store.create_topic("t", partitions=PARTITIONS)
    producer = store.producer()
    for i in range(PER_PARTITION * PARTITIONS):
        producer.send("t", b"v%d" % i, key=b"k%d" % i, partition=i % PARTITIONS)
    producer.close()
    store.close()
    tps = [TopicPartition("t", p) for p in range(PARTITIONS)]
    rng = random.Random(f"{flush}-groups")
    floor: dict[int, int] = {}
    for run in range(2):
        reports = run_and_kill(data_dir, rng.randrange(1 << 30), flush, rng.randint(5, 60), rng.random() * 0.02)
        last_commit, read_end = check_reports(reports, floor)
        store = logstore.open(data_dir, cleaner=False)
        try:
            found = store._group_coordinator().committed("G", tps)
            for tp in tps:
                om = found[tp]
                got = om.offset if om is not None else 0
                # at least the last reported commit; at most what had been read (a commit in
                # flight at the kill may have landed without its report)
                assert last_commit.get(tp.partition, 0) <= got <= read_end.get(tp.partition, 0), (run, tp, got)
                floor[tp.partition] = got
            assert store.describe_group("G").state == "Empty"
        finally:
            store.close()
    # a new member resumes exactly at the committed offsets and reads the rest: no gap, nothing lost
    store = logstore.open(data_dir, cleaner=False)
    try:
        c = store.consumer("t", group_id="G", auto_offset_reset="latest", enable_auto_commit=False,
                           session_timeout_ms=10_000, heartbeat_interval_ms=100)
        read: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 10
        while sum(map(len, read.values())) < sum(PER_PARTITION - floor[p] for p in range(PARTITIONS)):
            for r in c.poll(0.1):
                read[r.partition].append(r.offset)
            assert time.monotonic() < deadline, "the new member did not read the rest in time"
        assert c.poll(0.05) == []
        for p in range(PARTITIONS):
            assert read[p] == list(range(floor[p], PER_PARTITION))
        c.commit()
        assert {tp.partition: c.committed(tp).offset for tp in tps} == {p: PER_PARTITION for p in range(PARTITIONS)}
    finally:
        store.close()
