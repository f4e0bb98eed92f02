"""The outbox on real databases (SQLite, and PostgreSQL through psycopg 3): add in the app's
transaction, relay to the topic, per-key order, failures and backoff, the scheduler, the inbox,
cleanup and metrics. Every test runs on both backends (``backend`` fixture)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import logstore
from logstore import outbox
from logstore.errors import InvalidArgumentError, InvalidTopicError, OutboxError, UnknownTopicError
from logstore.outbox.dialects import VALUES_PER_STATEMENT
from logstore.outbox.schema import statements

from .conftest import TOPIC, Backend, message_ids, topic_records

FAST = outbox.Backoff(initial=0.01, maximum=0.05, jitter=0.0)


def add_rows(backend: Backend, conn: Any, rows: list[tuple[str, bytes, bytes | None]],
             **kwargs: Any) -> list[str]:
    ids = [outbox.add(conn, topic, value, key, table=backend.table, **kwargs) for topic, value, key in rows]
    conn.commit()
    return ids


def relay_for(store: logstore.Store, backend: Backend, **kwargs: Any) -> outbox.Relay:
    kwargs.setdefault("backoff", FAST)
    return outbox.Relay(store, connect=backend.connect, table=backend.table, **kwargs)


def wait_until_published(relay: outbox.Relay, backend: Backend, conn: Any, count: int, timeout: float = 20.0) -> None:
    """run the relay until ``count`` rows are published (backoffs and leases take a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        relay.run_until_idle()
        if len(outbox.rows(conn, status="published", table=backend.table)) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"not {count} rows published after {timeout} s: {outbox.rows(conn, table=backend.table)}")


def test_added_rows_are_published_once_with_their_positions(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    wanted = [(TOPIC, b"value-%d" % i, b"key-%d" % (i % 4) if i % 5 else None) for i in range(40)]
    ids = [outbox.add(conn, t, v, k, headers=[("trace", b"t-%d" % i), ("empty", None)], table=backend.table)
           for i, (t, v, k) in enumerate(wanted)]
    conn.commit()
    with relay_for(store, backend, batch_size=7) as relay:
        assert relay.run_until_idle() == 40
        assert relay.stats.published == 40 and relay.stats.duplicates == 0
        assert relay.run_once() == 0
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    assert {r.status for r in rows.values()} == {"published"}
    assert all(r.lease_owner is None and r.attempts == 1 for r in rows.values())
    records = topic_records(store)
    assert sorted(message_ids([r for _, r in records])) == sorted(ids)
    for partition, record in records:
        message_id = dict(record.headers)[outbox.MESSAGE_ID_HEADER].decode()
        row = rows[message_id]
        i = ids.index(message_id)
        assert (row.partition, row.offset) == (partition, record.offset)
        assert (record.key, record.value) == (wanted[i][2], wanted[i][1])
        assert record.headers[:2] == [("trace", b"t-%d" % i), ("empty", None)]


def test_rollback_of_the_app_transaction_leaves_no_row(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    outbox.add(conn, TOPIC, b"kept", table=backend.table)
    conn.commit()
    outbox.add(conn, TOPIC, b"rolled back", b"k", table=backend.table)
    outbox.add(conn, TOPIC, b"rolled back too", table=backend.table)
    conn.rollback()
    assert [r.value for r in outbox.rows(conn, table=backend.table)] == [b"kept"]
    with relay_for(store, backend) as relay:
        relay.run_until_idle()
    assert [r.value for _, r in topic_records(store)] == [b"kept"]


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    ((TOPIC, "a str payload"), {}, InvalidArgumentError),
    ((TOPIC, 42), {}, InvalidArgumentError),
    ((TOPIC, b"v", "str key"), {}, InvalidArgumentError),
    ((TOPIC, b"v"), {"headers": [("h", "not bytes")]}, InvalidArgumentError),
    ((TOPIC, b"v"), {"headers": "h=v"}, InvalidArgumentError),
    ((TOPIC, b"v"), {"headers": [(b"bytes name", b"v")]}, InvalidArgumentError),
    (("bad topic!", b"v"), {}, InvalidTopicError),
    ((TOPIC, b"v"), {"message_id": ""}, InvalidArgumentError),
    ((TOPIC, b"v"), {"message_id": 7}, InvalidArgumentError),
    ((TOPIC, b"v"), {"message_id": "x" * 256}, InvalidArgumentError),
    (("missing", b"v"), {"with_store": True}, UnknownTopicError),
    ((TOPIC, b"v"), {"message_id": "taken"}, OutboxError),
    ((TOPIC, b"v"), {"table": "no such; table"}, InvalidArgumentError),
])
def test_bad_input_raises_and_writes_nothing(store: logstore.Store, backend: Backend, args: tuple[Any, ...],
                                             kwargs: dict[str, Any], error: type[Exception]) -> None:
    conn = backend.connect()
    outbox.add(conn, TOPIC, b"first", message_id="taken", table=backend.table)
    conn.commit()
    kwargs = dict(kwargs)
    if kwargs.pop("with_store", False):
        kwargs["store"] = store
    kwargs.setdefault("table", backend.table)
    with pytest.raises(error) as raised:
        outbox.add(conn, *args, **kwargs)
    assert str(raised.value)
    conn.commit()  # the transaction is still usable, and holds nothing new
    assert [r.message_id for r in outbox.rows(conn, table=backend.table)] == ["taken"]


