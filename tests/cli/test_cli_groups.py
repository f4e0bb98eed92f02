"""``logstore groups list/describe/reset-offsets/delete``: tables and JSON, dry runs and --execute,
and errors as one line with exit status 1 (logstore) or 2 (usage), never a traceback.

Groups are made with the Python API in a store that is then closed (the CLI opens the data
directory itself); what the CLI changed is read back through the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import logstore
from logstore import TopicPartition
from logstore.cli import cli

TOPIC = "orders"
GROUP = "billing"
RECORDS_PER_PARTITION = 10
BASE_TIMESTAMP_MS = 1_700_000_000_000  # record i of a partition has BASE + 1000 * i
LOGSTORE_ROOT = str(Path(logstore.__file__).resolve().parent.parent)


def make_runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click 8.1: keep stderr apart
    except TypeError:
        return CliRunner()  # click >= 8.2 always does


def run(data: Path, *args: str, input: str | None = None) -> Result:
    return make_runner().invoke(cli, ["--dir", str(data), *args], input=input, catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def make_store(path: Path, committed: dict[int, int] | None = None, **consumer_config: object) -> None:
    """``orders`` (3 partitions of 10 records, timestamps BASE + 1 s apart) and group ``billing``
    with ``committed`` offsets (default: partition 0 at 10, partition 1 at 5, none for 2)."""
    committed = {0: 10, 1: 5} if committed is None else committed
    with logstore.open(path) as store:
        store.create_topic(TOPIC, 3)
        with store.producer() as producer:
            for p in range(3):
                for i in range(RECORDS_PER_PARTITION):
                    producer.send(TOPIC, b"v%d" % i, partition=p, timestamp_ms=BASE_TIMESTAMP_MS + 1000 * i)
        consumer = store.consumer(TOPIC, group_id=GROUP, client_id="billing-app", auto_offset_reset="earliest",
                                  enable_auto_commit=False, **consumer_config)
        consumer.poll(0.5, 1)  # joins: the only member owns every partition
        assert len(consumer.assignment()) == 3
        consumer.commit({TopicPartition(TOPIC, p): o for p, o in committed.items()})
        consumer.close()


def committed_offsets(path: Path, group: str = GROUP) -> dict[int, int | None]:
    with logstore.open(path) as store:
        d = store.describe_group(group)
    return {p.partition: p.committed for p in d.partitions if p.topic == TOPIC}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    make_store(path)
    return path


# -- list and describe -----------------------------------------------------------------------------


def test_list_names_json_and_table(data: Path) -> None:
    with logstore.open(data) as store:  # a second group, with offsets only
        store.reset_offsets("audit", "earliest", topics=[TOPIC])
    result = run(data, "groups", "list")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["audit", GROUP]
    listed = json.loads(run(data, "groups", "list", "--json").stdout)
    assert listed == [{"group_id": "audit", "state": "Empty", "members": 0},
                      {"group_id": GROUP, "state": "Empty", "members": 0}]
    table = run(data, "groups", "list", "-l").stdout
    assert "GROUP" in table and "STATE" in table and "MEMBERS" in table
    row = next(line for line in table.splitlines() if GROUP in line)
    assert "Empty" in row and "0" in row


def test_list_in_a_store_without_groups_is_empty_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with logstore.open(path) as store:
        store.create_topic(TOPIC, 1)
    result = run(path, "groups", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert run(path, "groups", "list").stdout == ""
    with logstore.open(path, cleaner=False) as store:  # a read-only command created no internal topic
        assert store.list_topics(internal=True) == [TOPIC]


def test_describe_table_shows_offsets_lag_and_log_end(data: Path) -> None:
    result = run(data, "groups", "describe", GROUP)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Group {GROUP}: Empty, generation ") and "total lag 5" in lines[0]
    header = next(line for line in lines if "TOPIC" in line)
    for column in ("PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "CLIENT-ID"):
        assert column in header
    rows = [line.replace("│", " ").split() for line in lines if line.startswith("│")]
    # TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID CLIENT-ID
    assert rows == [[TOPIC, "0", "10", "10", "0", "-", "-"], [TOPIC, "1", "5", "10", "5", "-", "-"]]
    assert "Members:" not in result.stdout


def test_describe_json(data: Path) -> None:
    described = json.loads(run(data, "groups", "describe", GROUP, "--json").stdout)
    assert described["group_id"] == GROUP and described["state"] == "Empty"
    assert described["protocol"] == "cooperative-sticky" and described["generation"] >= 1
    assert described["members"] == [] and described["total_lag"] == 5
    assert described["partitions"] == [
        {"topic": TOPIC, "partition": 0, "committed": 10, "log_end_offset": 10, "lag": 0, "member_id": None,
         "metadata": ""},
        {"topic": TOPIC, "partition": 1, "committed": 5, "log_end_offset": 10, "lag": 5, "member_id": None,
         "metadata": ""},
    ]


def test_describe_static_member_restored_from_the_offsets_topic(tmp_path: Path) -> None:
    """A static member's session outlives its process (as in Kafka): within session_timeout_ms
    the group still has it, with its partitions, and offsets cannot be reset or the group deleted."""
    path = tmp_path / "data"
    make_store(path, group_instance_id="billing-0", session_timeout_ms=60_000)
    described = json.loads(run(path, "groups", "describe", GROUP, "--json").stdout)
    assert described["state"] == "Stable"
    (member,) = described["members"]
    assert member["group_instance_id"] == "billing-0" and member["client_id"] == "billing-app"
    assert sorted(a["partition"] for a in member["assignment"]) == [0, 1, 2]
    assert {p["partition"]: p["member_id"] for p in described["partitions"]} == dict.fromkeys(
        [0, 1, 2], member["member_id"])
    table = run(path, "groups", "describe", GROUP).stdout
    assert "Members:" in table and "billing-0" in table and member["member_id"] in table
    rows = [line.replace("│", " ").split() for line in table.splitlines() if line.startswith("│")]
    offsets_rows = [row for row in rows if row[0] == TOPIC]
    assert [row[-2:] for row in offsets_rows] == [[member["member_id"], "billing-app"]] * 3
    (member_row,) = [row for row in rows if row[0] == member["member_id"]]
    assert member_row[1:4] == ["billing-0", "billing-app", "3"]
    assert_one_line_error(run(path, "groups", "reset-offsets", GROUP, "--to-earliest", "--execute"), 1,
                          "active member")
    assert_one_line_error(run(path, "groups", "delete", GROUP, "--yes"), 1, "active member")
    assert committed_offsets(path) == {0: 10, 1: 5, 2: None}


def test_static_member_whose_session_expired_while_closed_does_not_block_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "data"
    make_store(path, group_instance_id="billing-0", session_timeout_ms=300, heartbeat_interval_ms=100)
    time.sleep(0.5)  # longer than the session timeout, with the store closed
    result = run(path, "groups", "reset-offsets", GROUP, "--to-earliest", "--execute")
    assert result.exit_code == 0, result.stderr
    assert committed_offsets(path) == {0: 0, 1: 0}


# -- reset-offsets ---------------------------------------------------------------------------------


def test_reset_is_a_dry_run_unless_executed(data: Path) -> None:
    result = run(data, "groups", "reset-offsets", GROUP, "--to-earliest")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Dry run: would reset the offsets of group {GROUP} (2 partitions)")
    assert "--execute" in result.stderr
    rows = [line.replace("│", " ").split() for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows == [[TOPIC, "0", "10", "0"], [TOPIC, "1", "5", "0"]]  # TOPIC PARTITION PREVIOUS NEW
    assert committed_offsets(data) == {0: 10, 1: 5}
    result = run(data, "groups", "reset-offsets", GROUP, "--to-earliest", "--execute")
    assert result.exit_code == 0 and result.stdout.startswith(f"Reset the offsets of group {GROUP}")
    assert result.stderr == ""
    assert committed_offsets(data) == {0: 0, 1: 0}


def test_reset_to_latest_json(data: Path) -> None:
    result = run(data, "groups", "reset-offsets", GROUP, "--to-latest", "--execute", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"group_id": GROUP, "executed": True, "offsets": [
        {"topic": TOPIC, "partition": 0, "previous": 10, "offset": 10},
        {"topic": TOPIC, "partition": 1, "previous": 5, "offset": 10},
    ]}
    assert committed_offsets(data) == {0: 10, 1: 10}
    dry = json.loads(run(data, "groups", "reset-offsets", GROUP, "--to-earliest", "--json").stdout)
    assert dry["executed"] is False and [o["offset"] for o in dry["offsets"]] == [0, 0]
    assert committed_offsets(data) == {0: 10, 1: 10}


def test_reset_to_offset_is_clamped_and_topic_partitions_select(data: Path) -> None:
    result = run(data, "groups", "reset-offsets", GROUP, "--to-offset", "7", "--topic", f"{TOPIC}:1,2", "--execute")
    assert result.exit_code == 0, result.stderr
    assert committed_offsets(data) == {0: 10, 1: 7, 2: 7}  # partition 2 gets its first offset
    run(data, "groups", "reset-offsets", GROUP, "--to-offset", "99", "--topic", TOPIC, "--execute")
    assert committed_offsets(data) == {0: 10, 1: 10, 2: 10}  # clamped to the log end


def test_reset_to_datetime(data: Path) -> None:
    # the first record at or after BASE + 3.5 s is offset 4 in every partition
    moment = BASE_TIMESTAMP_MS + 3_500
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment // 1000)) + f".{moment % 1000:03d}Z"
    result = run(data, "groups", "reset-offsets", GROUP, "--to-datetime", iso, "--execute")
    assert result.exit_code == 0, result.stderr
    assert committed_offsets(data) == {0: 4, 1: 4}
    run(data, "groups", "reset-offsets", GROUP, "--to-datetime", str(BASE_TIMESTAMP_MS + 60_000), "-t", TOPIC,
        "--execute")
    assert committed_offsets(data) == {0: 10, 1: 10, 2: 10}  # after the last record: the log end


def test_reset_offsets_of_a_new_group_with_named_topics(data: Path) -> None:
    result = run(data, "groups", "reset-offsets", "fresh", "--to-offset", "3", "-t", TOPIC, "--execute")
    assert result.exit_code == 0, result.stderr
    assert committed_offsets(data, "fresh") == {0: 3, 1: 3, 2: 3}


@pytest.mark.parametrize(("args", "needle"), [
    ((), "exactly one of"),
    (("--to-earliest", "--to-latest"), "--to-earliest and --to-latest"),
    (("--to-offset", "-1"), "--to-offset"),
    (("--to-datetime", "yesterday"), "ISO 8601"),
    (("--to-earliest", "--topic", f"{TOPIC}:x"), "--topic"),
    (("--to-earliest", "--topic", ":0"), "--topic"),
])
def test_reset_usage_errors(data: Path, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(run(data, "groups", "reset-offsets", GROUP, *args, "--execute"), 2, needle)
    assert committed_offsets(data) == {0: 10, 1: 5}


def test_reset_errors_of_the_store(data: Path) -> None:
    assert_one_line_error(run(data, "groups", "reset-offsets", "nope", "--to-earliest"), 1, "nope", "does not exist")
    assert_one_line_error(run(data, "groups", "reset-offsets", GROUP, "--to-earliest", "-t", "missing",
                              "--execute"), 1, "missing")
    assert_one_line_error(run(data, "groups", "reset-offsets", GROUP, "--to-earliest", "-t", f"{TOPIC}:9",
                              "--execute"), 1)
    assert committed_offsets(data) == {0: 10, 1: 5}


# -- delete and errors -----------------------------------------------------------------------------


def test_delete_asks_then_deletes(data: Path) -> None:
    result = run(data, "groups", "delete", GROUP, input="n\n")
    assert result.exit_code == 1 and "Delete group" in result.stderr
    assert run(data, "groups", "list").stdout.split() == [GROUP]
    result = run(data, "groups", "delete", GROUP, "--yes")
    assert result.exit_code == 0 and result.stdout == f"Deleted group {GROUP}.\n"
    assert run(data, "groups", "list").stdout == ""
    assert_one_line_error(run(data, "groups", "describe", GROUP), 1, GROUP, "does not exist")


@pytest.mark.parametrize("args", [("describe", "nope"), ("describe", "nope", "--json"), ("delete", "nope", "-y")])
def test_unknown_group_is_one_line_exit_1(data: Path, args: tuple[str, ...]) -> None:
    assert_one_line_error(run(data, "groups", *args), 1, "nope")


def test_unknown_group_in_a_store_that_never_had_groups(tmp_path: Path) -> None:
    path = tmp_path / "data"
    logstore.open(path).close()
    assert_one_line_error(run(path, "groups", "describe", "nope"), 1, "does not exist")
    assert_one_line_error(run(path, "groups", "delete", "nope", "-y"), 1, "does not exist")


def test_missing_data_directory(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path / "absent", "groups", "list"), 1, "no data directory")


def test_groups_help_lists_the_commands() -> None:
    result = make_runner().invoke(cli, ["groups", "--help"])
    assert result.exit_code == 0
    for command in ("list", "describe", "reset-offsets", "delete"):
        assert command in result.stdout


def test_end_to_end_describe_in_a_subprocess(data: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = LOGSTORE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("LOGSTORE_DIR", None)
    done = subprocess.run([sys.executable, "-m", "logstore", "--dir", str(data), "groups", "describe", GROUP, "--json"],
                          capture_output=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_lag"] == 5
