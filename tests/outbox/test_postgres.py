"""PostgreSQL only: row locks with SKIP LOCKED and per-key order under them, LISTEN/NOTIFY wake-up,
the DDL's trigger, and the outbox through SQLAlchemy on psycopg."""

from __future__ import annotations

import time
from typing import Any

import pytest

import logstore
from logstore import outbox

from .conftest import TOPIC, Backend, message_ids, topic_records


def test_a_relay_skips_rows_another_transaction_locked_and_their_keys(store: logstore.Store, pg: Backend,
                                                                     postgres_dsn: str) -> None:
    """Rows locked by another transaction (a relay mid-claim) are skipped, not waited for; and a key
    whose first row is locked is skipped whole (its later rows are unlocked but must not overtake)."""
    conn = pg.connect()
    keys = [b"locked", b"free", b"locked", b"free", b"locked", None]
    ids = [outbox.add(conn, TOPIC, b"%d" % i, k, table=pg.table) for i, k in enumerate(keys)]
    conn.commit()
    other = pg.connect()
    other.execute(f"SELECT id FROM {pg.table} WHERE message_id = %s FOR UPDATE", (ids[0],))  # held open
    import psycopg

    # a relay that waited for the lock would fail this test (lock_timeout), not hang it
    relay = outbox.Relay(store, connect=lambda: psycopg.connect(postgres_dsn, options="-c lock_timeout=5000"),
                         table=pg.table)
    assert relay.run_once() == 3  # the two "free" rows and the unkeyed one
    conn.commit()
    status = {r.message_id: (r.status, r.attempts) for r in outbox.rows(conn, table=pg.table)}
    assert [status[i] for i in ids] == [("pending", 0), ("published", 1), ("pending", 0), ("published", 1),
                                        ("pending", 0), ("published", 1)]
    assert relay.run_once() == 0
    other.rollback()  # the lock goes: the key is published in order
    assert relay.run_until_idle() == 3
    relay.close()
    rows = {r.message_id: r for r in outbox.rows(conn, table=pg.table)}
    locked = [rows[i] for i, k in zip(ids, keys) if k == b"locked"]
    assert len({r.partition for r in locked}) == 1
    assert [r.offset for r in locked] == sorted(r.offset for r in locked)  # type: ignore[type-var]


def test_recheck_drops_rows_whose_key_head_another_relay_claimed(store: logstore.Store, pg: Backend) -> None:
    """Relay B's claim scan runs on a snapshot taken while relay A's claim of a key's first rows was
    not yet committed: B must give back that key's later rows (the fresh re-check sees A's claim)."""
    conn = pg.connect()
    ids = [outbox.add(conn, TOPIC, b"%d" % i, b"hot", table=pg.table) for i in range(4)]
    conn.commit()
    # A holds rows 1-2 locked and leased but uncommitted; B's scan skips them, sees 3-4 as claimable
    # (their head looks unleased in B's snapshot), and the re-check must drop them
    a = pg.connect()
    a.execute(f"UPDATE {pg.table} SET lease_owner = 'relay-a/1', lease_expires_at = %s "
              f"WHERE message_id = ANY(%s)", (int(time.time() * 1000) + 60_000, ids[:2]))
    relay_b = outbox.Relay(store, connect=pg.connect, table=pg.table)
    assert relay_b.run_once() == 0
    conn.rollback()
    status = {r.message_id: (r.status, r.lease_owner, r.attempts) for r in outbox.rows(conn, table=pg.table)}
    assert [status[i] for i in ids[2:]] == [("pending", None, 0)] * 2
    assert relay_b.stats.released == 2
    a.rollback()
    assert relay_b.run_until_idle() == 4
    relay_b.close()
    assert message_ids([r for _, r in topic_records(store)]) == ids


def test_listen_notify_wakes_the_relay_at_commit(store: logstore.Store, pg: Backend) -> None:
    conn = pg.connect()
    consumer = store.consumer(TOPIC, auto_offset_reset="earliest")
    relay = outbox.Relay(store, connect=pg.connect, table=pg.table, poll_interval=60.0, wake_grace=0).start()
    try:
        assert relay.listening.wait(10)
        deadline = time.monotonic() + 10
        while relay.stats.cycles == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        outbox.add(conn, TOPIC, b"notified", table=pg.table)  # no notify=: only the trigger's NOTIFY
        conn.commit()
        got: list[Any] = []
        while not got and time.monotonic() < deadline:
            got = consumer.poll(timeout=0.5)
        assert [r.value for r in got] == [b"notified"]
        assert relay.stats.cycles >= 2
    finally:
        relay.close()
        consumer.close()


def test_install_is_idempotent_and_ddl_has_the_trigger(pg: Backend) -> None:
    conn = pg.connect()
    outbox.install(conn, table=pg.table)  # a second time: no error
    script = outbox.ddl_script("postgresql", pg.table)
    assert "FOR UPDATE" not in script and f"{pg.table}_relay" in script
    cur = conn.execute("SELECT tgname FROM pg_trigger WHERE tgname = %s", (f"{pg.table}_notify",))
    assert cur.fetchall() == [(f"{pg.table}_notify",)]


def test_sqlalchemy_connection_and_session_on_postgres(store: logstore.Store, pg: Backend,
                                                       postgres_dsn: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    orm = pytest.importorskip("sqlalchemy.orm")
    engine = sqlalchemy.create_engine(postgres_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as sa_conn:
            first = outbox.add(sa_conn, TOPIC, b"via connection", b"k", table=pg.table)
            sa_conn.commit()
            outbox.add(sa_conn, TOPIC, b"rolled back", table=pg.table)
            sa_conn.rollback()
        with orm.Session(engine) as session:
            second = outbox.add(session, TOPIC, b"via session", b"k", headers=[("h", b"1")], table=pg.table)
            session.commit()
        with engine.connect() as relay_conn:
            relay = outbox.Relay(store, relay_conn, table=pg.table)
            assert relay.run_until_idle() == 2
            relay.close()
            assert [r.value for r in outbox.rows(relay_conn, table=pg.table)] == [b"via connection", b"via session"]
    finally:
        engine.dispose()
    assert message_ids([r for _, r in topic_records(store)]) == [first, second]