def test_unknown_topic_fails_with_backoff_and_blocks_only_its_key(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    ids = add_rows(backend, conn, [("later", b"a1", b"k"), ("later", b"a2", b"k"), (TOPIC, b"other", b"k"),
                                   ("later", b"unkeyed", None)])
    backoff = outbox.Backoff(initial=0.3, maximum=0.3, jitter=0.0)
    with relay_for(store, backend, backoff=backoff) as relay:
        assert relay.run_once() == 4
        rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
        head, follower, other, unkeyed = (rows[i] for i in ids)
        assert head.status == "failed" and "does not exist" in (head.last_error or "")
        assert head.attempts == 1 and head.next_attempt_at > head.updated_at
        # the key's later row was not tried: released with its attempt given back
        assert (follower.status, follower.attempts, follower.lease_owner) == ("pending", 0, None)
        assert other.status == "published"  # same key, other topic: another ordering group
        assert unkeyed.status == "failed"
        # while the head backs off, its key's rows are not claimed
        assert relay.run_once() == 0
        assert outbox.get(conn, ids[1], table=backend.table).attempts == 0  # type: ignore[union-attr]
        store.create_topic("later", 2)
        time.sleep(0.35)
        wait_until_published(relay, backend, conn, 4)
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    assert rows[ids[0]].partition == rows[ids[1]].partition
    assert rows[ids[0]].offset < rows[ids[1]].offset  # type: ignore[operator]
    assert rows[ids[0]].attempts == 2 and rows[ids[1]].attempts == 1


def test_keys_keep_their_order_across_batches(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    keys = [b"k%d" % (i % 5) for i in range(60)]
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, k) for i, k in enumerate(keys)])
    with relay_for(store, backend, batch_size=8) as relay:
        relay.run_until_idle()
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    for key in set(keys):
        positions = [(rows[i].partition, rows[i].offset) for i, k in zip(ids, keys) if k == key]
        assert len({p for p, _ in positions}) == 1
        assert [o for _, o in positions] == sorted(o for _, o in positions)  # type: ignore[type-var]


def test_dead_rows_keep_their_error_and_stop_blocking_their_key(store: logstore.Store, backend: Backend) -> None:
    store.create_topic("small", 1, {"max_message_bytes": 256})
    conn = backend.connect()
    too_big, after = add_rows(backend, conn, [("small", b"x" * 1000, b"k"), ("small", b"fits", b"k")])
    with relay_for(store, backend) as relay:
        wait_until_published(relay, backend, conn, 1)
        assert relay.stats.dead == 1
    dead = outbox.get(conn, too_big, table=backend.table)
    assert dead is not None and dead.status == "dead" and dead.attempts == 1  # no retry can fix it
    assert "RecordTooLarge" in (dead.last_error or "")
    assert outbox.get(conn, after, table=backend.table).status == "published"  # type: ignore[union-attr]
    assert [r.value for _, r in topic_records(store, "small")] == [b"fits"]
    # requeue brings it back (e.g. after raising the limit)
    assert outbox.requeue(conn, [too_big], table=backend.table) == 1
    conn.commit()
    row = outbox.get(conn, too_big, table=backend.table)
    assert row is not None and (row.status, row.attempts) == ("pending", 0)


