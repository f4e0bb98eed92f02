"""``logstore dlq list/replay/discard``: tables and JSON, replay by id or --all (with --to,
--dry-run), discard, and errors as one line with exit status 1 (logstore) or 2 (usage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import logstore
from logstore import TopicPartition
from logstore.cli import cli
from logstore.dlq import RetryingProcessor, RetryPolicy


def run(data: Path, *args: str) -> Result:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click 8.1: keep stderr apart
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, ["--dir", str(data), *args], catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def handle(record: Any) -> None:
    if record.value.startswith(b"bad"):
        raise ValueError(f"cannot parse {record.value!r}")
    if record.value.startswith(b"slow"):
        raise TimeoutError("too slow")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """orders with three dead letters 0:0 (ValueError), 0:1 (TimeoutError), 0:2 (ValueError)."""
    path = tmp_path / "data"
    with logstore.open(path, cleaner=False) as store:
        store.create_topic("orders", 1)
        store.create_topic("audit", 1)
        with store.producer() as producer:
            for key, value in ((b"a", b"bad-1"), (b"b", b"fine"), (b"c", b"slow-1"), (b"a", b"bad-\xff")):
                producer.send("orders", value=value, key=key)
        consumer = store.consumer(auto_offset_reset="earliest")
        consumer.assign([TopicPartition("orders", 0)])
        with RetryingProcessor(store, consumer, handle, policy=RetryPolicy(max_attempts=1)) as proc:
            proc.run_once(0)
    return path


def end_offsets(path: Path) -> dict[str, int]:
    with logstore.open(path, cleaner=False) as store:
        return {t: sum(store.end_offset(tp) for tp in store.topic_partitions([t])) for t in store.list_topics()}


def test_list_table(data: Path) -> None:
    result = run(data, "dlq", "list", "orders")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "orders.dlq: 3 entries" in out
    for needle in ("0:0", "0:1", "0:2", "pending", "orders-0@0", "orders-0@2", "ValueError", "TimeoutError",
                   "too slow"):
        assert needle in out, needle


def test_list_json_with_filters(data: Path) -> None:
    result = run(data, "dlq", "list", "orders", "--json", "--exception", "ValueError")
    assert result.exit_code == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["id"] for e in entries] == ["0:0", "0:2"]
    assert entries[0]["value"] == "bad-1"
    assert entries[1]["value"] == {"base64": "YmFkLf8="}  # not UTF-8: base64, as `consume --format json`
    assert entries[0]["original"] == {"topic": "orders", "partition": 0, "offset": 0,
                                      "timestamp": entries[0]["original"]["timestamp"]}
    assert entries[0]["attempts"] == 1 and entries[0]["reason"] == "exhausted"
    assert "ValueError: cannot parse" in entries[0]["exception"]["stacktrace"]
    limited = run(data, "dlq", "list", "orders", "--json", "--limit", "1", "--key", "c")
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == ["0:1"]


def test_replay_by_id_then_all(data: Path) -> None:
    result = run(data, "dlq", "replay", "orders", "0:1")
    assert result.exit_code == 0, result.stderr
    assert "Replayed 0:1 to orders-0 at offset 4." in result.stdout
    assert "Replayed 1 entry of orders.dlq." in result.stdout
    dry = run(data, "dlq", "replay", "orders", "--all", "--dry-run")
    assert dry.stdout.splitlines() == ["Would replay 0:0 to orders-0.", "Would replay 0:2 to orders-0.",
                                       "Would replay 2 entries of orders.dlq."]
    assert end_offsets(data)["orders"] == 5
    moved = run(data, "dlq", "replay", "orders", "--all", "--exception", "ValueError", "--to", "audit",
                "--rate", "1000")
    assert moved.exit_code == 0, moved.stderr
    assert end_offsets(data)["audit"] == 2
    listed = run(data, "dlq", "list", "orders", "--json")
    assert {json.loads(line)["status"] for line in listed.stdout.splitlines()} == {"replayed"}


def test_discard(data: Path) -> None:
    result = run(data, "dlq", "discard", "orders", "0:0", "0:2")
    assert result.exit_code == 0, result.stderr
    assert "Discarded 2 entries of orders.dlq." in result.stdout
    listed = run(data, "dlq", "list", "orders", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["0:1"]
    shown = run(data, "dlq", "list", "orders", "--json", "--status", "discarded")
    assert [json.loads(line)["id"] for line in shown.stdout.splitlines()] == ["0:0", "0:2"]
    assert_one_line_error(run(data, "dlq", "replay", "orders", "0:0"), 1, "0:0", "discarded")


@pytest.mark.parametrize("args, code, needles", [
    (("list", "nope"), 1, ("nope.dlq",)),
    (("list", "audit"), 1, ("audit.dlq does not exist",)),
    (("replay", "orders", "0:0", "x:1"), 1, ("partition:offset",)),
    (("replay", "orders", "0:0", "0:42"), 1, ("no entry 0:42",)),
    (("replay", "orders", "0:0", "--to", "nowhere"), 1, ("nowhere",)),
    (("discard", "orders", "0:0", "3:0"), 1, ("no entry 3:0",)),
    (("replay", "orders"), 2, ("--all",)),
    (("replay", "orders", "0:0", "--all"), 2, ("not both",)),
    (("replay", "orders", "0:0", "--exception", "X"), 2, ("--exception",)),
    (("replay", "orders", "--all", "--rate", "0"), 2, ("--rate",)),
    (("discard", "orders"), 2, ("IDS",)),
    (("list", "orders", "--status", "gone"), 2, ("--status",)),
])
def test_errors_are_one_line_and_write_nothing(data: Path, args: tuple[str, ...], code: int,
                                               needles: tuple[str, ...]) -> None:
    before = end_offsets(data)
    assert_one_line_error(run(data, "dlq", *args), code, *needles)
    assert end_offsets(data) == before
