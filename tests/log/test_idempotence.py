"""Idempotent producer state of a partition: duplicates, ordering, fencing, persistence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from logstore import PartitionLog, errors
from logstore._native.codec import RecordBatchView

PID = 4242


def values(n: int, tag: str = "v") -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(n)]


def all_values(log: PartitionLog) -> list[bytes | None]:
    return [r.value for r in log.read(log.log_start_offset, 1 << 24)]


@pytest.fixture
def log(tmp_path):
    with PartitionLog.open(tmp_path / "p", flush="never") as lg:
        yield lg


def test_retry_of_a_batch_returns_its_offset_and_writes_nothing(log):
    assert log.append_many(values(3), producer_id=PID, producer_epoch=0, base_sequence=0) == 0
    assert log.append_many(values(2, "w"), producer_id=PID, producer_epoch=0, base_sequence=3) == 3
    leo = log.log_end_offset
    assert log.append_many(values(3), producer_id=PID, producer_epoch=0, base_sequence=0) == 0
    assert log.append_many(values(2, "w"), producer_id=PID, producer_epoch=0, base_sequence=3) == 3
    assert log.log_end_offset == leo == 5
    assert all_values(log) == values(3) + values(2, "w")
    assert log.producer_state.entry(PID) == (0, 4, 4)


def test_out_of_order_sequence_is_rejected_and_nothing_written(log):
    log.append_many(values(2), producer_id=PID, producer_epoch=0, base_sequence=0)
    for seq in (3, 7, 1_000_000):
        with pytest.raises(errors.OutOfOrderSequenceError, match="expected sequence 2"):
            log.append_many([b"x"], producer_id=PID, producer_epoch=0, base_sequence=seq)
    assert log.log_end_offset == 2
    # a partial overlap with the last batch is not a retry either
    with pytest.raises(errors.OutOfOrderSequenceError):
        log.append_many(values(3), producer_id=PID, producer_epoch=0, base_sequence=1)
    assert log.log_end_offset == 2


def test_only_the_last_five_batches_are_remembered(log):
    for i in range(7):
        log.append_many([b"%d" % i], producer_id=PID, producer_epoch=0, base_sequence=i)
    for i in range(2, 7):
        assert log.append_many([b"%d" % i], producer_id=PID, producer_epoch=0, base_sequence=i) == i
    for i in (0, 1):
        with pytest.raises(errors.OutOfOrderSequenceError):
            log.append_many([b"%d" % i], producer_id=PID, producer_epoch=0, base_sequence=i)
    assert log.log_end_offset == 7


def test_older_epoch_is_fenced_and_new_epoch_starts_at_zero(log):
    log.append_many([b"a"], producer_id=PID, producer_epoch=3, base_sequence=0)
    with pytest.raises(errors.ProducerFencedError, match="epoch 2 is fenced"):
        log.append_many([b"b"], producer_id=PID, producer_epoch=2, base_sequence=1)
    with pytest.raises(errors.OutOfOrderSequenceError, match="must be 0"):
        log.append_many([b"b"], producer_id=PID, producer_epoch=4, base_sequence=5)
    assert log.append_many([b"b"], producer_id=PID, producer_epoch=4, base_sequence=0) == 1
    with pytest.raises(errors.ProducerFencedError):
        log.append_many([b"c"], producer_id=PID, producer_epoch=3, base_sequence=1)
    assert all_values(log) == [b"a", b"b"]


def test_producers_are_independent_and_stamped_in_batch_headers(log):
    log.append_many([b"a"], producer_id=1, producer_epoch=0, base_sequence=0)
    log.append_many([b"b"], producer_id=2, producer_epoch=7, base_sequence=10)
    log.append_many([b"c"], producer_id=1, producer_epoch=0, base_sequence=1)
    heads = [(b["producer_id"], b["producer_epoch"], b["base_sequence"]) for b in log.read(0).batches()]
    assert heads == [(1, 0, 0), (2, 7, 10), (1, 0, 1)]


def test_invalid_sequence_arguments(log):
    with pytest.raises(errors.OutOfOrderSequenceError):
        log.append_many([b"a"], producer_id=PID, producer_epoch=0, base_sequence=-1)
    with pytest.raises(errors.OutOfOrderSequenceError):
        log.append_many([b"a", b"b"], producer_id=PID, producer_epoch=0, base_sequence=2**31 - 1)
    with pytest.raises(errors.InvalidArgumentError):
        log.append_many([b"a"], producer_id=PID, producer_epoch=40000, base_sequence=0)
    assert log.log_end_offset == 0


def test_state_survives_clean_reopen(tmp_path):
    path = tmp_path / "p"
    with PartitionLog.open(path, flush="never") as log:
        log.append_many(values(4), producer_id=PID, producer_epoch=1, base_sequence=0)
    with PartitionLog.open(path, flush="never") as log:
        assert log.producer_state.entry(PID) == (1, 3, 3)
        assert log.append_many(values(4), producer_id=PID, producer_epoch=1, base_sequence=0) == 0
        assert log.log_end_offset == 4


@pytest.mark.parametrize("snapshot", ["kept", "deleted", "corrupted"])
def test_state_rebuilt_from_the_log_after_kill(tmp_path, snapshot):
    path = tmp_path / "p"
    script = textwrap.dedent(f"""
        import os, sys
        from logstore import PartitionLog
        log = PartitionLog.open({str(path)!r}, flush="never")
        log.append_many([b"a", b"b"], producer_id={PID}, producer_epoch=2, base_sequence=0)
        log.flush()  # snapshot at offset 2
        log.append_many([b"c"], producer_id={PID}, producer_epoch=2, base_sequence=2)
        log.append_many([b"d"], producer_id=99, producer_epoch=0, base_sequence=5)
        print("ready", flush=True)
        sys.stdin.read()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    snap = path / "producer.snapshot"
    if snapshot == "deleted":
        snap.unlink()
    elif snapshot == "corrupted":
        data = bytearray(snap.read_bytes())
        data[5] ^= 0xFF
        snap.write_bytes(bytes(data))
    with PartitionLog.open(path, flush="never") as log:
        assert log.log_end_offset == 4
        assert log.producer_state.entry(PID) == (2, 2, 2)
        assert log.producer_state.entry(99) == (0, 5, 3)
        assert log.append_many([b"c"], producer_id=PID, producer_epoch=2, base_sequence=2) == 2
        assert log.append_many([b"e"], producer_id=PID, producer_epoch=2, base_sequence=3) == 4


def test_truncation_rebuilds_state(log):
    log.append_many([b"a"], producer_id=PID, producer_epoch=0, base_sequence=0)
    log.append_many([b"b"], producer_id=PID, producer_epoch=0, base_sequence=1)
    log.truncate_to(1)
    assert log.producer_state.entry(PID) == (0, 0, 0)
    # the truncated batch may now be appended again (a new leader's log)
    assert log.append_many([b"b2"], producer_id=PID, producer_epoch=0, base_sequence=1) == 1
    assert all_values(log) == [b"a", b"b2"]


def test_raw_batch_retry_is_dropped(tmp_path):
    with PartitionLog.open(tmp_path / "src", flush="never") as src:
        src.append_many(values(3), producer_id=PID, producer_epoch=0, base_sequence=0)
        raw = bytes(src.read(0).raw)
    with PartitionLog.open(tmp_path / "dst", flush="never") as log:
        log.append_many([b"other"])
        assert log.append_batch(raw) == 1
        assert log.append_batch(raw) == 1
        assert log.log_end_offset == 4
        view = RecordBatchView(bytes(log.read(0, 1 << 20).raw))
        assert [r.value for r in view] == [b"other"] + values(3)