def test_max_attempts_then_dead(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    (message_id,) = add_rows(backend, conn, [("never", b"v", b"k")])
    with relay_for(store, backend, max_attempts=3) as relay:
        deadline = time.monotonic() + 10
        while outbox.get(conn, message_id, table=backend.table).status != "dead":  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            relay.run_until_idle()
            conn.commit()
            time.sleep(0.02)
        assert relay.stats.failed == 2 and relay.stats.dead == 1
    row = outbox.get(conn, message_id, table=backend.table)
    assert row is not None and row.attempts == 3 and "does not exist" in (row.last_error or "")


def test_ordering_none_publishes_every_row(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"same") for i in range(30)])
    with relay_for(store, backend, ordering="none", batch_size=1000) as relay:
        assert relay.run_once() == 30
    assert sorted(message_ids([r for _, r in topic_records(store)])) == sorted(ids)


def test_a_failed_row_blocks_only_its_key_and_the_rest_of_the_batch_goes_on(store: logstore.Store,
                                                                           backend: Backend) -> None:
    """Rows after a failed one in the same batch: its key's are released untried, the others are
    published (the relay publishes a batch with publish_many, which stops at a failure)."""
    store.create_topic("small", 1, {"max_message_bytes": 256})
    conn = backend.connect()
    big = b"x" * 1000
    a1, b_big, b2, a2, u_big, u_ok = add_rows(backend, conn, [
        ("small", b"a1", b"A"), ("small", big, b"B"), ("small", b"b2", b"B"), ("small", b"a2", b"A"),
        ("small", big, None), ("small", b"u", None)])
    with relay_for(store, backend) as relay:
        assert relay.run_once() == 6
        assert (relay.stats.published, relay.stats.dead, relay.stats.released) == (3, 2, 1)
        rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
        assert [rows[i].status for i in (a1, b_big, b2, a2, u_big, u_ok)] == [
            "published", "dead", "pending", "published", "dead", "published"]
        assert (rows[b2].attempts, rows[b2].lease_owner) == (0, None)
        assert relay.run_until_idle() == 1  # a dead row no longer blocks its key
    assert [r.value for _, r in topic_records(store, "small")] == [b"a1", b"a2", b"u", b"b2"]


def test_a_lost_lease_is_counted_and_the_message_published_once(store: logstore.Store, backend: Backend) -> None:
    """A relay that stalls past its lease: another takes the rows over and publishes them (found in
    the message-id index: no second append); the stalled relay's marks change nothing."""
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 2)) for i in range(4)])
    other = relay_for(store, backend)

    def stall(step: str) -> None:
        if step == "flushed":
            time.sleep(0.25)  # the lease (0.2 s) expires
            assert other.run_until_idle() == 4

    with relay_for(store, backend, lease_seconds=0.2, on_step=stall) as stalled:
        assert stalled.run_once() == 4
        assert stalled.stats.lost_leases == 4 and stalled.stats.published == 4
    assert other.stats.duplicates == 4 and other.stats.lost_leases == 0
    other.close()
    records = topic_records(store)
    assert sorted(message_ids([r for _, r in records])) == sorted(ids)
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    assert {(rows[m].partition, rows[m].offset) for m in ids} == {(p, r.offset) for p, r in records}
    assert all(r.attempts == 2 and r.status == "published" for r in rows.values())


def test_on_step_published_runs_after_each_record(store: logstore.Store, backend: Backend) -> None:
    """The crash tests kill a relay in the middle of a batch at the "published" step: it must come
    after each record, not after the batch."""
    conn = backend.connect()
    add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 3)) for i in range(6)])
    in_log: list[int] = []

    def count(step: str) -> None:
        if step == "published":
            in_log.append(sum(store.partition_log(tp).high_watermark for tp in store.topic_partitions([TOPIC])))

    with relay_for(store, backend, on_step=count) as relay:
        assert relay.run_once() == 6
    assert in_log == [1, 2, 3, 4, 5, 6]


def patched_database(conn: Any, **methods: Any) -> outbox.Database:
    """The outbox's Database for ``conn`` with some methods replaced (to count or fail them)."""
    db = outbox.adapt(conn)
    return type("Patched", (type(db),), methods)(db.connection, db.dialect, db.paramstyle)  # type: ignore[no-any-return]


