"""The ``logstore`` command line: click's CliRunner for most cases, a few real subprocess runs.

Every error path is checked for what the CLI promises: one line on stderr, exit status 1 for a
logstore error and 2 for a usage error, never a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import logstore
from logstore import PartitionLog, RecordBatchView
from logstore.cli import cli
from logstore.cli.output import bytes_of_json, json_of_bytes, parse_timestamp

# the sys.path entry that holds the logstore under test (src/ or site-packages): subprocesses get it too
LOGSTORE_ROOT = str(Path(logstore.__file__).resolve().parent.parent)


def make_runner(env: dict[str, str] | None = None) -> CliRunner:
    try:
        return CliRunner(env=env, mix_stderr=False)  # type: ignore[call-arg]  # click 8.1: keep stderr apart
    except TypeError:
        return CliRunner(env=env)  # click >= 8.2 always does


def run(*args: str, input: str | bytes | None = None) -> Result:
    return make_runner().invoke(cli, list(args), input=input, catch_exceptions=False)


def run_process(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = LOGSTORE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("LOGSTORE_DIR", None)
    return subprocess.run([sys.executable, "-m", "logstore", *args], input=input, capture_output=True,
                          env=env, timeout=timeout, check=False)


def assert_one_line_error(result: Result | subprocess.CompletedProcess[bytes], code: int, *needles: str) -> str:
    if isinstance(result, Result):
        status, stderr = result.exit_code, result.stderr
    else:
        status, stderr = result.returncode, result.stderr.decode()
    assert status == code, (status, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- fixtures: real partition logs -------------------------------------------------------------


def make_log(path: Path, batches: int = 12, records_per_batch: int = 4, **config: object) -> list[tuple[int, int]]:
    """A closed partition log of ``batches`` batches (one append_many each); returns (base, last) offsets."""
    config.setdefault("flush", "never")
    config.setdefault("index_interval_bytes", 0)  # an index entry for every batch but the first
    spans = []
    with PartitionLog.open(path, **config) as log:
        for b in range(batches):
            values = [b"value-%d-%d" % (b, i) for i in range(records_per_batch)]
            keys = [b"key-%d" % i for i in range(records_per_batch)]
            first = log.append_many(values, keys, timestamps=[1_000 + 10 * b + i for i in range(records_per_batch)])
            spans.append((first, first + records_per_batch - 1))
    return spans


def segment(path: Path, base: int = 0, suffix: str = ".log") -> Path:
    return path / ("%020d%s" % (base, suffix))


def batch_positions(log_file: Path) -> list[dict[str, int]]:
    return RecordBatchView(log_file.read_bytes()).batches()


def flip(file: Path, position: int, mask: int = 0x01) -> None:
    data = bytearray(file.read_bytes())
    data[position] ^= mask
    file.write_bytes(bytes(data))


# -- pure helpers ------------------------------------------------------------------------------


def test_bytes_json_round_trip_marks_non_utf8_as_base64() -> None:
    assert json_of_bytes(b"plain") == "plain"
    assert json_of_bytes(None) is None
    binary = b"\xff\x00\xfe"
    marked = json_of_bytes(binary)
    assert marked == {"base64": base64.b64encode(binary).decode()}
    assert bytes_of_json(marked, "value") == binary
    assert bytes_of_json("plain", "value") == b"plain"
    assert bytes_of_json({"a": [1, 2]}, "value") == b'{"a":[1,2]}'  # other JSON is stored as JSON text
    assert bytes_of_json(None, "value") is None


def test_parse_timestamp_takes_ms_and_iso8601() -> None:
    assert parse_timestamp("1700000000000") == 1_700_000_000_000
    assert parse_timestamp("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_timestamp("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_timestamp("2023-11-14T22:13:20") == 1_700_000_000_000  # naive: UTC


# -- usage errors ------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("topics", "produce", "consume", "dump", "demo"):
        assert command in result.stdout


def test_unknown_option_is_a_one_line_usage_error() -> None:
    assert_one_line_error(run("dump", "--no-such-option", "x"), 2, "--no-such-option", "logstore dump --help")


def test_unknown_command_is_a_one_line_usage_error() -> None:
    assert_one_line_error(run("frobnicate"), 2, "frobnicate")


def test_bad_timestamp_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(run("--dir", str(tmp_path), "consume", "t", "--timestamp", "yesterday"), 2, "yesterday")


# -- dump ----------------------------------------------------------------------------------------


def test_dump_log_lists_every_batch_and_record(tmp_path: Path) -> None:
    spans = make_log(tmp_path / "p", batches=5, records_per_batch=3)
    result = run("dump", "--print-records", str(segment(tmp_path / "p")))
    assert result.exit_code == 0, result.output
    batch_lines = [line for line in result.stdout.splitlines() if line.startswith("baseOffset:")]
    assert [(int(line.split()[1]), int(line.split()[3])) for line in batch_lines] == spans
    assert all("isValid: true" in line and "count: 3" in line for line in batch_lines)
    record_lines = [line for line in result.stdout.splitlines() if line.startswith("| offset:")]
    assert len(record_lines) == 15
    assert "key: 'key-1'" in record_lines[4] and "value: 'value-1-1'" in record_lines[4]
    assert "CreateTime: 1011" in record_lines[4]


def test_dump_offsets_only_prints_one_line_per_record(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=4, records_per_batch=5)
    result = run("dump", "--offsets-only", str(segment(tmp_path / "p")))
    assert result.exit_code == 0
    offsets = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("offset:")]
    assert offsets == list(range(20))


def test_dump_partition_directory_covers_every_segment_in_order(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=40, records_per_batch=4, segment_bytes=1024)
    bases = sorted(int(f.stem) for f in (tmp_path / "p").glob("*.log"))
    assert len(bases) > 2
    result = run("dump", "--verify", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    dumped = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("Dumping ")]
    expected = [str(segment(tmp_path / "p", b, s)) for b in bases for s in (".log", ".index", ".timeindex")]
    assert dumped == expected
    assert "high watermark" in result.stdout  # the checkpoint is summarised first
    assert result.stdout.count(": OK") == 3 * len(bases)


def test_dump_verify_accepts_the_files_of_an_open_log(tmp_path: Path) -> None:
    # the active segment's indexes are preallocated (zero tail) while the log is open
    with PartitionLog.open(tmp_path / "p", flush="never", index_interval_bytes=64, segment_bytes=2048) as log:
        for i in range(300):
            log.append(b"x" * (i % 50), key=b"k%d" % (i % 3), timestamp=5_000 - (i % 7) * 100)
        log.flush()
        result = run("dump", "--verify", "--quiet", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    assert "PROBLEM" not in result.output


def test_dump_verify_names_the_batch_with_a_flipped_byte(tmp_path: Path) -> None:
    spans = make_log(tmp_path / "p", batches=6)
    log_file = segment(tmp_path / "p")
    batches = batch_positions(log_file)
    damaged = batches[3]
    flip(log_file, damaged["position"] + damaged["size"] - 3)  # inside the last record's value
    plain = run("dump", str(log_file))
    assert plain.exit_code == 0  # without --verify damage is shown, not an error
    assert [("isValid: false" in line) for line in plain.stdout.splitlines() if line.startswith("baseOffset:")] \
        == [i == 3 for i in range(6)]
    result = run("dump", "--verify", str(log_file))
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1
    assert f"batch at position {damaged['position']} (offsets {spans[3][0]}..{spans[3][1]})" in problems[0]
    assert "CRC32C mismatch" in problems[0]
    assert result.stderr.strip().splitlines()[-1].startswith("Error: verification failed: 1 problem")


def test_dump_verify_reports_a_torn_tail(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=3)
    log_file = segment(tmp_path / "p")
    last = batch_positions(log_file)[-1]
    with open(log_file, "r+b") as f:
        f.truncate(last["position"] + 30)  # half a header
    result = run("dump", "--verify", str(log_file))
    assert result.exit_code == 1
    assert f"position {last['position']}: 30 trailing bytes" in result.stderr


def test_dump_verify_stops_at_a_broken_length_and_says_so(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=4)
    log_file = segment(tmp_path / "p")
    second = batch_positions(log_file)[1]
    data = bytearray(log_file.read_bytes())
    struct.pack_into(">i", data, second["position"] + 8, 7)  # batchLength below the header size
    log_file.write_bytes(bytes(data))
    result = run("dump", "--verify", str(log_file))
    assert result.exit_code == 1
    assert f"batch at position {second['position']}" in result.stderr and "batch length 7 out of range" in result.stderr
    assert result.stdout.count("baseOffset:") == 1


def test_dump_verify_detects_malformed_records_under_a_valid_crc(tmp_path: Path) -> None:
    from logstore._native.codec import crc32c

    make_log(tmp_path / "p", batches=2, records_per_batch=2)
    log_file = segment(tmp_path / "p")
    first = batch_positions(log_file)[0]
    data = bytearray(log_file.read_bytes())
    data[first["position"] + 61] = 0x7E  # the first record's length varint: 63, past the batch end
    struct.pack_into(">I", data, first["position"] + 17, crc32c(bytes(data[21:first["size"]])))  # re-seal the CRC
    log_file.write_bytes(bytes(data))
    result = run("dump", "--verify", str(log_file))
    assert result.exit_code == 1
    assert "batch at position 0 (offsets 0..1): malformed records" in result.stderr


def test_dump_verify_detects_a_damaged_offset_index_entry(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=6)
    index_file = segment(tmp_path / "p", suffix=".index")
    positions = [b["position"] for b in batch_positions(segment(tmp_path / "p"))]
    entries = index_file.read_bytes()
    assert len(entries) == 8 * 5  # every batch but the first is indexed
    assert run("dump", "--verify", str(index_file)).exit_code == 0
    data = bytearray(entries)
    struct.pack_into(">I", data, 8 * 2 + 4, positions[3] + 5)  # entry 2 now points into a batch
    index_file.write_bytes(bytes(data))
    result = run("dump", "--verify", str(index_file))
    assert result.exit_code == 1
    assert f"entry 2 (offset 12, position {positions[3] + 5}): position is not the start of a batch" in result.stderr
    struct.pack_into(">II", data, 8 * 2, 13, positions[3])  # right position, wrong offset
    index_file.write_bytes(bytes(data))
    result = run("dump", "--verify", str(index_file))
    assert result.exit_code == 1
    assert f"entry 2 (offset 13, position {positions[3]}): the batch at that position has base offset 12" \
        in result.stderr


def test_dump_verify_detects_a_time_index_entry_naming_a_wrong_offset(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=6)
    timeindex_file = segment(tmp_path / "p", suffix=".timeindex")
    entries = timeindex_file.read_bytes()
    count = len(entries) // 12
    assert count >= 2 and run("dump", "--verify", str(timeindex_file)).exit_code == 0
    data = bytearray(entries)
    timestamp, relative = struct.unpack_from(">qI", data, 12 * (count - 1))
    struct.pack_into(">I", data, 12 * (count - 1) + 8, relative + 1000)  # past the end of the log
    timeindex_file.write_bytes(bytes(data))
    result = run("dump", "--verify", str(timeindex_file))
    assert result.exit_code == 1
    assert f"entry {count - 1} (timestamp {timestamp}, offset {relative + 1000}): no batch" in result.stderr


def test_dump_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(run("dump", str(tmp_path / "nope.log")), 2, "no such file")
    (tmp_path / "notes.txt").write_text("x")
    assert_one_line_error(run("dump", str(tmp_path / "notes.txt")), 2, "not a .log")


def test_dump_verify_in_a_subprocess_exits_1_on_damage(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=3)
    ok = run_process("dump", "--verify", "-q", str(tmp_path / "p"))
    assert ok.returncode == 0, ok.stderr
    flip(segment(tmp_path / "p"), batch_positions(segment(tmp_path / "p"))[1]["position"] + 40)
    bad = run_process("dump", "--verify", "-q", str(tmp_path / "p"))
    assert bad.returncode == 1
    stderr = bad.stderr.decode()
    assert "PROBLEM" in stderr and "CRC32C mismatch" in stderr and "Traceback" not in stderr


# -- the broker commands -------------------------------------------------------------------------


def test_topics_lifecycle(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    result = run("--dir", d, "topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000")
    assert result.exit_code == 0, result.output
    assert "orders" in result.stdout and "3 partition" in result.stdout
    assert run("--dir", d, "topics", "create", "audit").exit_code == 0
    assert run("--dir", d, "topics", "list").stdout.split() == ["audit", "orders"]
    assert run("--dir", d, "topics", "create", "orders", "--if-not-exists").exit_code == 0
    assert_one_line_error(run("--dir", d, "topics", "create", "orders"), 1, "orders")

    described = json.loads(run("--dir", d, "topics", "describe", "orders", "--json").stdout)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert described["config"]["retention_ms"] == 60000

    altered = run("--dir", d, "topics", "alter", "orders", "--config", "segment_bytes=4096", "--reset", "retention_ms")
    assert altered.exit_code == 0, altered.output
    config = json.loads(run("--dir", d, "topics", "describe", "orders", "--json").stdout)["config"]
    assert config["segment_bytes"] == 4096 and config["retention_ms"] != 60000

    grown = run("--dir", d, "topics", "add-partitions", "orders", "--total", "5")
    assert grown.exit_code == 0 and "5 partitions" in grown.stdout
    assert_one_line_error(run("--dir", d, "topics", "add-partitions", "orders", "--total", "2"), 1)

    assert run("--dir", d, "topics", "delete", "audit", input="n\n").exit_code == 1  # declined
    assert "audit" in run("--dir", d, "topics", "list").stdout
    assert run("--dir", d, "topics", "delete", "audit", input="y\n").exit_code == 0
    assert run("--dir", d, "topics", "delete", "orders", "--yes").exit_code == 0
    assert run("--dir", d, "topics", "list").stdout.split() == []


def test_describe_table_shows_offsets_and_config(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    assert run("--dir", d, "topics", "create", "t", "-p", "2", "-c", "cleanup_policy=compact").exit_code == 0
    produced = run("--dir", d, "produce", "t", "--partition", "1", "-K", ":", input="a:1\nb:2\nc:3\n")
    assert produced.exit_code == 0, produced.output
    table = run("--dir", d, "topics", "describe", "t")
    assert table.exit_code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in table.stdout.splitlines() if line.count("│") >= 8 and line.split("│")[1].strip().isdigit()}
    assert set(rows) == {"0", "1"}
    # log start, log end, high watermark, records
    assert rows["0"][:4] == ["0", "0", "0", "0"]
    assert rows["1"][:4] == ["0", "3", "3", "3"]
    assert "cleanup_policy" in table.stdout and "compact" in table.stdout


def test_produce_consume_round_trip_with_keys(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t", "--partitions", "3")
    lines = [f"user-{i % 4}:event {i}" for i in range(40)]
    # --progress: the bar (on stderr) must not disturb what is read or printed
    produced = run("--dir", d, "--progress", "produce", "t", "--key-separator", ":", input="\n".join(lines) + "\n")
    assert produced.exit_code == 0, produced.output
    assert "Produced 40 record(s)" in produced.stdout
    consumed = run("--dir", d, "consume", "t", "--print-key", "--print-offset", "--separator", "|")
    assert consumed.exit_code == 0, consumed.output
    rows = [line.split("|") for line in consumed.stdout.splitlines()]
    assert sorted(f"{key}:{value}" for _, _, key, value in rows) == sorted(lines)
    partition_of_key: dict[str, str] = {}
    offsets: dict[str, list[int]] = {}
    for partition, offset, key, _ in rows:
        assert partition_of_key.setdefault(key, partition) == partition  # a key stays on one partition
        offsets.setdefault(partition, []).append(int(offset.removeprefix("Offset:")))
    for seen in offsets.values():
        assert seen == list(range(len(seen)))  # in order, from 0, nothing skipped
    assert "Consumed 40 record(s)" in consumed.stderr


def test_produce_json_and_consume_json_keep_bytes_headers_and_timestamps(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t")
    binary = bytes(range(250, 256))
    inputs = [
        {"value": "hello", "key": "k1", "headers": {"trace": "abc"}, "timestamp": 1_700_000_000_000},
        {"value": {"nested": [1, 2]}, "headers": [["h", None], ["h", "2"]]},
        {"value": {"base64": base64.b64encode(binary).decode()}, "key": {"base64": base64.b64encode(b"\xff").decode()}},
        {"value": None, "key": "tombstone", "timestamp": "2023-11-14T22:13:20Z"},
    ]
    stdin = "\n".join(json.dumps(obj) for obj in inputs) + "\n\n"  # a blank line is skipped
    produced = run("--dir", d, "produce", "t", "--json", "--header", "src=cli", input=stdin)
    assert produced.exit_code == 0, produced.output
    out = run("--dir", d, "consume", "t", "--format", "json")
    assert out.exit_code == 0, out.output
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["offset"] for r in records] == [0, 1, 2, 3]
    assert records[0]["value"] == "hello" and records[0]["key"] == "k1"
    assert records[0]["headers"] == [["src", "cli"], ["trace", "abc"]]
    assert records[0]["timestamp"] == 1_700_000_000_000 and records[0]["topic"] == "t"
    assert json.loads(records[1]["value"]) == {"nested": [1, 2]}
    assert records[1]["headers"] == [["src", "cli"], ["h", None], ["h", "2"]]
    assert base64.b64decode(records[2]["value"]["base64"]) == binary
    assert base64.b64decode(records[2]["key"]["base64"]) == b"\xff"
    assert records[3]["value"] is None and records[3]["timestamp"] == 1_700_000_000_000
    # what consume --format json prints, produce --json takes back unchanged
    copy = "\n".join(json.dumps({k: r[k] for k in ("value", "key", "headers", "timestamp")}) for r in records)
    run("--dir", d, "topics", "create", "copy")
    assert run("--dir", d, "produce", "copy", "--json", input=copy).exit_code == 0
    again = [json.loads(line) for line in run("--dir", d, "consume", "copy", "--format", "json").stdout.splitlines()]
    strip = [{k: r[k] for k in ("value", "key", "headers", "timestamp")} for r in records]
    assert [{k: r[k] for k in ("value", "key", "headers", "timestamp")} for r in again] == strip


def test_consume_start_positions_limits_and_raw(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t")
    stdin = "".join(json.dumps({"value": f"v{i}", "timestamp": 1_000 * (i + 1)}) + "\n" for i in range(10))
    assert run("--dir", d, "produce", "t", "--json", input=stdin).exit_code == 0
    assert run("--dir", d, "consume", "t", "--offset", "7").stdout.split() == ["v7", "v8", "v9"]
    assert run("--dir", d, "consume", "t", "--offset", "-2").stdout.split() == ["v8", "v9"]
    assert run("--dir", d, "consume", "t", "--timestamp", "4500").stdout.split() == ["v4", "v5", "v6", "v7", "v8", "v9"]
    assert run("--dir", d, "consume", "t", "--timestamp", "1970-01-01T00:00:09Z").stdout.split() == ["v8", "v9"]
    assert run("--dir", d, "consume", "t", "--max-messages", "3").stdout.split() == ["v0", "v1", "v2"]
    assert run("--dir", d, "consume", "t", "--from-end").stdout == ""
    raw = run("--dir", d, "consume", "t", "--format", "raw", "-n", "2", "--print-timestamp")
    assert raw.stdout_bytes == b"CreateTime:1000\tv0\nCreateTime:2000\tv1\n"
    assert_one_line_error(run("--dir", d, "consume", "t", "--offset", "1", "--from-end"), 2, "exclude")
    followed = run("--dir", d, "consume", "t", "--offset", "9", "--follow", "--timeout", "0.3")
    assert followed.exit_code == 0 and followed.stdout == "v9\n"  # waited 0.3 s for more, then stopped
    assert_one_line_error(run("--dir", d, "consume", "t", "--partition", "4"), 1, "no partition 4")


def test_text_format_replaces_invalid_utf8(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t")
    binary = json.dumps({"value": {"base64": base64.b64encode(b"ok\xffok").decode()}})
    assert run("--dir", d, "produce", "t", "--json", input=binary + "\n").exit_code == 0
    assert run("--dir", d, "consume", "t").stdout == "ok\ufffdok\n"


def test_produce_input_errors_name_the_line(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t")
    assert_one_line_error(run("--dir", d, "produce", "t", "-K", ":", input="a:1\nno separator\n"), 1,
                          "line 2", "1 record(s) before it")
    assert_one_line_error(run("--dir", d, "produce", "t", "--json", input='{"value": "x"}\n{oops\n'), 1,
                          "line 2", "invalid JSON")
    assert_one_line_error(run("--dir", d, "produce", "t", "--json", input='{"valeu": "x"}\n'), 1, "valeu")
    assert_one_line_error(run("--dir", d, "produce", "t", "--json", "-K", ":", input=""), 2, "exclude")
    assert_one_line_error(run("--dir", d, "produce", "t", "--header", "nokey", input=""), 2, "KEY=VALUE")
    run("--dir", d, "topics", "create", "compacted", "-c", "cleanup_policy=compact")
    # a record the store refuses (no key on a compacted topic) also names its line
    assert_one_line_error(run("--dir", d, "produce", "compacted", "-K", ":", "--json", input=""), 2)
    assert_one_line_error(run("--dir", d, "produce", "compacted", "--json",
                              input='{"key": "a", "value": "1"}\n{"value": "2"}\n'), 1, "line 2", "key")


def test_consume_offset_past_the_end_of_one_partition_reads_nothing_there(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    run("--dir", d, "topics", "create", "t", "-p", "2")
    stdin = "".join(json.dumps({"value": f"p{i % 2}-{i // 2}", "partition": i % 2}) + "\n" for i in range(7))
    assert run("--dir", d, "produce", "t", "--json", input=stdin).exit_code == 0  # 4 in partition 0, 3 in 1
    assert sorted(run("--dir", d, "consume", "t", "--offset", "3").stdout.split()) == ["p0-3"]
    assert run("--dir", d, "consume", "t", "--offset", "100").stdout == ""


@pytest.mark.parametrize("args, needle", [
    (("topics", "describe", "missing"), "missing"),
    (("consume", "missing"), "missing"),
    (("produce", "missing"), "missing"),
    (("topics", "delete", "missing", "--yes"), "missing"),
    (("topics", "create", "bad/name"), "bad/name"),
    (("topics", "create", "t2", "--config", "retention_ms=soon"), "retention_ms"),
    (("topics", "create", "t2", "--config", "no_such_key=1"), "no_such_key"),
    (("topics", "create", "t2", "--partitions", "0"), "0"),
])
def test_logstore_errors_are_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    d = str(tmp_path / "data")
    assert run("--dir", d, "topics", "create", "t").exit_code == 0
    assert_one_line_error(run("--dir", d, *args, input=""), 1, needle)
    assert run("--dir", d, "topics", "list").stdout.split() == ["t"]  # nothing was created


def test_missing_data_directory_is_an_error_for_readers(tmp_path: Path) -> None:
    assert_one_line_error(run("--dir", str(tmp_path / "nowhere"), "topics", "list"), 1, "no data directory")
    assert not (tmp_path / "nowhere").exists()


def test_dir_from_environment(tmp_path: Path) -> None:
    d = str(tmp_path / "env-data")
    runner = make_runner(env={"LOGSTORE_DIR": d})
    assert runner.invoke(cli, ["topics", "create", "x"], catch_exceptions=False).exit_code == 0
    assert os.path.isdir(d)
    assert runner.invoke(cli, ["topics", "list"], catch_exceptions=False).stdout.split() == ["x"]


def test_demo_runs_in_a_given_directory_and_continues_offsets(tmp_path: Path) -> None:
    d = str(tmp_path / "demo")
    first = run("--dir", d, "demo", "--records", "300")
    assert first.exit_code == 0, first.output
    assert "Produced 300 records" in first.stdout and "Consumed 300 records back" in first.stdout
    second = run("--dir", d, "demo", "--records", "300")
    assert second.exit_code == 0, second.output
    assert "exists with 3 partitions" in second.stdout
    described = json.loads(run("--dir", d, "topics", "describe", "demo", "--json").stdout)
    assert sum(p["log_end_offset"] for p in described["partitions"]) == 600


# -- end to end, through a real process ----------------------------------------------------------


def test_end_to_end_produce_consume_and_describe(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    assert run_process("--dir", d, "topics", "create", "e2e", "--partitions", "2").returncode == 0
    lines = b"".join(b"k%d=value %d\n" % (i % 5, i) for i in range(100))
    produced = run_process("--dir", d, "produce", "e2e", "--key-separator", "=", input=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = run_process("--dir", d, "consume", "e2e", "--format", "json")
    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(f"{r['key']}={r['value']}" for r in records) == sorted(lines.decode().splitlines())
    described = json.loads(run_process("--dir", d, "topics", "describe", "e2e", "--json").stdout)
    assert sum(p["high_watermark"] for p in described["partitions"]) == 100
    # the partition directories the store wrote verify clean
    verified = run_process("--dir", d, "dump", "--verify", "-q", "e2e-0", "e2e-1")
    assert verified.returncode == 0, verified.stderr


def test_end_to_end_errors_are_one_line(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    assert run_process("--dir", d, "topics", "create", "t").returncode == 0
    assert_one_line_error(run_process("--dir", d, "consume", "unknown-topic"), 1, "unknown-topic")
    assert_one_line_error(run_process("--dir", d, "topics", "create", "t", "-c", "flush=sometimes"), 1, "flush")
    assert_one_line_error(run_process("--dir", d, "topics", "create", "a" * 250), 1)


def test_end_to_end_locked_directory(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    holder_code = ("import sys, logstore\nstore = logstore.open(sys.argv[1])\nprint('ready', flush=True)\n"
                   "sys.stdin.read()\nstore.close()\n")
    env = dict(os.environ, PYTHONPATH=LOGSTORE_ROOT)
    holder = subprocess.Popen([sys.executable, "-c", holder_code, d], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        assert_one_line_error(run_process("--dir", d, "topics", "list"), 1)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert run_process("--dir", d, "topics", "list").returncode == 0  # free again once the holder is gone


def test_python_m_logstore_demo_in_a_temporary_directory(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "logstore", "demo", "--records", "200"], capture_output=True,
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=LOGSTORE_ROOT), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "temporary" in out and "Produced 200 records" in out and "records/s" in out
    assert os.listdir(tmp_path) == []  # nothing left behind in the working directory


def test_dump_with_progress_forced_keeps_stdout_intact(tmp_path: Path) -> None:
    make_log(tmp_path / "p", batches=3)
    plain = run("dump", "--verify", str(tmp_path / "p"))
    with_bar = run("--progress", "dump", "--verify", str(tmp_path / "p"))
    assert with_bar.exit_code == plain.exit_code == 0
    assert with_bar.stdout == plain.stdout
