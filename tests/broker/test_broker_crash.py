"""kill -9 of a process that creates topics and produces, then reopen: every record it reported
durable is there at its offset with its key and value, the partitions are dense and hold nothing
but what was sent, topic metadata (ids, partition counts, config) is intact, and the store works.

The child (``broker_crash_child.py``) reports records of its ``flush="always"`` topic as soon as
``send`` returns, and those of its other topics after ``store.flush()``; it also adds partitions
and alters config while producing, so the kill can land in any of those.
"""

from __future__ import annotations

import importlib.util
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

CHILD = Path(__file__).with_name("broker_crash_child.py")
_spec = importlib.util.spec_from_file_location("logstore_tests_broker_crash_child", CHILD)
assert _spec is not None and _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def run_and_kill(data_dir: Path, seed: int, reports_before_kill: int, delay: float,
                 *options: str) -> list[dict[str, Any]]:
    """Run the child until it has made ``reports_before_kill`` record reports, wait ``delay``
    seconds, SIGKILL it; returns every report it wrote (those after the last read too)."""
    errors = data_dir.with_name(data_dir.name + ".stderr")
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(seed), *options],
                                stdout=subprocess.PIPE, stderr=stderr, env=CHILD_ENV, text=True)
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a hung child ends the test instead of hanging it
    watchdog.start()
    reports: list[dict[str, Any]] = []
    try:
        sent_reports = 0
        while sent_reports < reports_before_kill:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"the child ended early:\n{errors.read_text()}")
            reports.append(json.loads(line))
            sent_reports += "sent" in reports[-1]
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        # lines written before the kill were written after their records were durable: they count;
        # a last line without its newline was cut by the kill and reports nothing
        complete_lines = proc.stdout.read().split("\n")[:-1]
        reports += [json.loads(line) for line in complete_lines]
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return reports


def read_partition(store: logstore.Store, tp: TopicPartition) -> list[Any]:
    plog = store.partition_log(tp)
    out: list[Any] = []
    offset = plog.log_start_offset
    while offset < plog.high_watermark:
        view = plog.read(offset, 1 << 20, plog.high_watermark)
        out.extend(view)
        offset = view.next_offset
    return out


def record_index(topic: str, value: bytes) -> int:
    """The child's record number encoded in ``value`` (b"<topic>-<i>:...")."""
    prefix, _, _ = value.partition(b":")
    name, _, i = prefix.rpartition(b"-")
    assert name == topic.encode(), f"a record of {name!r} in topic {topic!r}"
    return int(i)


def check_recovered(data_dir: Path, reports: list[dict[str, Any]]) -> None:
    topics = {r["topic"]: r for r in reports if "topic" in r}  # the last report of each topic
    sent = [tuple(s) for r in reports if "sent" in r for s in r["sent"]]
    assert set(topics) == {child.ALWAYS, child.BUFFERED, child.GROWS}
    with logstore.open(data_dir, cleaner=False) as store:
        assert store.list_topics() == sorted(topics)
        for name, reported in topics.items():
            desc = store.describe_topic(name)
            assert desc.topic_id == reported["topic_id"], name
            # a change made after the last report may have reached the catalogue before the kill
            assert desc.partition_count in (reported["partitions"], reported["partitions"] + 1), name
            if name == child.BUFFERED:
                assert set(desc.overrides) == set(reported["overrides"])
                assert desc.overrides["segment_bytes"] in (2048, 4096, 8192)
            else:
                assert desc.overrides == reported["overrides"], name
        assert store.topic_config(child.ALWAYS).flush == "always"

        # every partition: dense offsets, nothing but the child's records, each record at most once
        present: dict[tuple[str, int, int], Any] = {}
        for name in topics:
            seen: set[int] = set()
            for tp in store.topic_partitions([name]):
                records = read_partition(store, tp)
                assert [r.offset for r in records] == list(range(len(records))), f"{tp}: offsets not dense"
                for r in records:
                    i = record_index(name, r.value)
                    key, value = child.record_for(name, i)
                    assert (r.key, r.value) == (key if i % 4 else None, value), f"{tp}@{r.offset}: damaged"
                    assert i not in seen, f"{name}: record {i} is there twice"
                    seen.add(i)
                    present[(name, tp.partition, r.offset)] = i
        missing = [s for s in sent if present.get(s[:3]) != s[3]]
        assert not missing, f"{len(missing)} of {len(sent)} records reported durable are lost, e.g. {missing[:3]}"


def check_writable(data_dir: Path) -> None:
    """The recovered store carries on: new records go after the recovered ones, and a consumer
    reads everything."""
    with logstore.open(data_dir, cleaner=False) as store:
        topics = store.list_topics()
        ends = {tp: store.end_offset(tp) for tp in store.topic_partitions(topics)}
        producer = store.producer()
        for name in topics:
            for p in range(store.partitions_for(name)):
                meta = producer.send(name, b"after", partition=p)
                assert meta.offset == ends[TopicPartition(name, p)]
        consumer = store.consumer(*topics, auto_offset_reset="earliest")
        total = 0
        while batch := consumer.poll(0.05):
            total += len(batch)
        assert total == sum(ends.values()) + len(ends)


@pytest.mark.parametrize("seed, reports_before_kill", [(1, 3), (2, 40), (3, 120)])
def test_kill_during_produce_loses_nothing_reported(tmp_path: Path, seed: int, reports_before_kill: int) -> None:
    data_dir = tmp_path / "data"
    delay = random.Random(seed).uniform(0.0, 0.05)
    reports = run_and_kill(data_dir, seed, reports_before_kill, delay)
    assert sum(len(r["sent"]) for r in reports if "sent" in r) > 0
    check_recovered(data_dir, reports)
    check_recovered(data_dir, reports)  # a second open after the recovery finds the same
    check_writable(data_dir)


@pytest.mark.parametrize("reports_before_kill", [1, 2], ids=["native-send", "lingering-send"])
def test_kill_right_after_sends_to_a_flush_always_topic(tmp_path: Path, reports_before_kill: int) -> None:
    """Records of a flush="always" topic are durable when send returns: killed right after, with
    nothing else running that could write them out later, they are all there."""
    data_dir = tmp_path / "data"
    reports = run_and_kill(data_dir, 0, reports_before_kill, 0.0, "pause")
    assert sum(len(r["sent"]) for r in reports if "sent" in r) == 50 * reports_before_kill
    check_recovered(data_dir, reports)