def test_a_run_of_batches_commits_each_batch_marks_with_the_next_claim(store: logstore.Store,
                                                                        backend: Backend) -> None:
    conn = backend.connect()
    add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 3)) for i in range(12)])
    commits: list[int] = []
    base = type(outbox.adapt(conn))

    def commit(self: outbox.Database) -> None:
        commits.append(1)
        base.commit(self)

    relay = outbox.Relay(store, patched_database(backend.connect(), commit=commit), table=backend.table,
                         batch_size=5)
    assert relay.run_until_idle() == 12
    assert len(commits) == 4  # 3 batches: claim 1, marks 1 + claim 2, marks 2 + claim 3, marks 3 + empty claim
    assert relay.stats.published == 12 and relay.stats.cycles == 4 and relay.stats.batches == 3
    commits.clear()
    add_rows(backend, conn, [(TOPIC, b"more", b"k0")])
    assert relay.run_once() == 1 and len(commits) == 2  # run_once: claim, then marks, before returning
    relay.close()
    assert {r.status for r in outbox.rows(conn, table=backend.table)} == {"published"}


def test_a_failing_claim_still_commits_the_marks_of_the_batch_before(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 3)) for i in range(12)])
    base = type(outbox.adapt(conn))
    sql = statements(backend.name, backend.table)
    claims: list[str] = []

    def query(self: outbox.Database, text: str, params: Any = None) -> Any:
        if text == sql.claim_keyed:
            claims.append(text)
            if len(claims) == 2:
                raise RuntimeError("the claim failed")
        return base.query(self, text, params)

    relay = outbox.Relay(store, patched_database(backend.connect(), query=query), table=backend.table,
                         batch_size=5)
    with pytest.raises(RuntimeError, match="the claim failed"):
        relay.run_until_idle()
    rows = outbox.rows(conn, table=backend.table)
    assert [r.status for r in rows] == ["published"] * 5 + ["pending"] * 7  # the first batch is marked
    assert all(r.lease_owner is None for r in rows) and relay.stats.published == 5
    assert relay.run_until_idle() == 7
    relay.close()
    assert sorted(message_ids([r for _, r in topic_records(store)])) == sorted(ids)
    assert relay.stats.duplicates == 0


def test_without_update_from_the_marks_go_row_by_row(store: logstore.Store, backend: Backend) -> None:
    """SQLite before 3.33 has no UPDATE ... FROM: the relay marks each row with its own statement."""
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 4)) for i in range(20)])
    relay = outbox.Relay(store, patched_database(backend.connect(), supports_update_from=lambda self: False),
                         table=backend.table, batch_size=7)
    assert relay.run_until_idle() == 20 and relay.stats.published == 20
    relay.close()
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table)}
    records = topic_records(store)
    assert {(rows[m].partition, rows[m].offset) for m in ids} == {(p, r.offset) for p, r in records}


def test_a_batch_larger_than_one_marking_statement(store: logstore.Store, backend: Backend) -> None:
    """SQLite marks at most VALUES_PER_STATEMENT rows per statement: a bigger batch takes several."""
    conn = backend.connect()
    count = VALUES_PER_STATEMENT * 2 + 11
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 50)) for i in range(count)])
    with relay_for(store, backend, batch_size=count) as relay:
        assert relay.run_once() == count and relay.stats.published == count
    rows = {r.message_id: r for r in outbox.rows(conn, table=backend.table, limit=count)}
    records = topic_records(store)
    assert len(records) == count
    position = {m: (p, r.offset) for m, (p, r) in zip(message_ids([r for _, r in records]), records)}
    assert all((rows[m].status, rows[m].partition, rows[m].offset) == ("published", *position[m]) for m in ids)


class Crash(Exception):
    """Stands for a relay that dies at a step (the subprocess tests kill it for real)."""


def crash_at(step: str) -> Any:
    def on_step(name: str) -> None:
        if name == step:
            raise Crash(step)
    return on_step


@pytest.mark.parametrize("step", ["claimed", "flushed", "marked"])
def test_scheduler_requeues_rows_of_a_dead_relay(store: logstore.Store, backend: Backend, step: str) -> None:
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, b"k%d" % (i % 3)) for i in range(12)])
    crashed = relay_for(store, backend, lease_seconds=0.3, on_step=crash_at(step))
    with pytest.raises(Crash):
        crashed.run_once()
    leased = outbox.rows(conn, table=backend.table)
    assert all(r.lease_owner is not None and r.status == "pending" for r in leased)
    scheduler = outbox.Scheduler(connect=backend.connect, table=backend.table, backoff=FAST)
    assert scheduler.run_once().requeued == 0  # leases still live
    time.sleep(0.35)
    report = scheduler.run_once()
    assert (report.requeued, report.dead) == (12, 0)
    rows = outbox.rows(conn, table=backend.table)
    assert {r.status for r in rows} == {"failed"} and all("lease" in (r.last_error or "") for r in rows)
    with relay_for(store, backend) as relay:
        wait_until_published(relay, backend, conn, 12)
        # records appended before the crash are found by message id, not appended again
        assert relay.stats.duplicates == (12 if step in ("flushed", "marked") else 0)
    assert sorted(message_ids([r for _, r in topic_records(store)])) == sorted(ids)
    crashed.close()
    scheduler.close()


def test_scheduler_dead_letters_rows_out_of_attempts(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    (message_id,) = add_rows(backend, conn, [(TOPIC, b"poison", b"k")])
    crashed = relay_for(store, backend, lease_seconds=0.1, max_attempts=1, on_step=crash_at("claimed"))
    with pytest.raises(Crash):
        crashed.run_once()
    time.sleep(0.15)
    report = outbox.Scheduler(connect=backend.connect, table=backend.table, max_attempts=1).run_once()
    assert (report.requeued, report.dead) == (0, 1)
    row = outbox.get(conn, message_id, table=backend.table)
    assert row is not None and row.status == "dead" and "out of attempts" in (row.last_error or "")
    crashed.close()


def test_scheduler_retries_a_stuck_row(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    (message_id,) = add_rows(backend, conn, [(TOPIC, b"stuck", b"k")])
    relay = relay_for(store, backend)  # never started: the row is stuck
    scheduler = outbox.Scheduler(connect=backend.connect, table=backend.table, relay=relay, stuck_after=0)
    time.sleep(0.002)
    report = scheduler.run_once()
    assert (report.stuck, report.retried) == (1, 1)
    assert report.oldest_stuck_age is not None and report.oldest_stuck_age >= 0
    assert outbox.get(conn, message_id, table=backend.table).status == "published"  # type: ignore[union-attr]
    assert scheduler.run_once().stuck == 0
    relay.close()
    scheduler.close()


def test_inbox_processes_each_message_once_per_group(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    # a fresh table: the PostgreSQL database outlives a test run (CI runs the suite twice against it)
    conn.cursor().execute("DROP TABLE IF EXISTS handled")
    conn.cursor().execute("CREATE TABLE handled (message TEXT, grp TEXT)")
    conn.commit()
    ids = add_rows(backend, conn, [(TOPIC, b"m%d" % i, b"k%d" % i) for i in range(5)])
    with relay_for(store, backend) as relay:
        relay.run_until_idle()
    consumer = store.consumer(TOPIC, auto_offset_reset="earliest")
    records: list[Any] = []
    deadline = time.monotonic() + 10
    while len(records) < 5 and time.monotonic() < deadline:
        records += consumer.poll(timeout=0.5)
    consumer.close()
    assert len(records) == 5

    def handle(group: str) -> Any:
        def handler(record: Any) -> None:
            cur = conn.cursor()
            cur.execute("INSERT INTO handled VALUES (%s, %s)" if backend.name == "postgresql" else
                        "INSERT INTO handled VALUES (?, ?)", (record.value.decode(), group))
        return handler

    # a failing handler rolls back with the inbox entry: the message is processed again later
    with pytest.raises(RuntimeError):
        outbox.inbox.process(conn, "billing", records[0], lambda r: (_ for _ in ()).throw(RuntimeError("boom")),
                             table=backend.table)
    conn.rollback()
    for _ in range(2):  # the second round is a redelivery: skipped
        ran = [outbox.inbox.process(conn, "billing", r, handle("billing"), table=backend.table, mark_outbox=True)
               for r in records]
        conn.commit()
        assert ran == [True] * 5 if _ == 0 else ran == [False] * 5
    # another group processes them too, without touching the outbox rows
    assert all(outbox.inbox.process(conn, "audit", r, handle("audit"), table=backend.table) for r in records)
    conn.commit()
    cur = conn.cursor()
    cur.execute("SELECT grp, COUNT(*) FROM handled GROUP BY grp ORDER BY grp")
    assert [tuple(r) for r in cur.fetchall()] == [("audit", 5), ("billing", 5)]
    assert outbox.inbox.processed(conn, "billing", ids[0], table=backend.table)
    assert not outbox.inbox.processed(conn, "other", ids[0], table=backend.table)
    assert {r.status for r in outbox.rows(conn, table=backend.table)} == {"done"}


def test_inbox_marks_a_row_the_relay_has_not_marked_yet(store: logstore.Store, backend: Backend) -> None:
    """A consumer can get a record between the relay's publish and its mark: the row ends done and
    the relay's mark does not move it back."""
    conn = backend.connect()
    (message_id,) = add_rows(backend, conn, [(TOPIC, b"fast", b"k")])
    seen: list[Any] = []

    def consume_before_mark(step: str) -> None:
        if step == "flushed":
            (record,) = [r for _, r in topic_records(store)]
            seen.append(outbox.inbox.process(conn, "g", record, lambda r: None, table=backend.table,
                                             mark_outbox=True))
            conn.commit()

    with relay_for(store, backend, on_step=consume_before_mark) as relay:
        relay.run_once()
    row = outbox.get(conn, message_id, table=backend.table)
    assert seen == [True]
    assert row is not None and row.status == "done" and row.offset == 0 and row.partition is not None


def test_cleanup_deletes_old_finished_rows_capped_and_never_failed_or_dead(store: logstore.Store,
                                                                          backend: Backend) -> None:
    conn = backend.connect()
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, None) for i in range(12)])
    statuses = ["published"] * 3 + ["received"] * 2 + ["done"] * 3 + ["failed"] * 2 + ["dead", "pending"]
    cur = conn.cursor()
    mark = "UPDATE {} SET status = %s WHERE message_id = %s" if backend.name == "postgresql" else \
        "UPDATE {} SET status = ? WHERE message_id = ?"
    for message_id, status in zip(ids, statuses):
        cur.execute(mark.format(backend.table), (status, message_id))
    conn.commit()
    retention = outbox.Retention(published=60, received=60, done=0, inbox=60, max_deletes=2)
    later = int(time.time() * 1000) + 120_000
    report = outbox.cleanup(conn, retention, table=backend.table, now=later)
    assert report.deleted == {"published": 2, "received": 2, "done": 2, "inbox": 0}
    report = outbox.cleanup(conn, retention, table=backend.table, now=later)
    assert report.deleted == {"published": 1, "received": 0, "done": 1, "inbox": 0} and report.total == 2
    left = sorted(r.status for r in outbox.rows(conn, table=backend.table))
    assert left == ["dead", "failed", "failed", "pending"]
    # a retention not yet reached deletes nothing
    outbox.add(conn, TOPIC, b"fresh", table=backend.table)
    conn.commit()
    assert outbox.cleanup(conn, outbox.Retention(), table=backend.table).total == 0
    with pytest.raises(TypeError):
        outbox.Retention(dead=1)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError):
        outbox.Retention(max_deletes=0)


def test_metrics(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    add_rows(backend, conn, [(TOPIC, b"a", b"k"), (TOPIC, b"b", None), ("missing", b"c", None)])
    empty = outbox.metrics(conn, table=backend.table)
    assert empty.pending == 3 and empty.counts["pending"] == 3 and empty.relay_lag is None
    assert empty.oldest_pending_age is not None and empty.oldest_pending_age >= 0
    with relay_for(store, backend) as relay:
        relay.run_until_idle()
    after = outbox.metrics(conn, table=backend.table)
    assert after.counts["published"] == 2 and after.counts["failed"] == 1 and after.pending == 1
    assert after.attempts == 1 and after.max_attempts == 1 and after.retrying == 1
    assert after.published_in_window == 2
    assert after.relay_lag is not None and after.relay_lag >= 0 and after.relay_lag_avg is not None
    assert after.dead == 0


def test_background_relay_woken_by_notify(store: logstore.Store, backend: Backend) -> None:
    """add(..., notify=relay) before the commit: the woken relay re-polls until the row is there."""
    conn = backend.connect()
    consumer = store.consumer(TOPIC, auto_offset_reset="earliest")
    relay = relay_for(store, backend, poll_interval=30.0, wake_grace=5.0).start()
    try:
        deadline = time.monotonic() + 10
        while relay.stats.cycles == 0:  # the relay's first look found nothing: it now waits 30 s
            assert time.monotonic() < deadline
            time.sleep(0.005)
        outbox.add(conn, TOPIC, b"woken", table=backend.table, notify=relay)
        conn.commit()
        got: list[Any] = []
        while not got and time.monotonic() < deadline:
            got = consumer.poll(timeout=0.5)
        assert [r.value for r in got] == [b"woken"]
    finally:
        relay.close()
        consumer.close()


def test_relay_and_scheduler_arguments_are_checked(store: logstore.Store, backend: Backend) -> None:
    conn = backend.connect()
    for bad in ({"batch_size": 0}, {"ordering": "topic"}, {"lease_seconds": 0}, {"max_attempts": 0},
                {"poll_interval": -1}):
        with pytest.raises(InvalidArgumentError):
            outbox.Relay(store, conn, table=backend.table, **bad)
    with pytest.raises(InvalidArgumentError):
        outbox.Relay(store, conn, connect=backend.connect)
    with pytest.raises(InvalidArgumentError):
        outbox.Relay(store)
    with pytest.raises(InvalidArgumentError):
        outbox.Scheduler(conn, stuck_after=-1)


def test_relay_in_a_thread_with_a_closed_store_stops(tmp_path: Any, backend: Backend) -> None:
    store = logstore.open(tmp_path / "other", cleaner=False)
    store.create_topic(TOPIC)
    conn = backend.connect()
    relay = relay_for(store, backend, poll_interval=0.01).start()
    store.close()
    add_rows(backend, conn, [(TOPIC, b"after close", None)])
    deadline = time.monotonic() + 10
    while relay.running and time.monotonic() < deadline:
        relay.wake()
        time.sleep(0.01)
    assert not relay.running
    relay.close()
    row = outbox.rows(conn, table=backend.table)[0]
    assert row.status == "pending" and row.attempts == 0  # given back, not counted as a failure


def test_two_relays_in_one_process_publish_each_row_once(store: logstore.Store, backend: Backend) -> None:
    """Two background relays on the same table and store (on SQLite one does the work at a time; on
    PostgreSQL they claim disjoint rows with SKIP LOCKED): every row once, keys in order."""
    conn = backend.connect()
    keys = [b"k%d" % (i % 7) for i in range(300)]
    ids = add_rows(backend, conn, [(TOPIC, b"%d" % i, k) for i, k in enumerate(keys)])
    relays = [relay_for(store, backend, batch_size=10, poll_interval=0.01).start() for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while sum(r.stats.published for r in relays) < 300:
            assert time.monotonic() < deadline, [r.stats for r in relays]
            time.sleep(0.01)
    finally:
        for relay in relays:
            relay.close()
    records = topic_records(store)
    assert sorted(message_ids([r for _, r in records])) == sorted(ids)
    order = {message_id: n for n, message_id in enumerate(ids)}
    for key in set(keys):
        in_log = [(p, r.offset, order[mid]) for (p, r), mid in zip(records, message_ids([r for _, r in records]))
                  if r.key == key]
        assert [n for _, _, n in sorted(in_log)] == sorted(n for _, _, n in in_log), key
    assert sum(r.stats.duplicates for r in relays) == 0


def test_concurrent_adds_and_relay(store: logstore.Store, backend: Backend) -> None:
    """Writers add and commit while a background relay publishes: nothing lost, nothing twice."""
    relay = relay_for(store, backend, batch_size=50, poll_interval=0.005).start()
    added: list[str] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            conn = backend.connect()
            for i in range(60):
                added.append(outbox.add(conn, TOPIC, b"w%d-%d" % (n, i), b"w%d" % n, table=backend.table,
                                        notify=relay))
                if i % 6 == 5:
                    conn.commit()
            conn.commit()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    try:
        assert not errors, errors
        deadline = time.monotonic() + 30
        while relay.stats.published < 180:
            assert time.monotonic() < deadline, relay.stats
            relay.wake()
            time.sleep(0.01)
    finally:
        relay.close()
    assert sorted(message_ids([r for _, r in topic_records(store)])) == sorted(added)
