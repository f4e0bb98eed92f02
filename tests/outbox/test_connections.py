"""Connections the outbox takes (sqlite3, DB-API 2 by paramstyle, SQLAlchemy) and refuses, and the
pure helpers: SQL parameter rewriting, header encoding, backoff, DDL."""

from __future__ import annotations

import random
import re
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import outbox
from logstore.errors import InvalidArgumentError, OutboxError, UnsupportedConnectionError
from logstore.outbox.api import decode_headers, encode_headers
from logstore.outbox.dialects import compile_sql

from .conftest import TOPIC, message_ids, topic_records

# -- paramstyles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "expected", "names"), [
    ("qmark", "a = ? AND b = ? AND c = ?", ("x", "y", "x")),
    ("numeric", "a = :1 AND b = :2 AND c = :3", ("x", "y", "x")),
    ("named", "a = :x AND b = :y AND c = :x", ("x", "y", "x")),
    ("format", "a = %s AND b = %s AND c = %s", ("x", "y", "x")),
    ("pyformat", "a = %(x)s AND b = %(y)s AND c = %(x)s", ("x", "y", "x")),
])
def test_compile_sql_per_paramstyle(style: str, expected: str, names: tuple[str, ...]) -> None:
    assert compile_sql("a = :x AND b = :y AND c = :x", style) == (expected, names)


def test_compile_sql_escapes_percent_and_leaves_casts_and_literals() -> None:
    assert compile_sql("SELECT '5%' || x::text, :p", "format") == ("SELECT '5%%' || x::text, %s", ("p",))
    assert compile_sql("SELECT '5%', :p", "qmark") == ("SELECT '5%', ?", ("p",))
    with pytest.raises(UnsupportedConnectionError):
        compile_sql("SELECT 1", "dollar")


def make_format_driver() -> types.ModuleType:
    """A DB-API 2 driver module with paramstyle "format" (psycopg2's, MySQLdb's) over sqlite3:
    it rewrites %s to ? and refuses any other placeholder, so the outbox must speak "format"."""
    module = types.ModuleType("fmtdriver")
    module.paramstyle = "format"  # type: ignore[attr-defined]

    class Cursor:
        def __init__(self, cursor: sqlite3.Cursor) -> None:
            self._cursor = cursor

        def _sql(self, sql: str) -> str:
            assert "?" not in sql and not re.search(r"(?<![:\w]):[A-Za-z_]", sql), sql
            return sql.replace("%s", "?").replace("%%", "%")

        def execute(self, sql: str, params: Any = ()) -> None:
            assert isinstance(params, tuple)
            self._cursor.execute(self._sql(sql), params)

        def executemany(self, sql: str, rows: Any) -> None:
            self._cursor.executemany(self._sql(sql), rows)

        def fetchall(self) -> list[Any]:
            return self._cursor.fetchall()

        @property
        def rowcount(self) -> int:
            return self._cursor.rowcount

        @property
        def description(self) -> Any:
            return self._cursor.description

        def close(self) -> None:
            self._cursor.close()

    class Connection:
        def __init__(self, path: str) -> None:
            self._conn = sqlite3.connect(path)

        def cursor(self) -> Cursor:
            return Cursor(self._conn.cursor())

        def commit(self) -> None:
            self._conn.commit()

        def rollback(self) -> None:
            self._conn.rollback()

        def close(self) -> None:
            self._conn.close()

    Connection.__module__ = Cursor.__module__ = "fmtdriver"
    module.Connection = Connection  # type: ignore[attr-defined]
    return module


def test_a_dbapi_driver_with_format_paramstyle(tmp_path: Path, store: logstore.Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    driver = make_format_driver()
    monkeypatch.setitem(sys.modules, "fmtdriver", driver)
    path = str(tmp_path / "fmt.db")
    conn = driver.Connection(path)
    with pytest.raises(UnsupportedConnectionError, match="does not know which SQL"):
        outbox.install(conn)
    db = outbox.adapt(conn, dialect="sqlite")
    assert (db.dialect, db.paramstyle) == ("sqlite", "format")
    outbox.install(db)
    ids = [outbox.add(db, TOPIC, b"%d%%" % i, b"k") for i in range(5)]
    db.commit()
    relay = outbox.Relay(store, outbox.adapt(driver.Connection(path), dialect="sqlite"))
    assert relay.run_until_idle() == 5
    relay.close()
    assert message_ids([r for _, r in topic_records(store)]) == ids
    assert [r.value for r in outbox.rows(db)] == [b"%d%%" % i for i in range(5)]
    conn.close()


@pytest.mark.parametrize("style", ["qmark", "named", "format"])
def test_execute_values_binds_a_values_list_in_chunks(tmp_path: Path, style: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The statement shape the relay's marks use: parameters before and after the VALUES list, rows
    split over several statements; per paramstyle (qmark: the sqlite3 fast path; the others: the
    generic DB-API path)."""
    path = str(tmp_path / "values.db")
    if style == "format":
        driver = make_format_driver()
        monkeypatch.setitem(sys.modules, "fmtdriver", driver)
        db = outbox.adapt(driver.Connection(path), dialect="sqlite")
    else:
        db = outbox.adapt(sqlite3.connect(path), paramstyle=style)
    assert db.paramstyle == style
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
    for i in range(8):
        db.execute("INSERT INTO t (id, a, b) VALUES (:id, 0, '')", {"id": i})
    sql = "UPDATE t SET a = v.column2 + :bump, b = :b FROM (VALUES {rows}) AS v WHERE id = v.column1 AND id <> :skip"
    changed = db.execute_values(sql, {"bump": 1000, "b": "50%", "skip": 3}, [(i, i * 10) for i in range(7)],
                                per_statement=3)
    assert changed == 6  # 7 rows in 3 statements, one skipped
    assert db.query("SELECT id, a, b FROM t ORDER BY id") == [
        *[(i, 1000 + i * 10, "50%") for i in range(3)], (3, 0, ""), *[(i, 1000 + i * 10, "50%") for i in range(4, 7)],
        (7, 0, "")]
    assert db.supports_update_from() == (sqlite3.sqlite_version_info >= (3, 33))
    db.close()


def test_sqlite3_with_the_named_paramstyle(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "named.db")
    db = outbox.adapt(conn, paramstyle="named")
    assert (db.kind, db.paramstyle) == ("dbapi", "named")
    outbox.install(db)
    message_id = outbox.add(db, TOPIC, b"v", b"k", headers=[("a", b"b")])
    db.commit()
    row = outbox.get(conn, message_id)
    assert row is not None and (row.key, row.value, row.headers, row.status) == (b"k", b"v", [("a", b"b")], "pending")
    conn.close()


# -- SQLAlchemy on SQLite -----------------------------------------------------------------------------


def test_sqlalchemy_connection_and_session_on_sqlite(tmp_path: Path, store: logstore.Store) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    orm = pytest.importorskip("sqlalchemy.orm")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    try:
        with engine.connect() as sa_conn:
            outbox.install(sa_conn)
            first = outbox.add(sa_conn, TOPIC, b"one", b"k")
            sa_conn.commit()
            outbox.add(sa_conn, TOPIC, b"rolled back")
            sa_conn.rollback()
        with orm.Session(engine) as session:
            second = outbox.add(session, TOPIC, b"two", b"k")
            session.commit()
            outbox.add(session, TOPIC, b"rolled back too")
            session.rollback()
        with pytest.raises(UnsupportedConnectionError, match="not an Engine"):
            outbox.add(engine, TOPIC, b"v")
        with engine.connect() as relay_conn:
            relay = outbox.Relay(store, relay_conn)
            assert relay.run_until_idle() == 2
            relay.close()
            assert {r.status for r in outbox.rows(relay_conn)} == {"published"}
    finally:
        engine.dispose()
    assert message_ids([r for _, r in topic_records(store)]) == [first, second]


# -- what is refused -----------------------------------------------------------------------------------


class NotAConnection:
    def execute(self, sql: str) -> None:
        raise AssertionError("never called")


@pytest.mark.parametrize("conn", [None, "sqlite:///app.db", 42, NotAConnection(), object()])
def test_unsupported_connections_are_refused_clearly(conn: Any) -> None:
    with pytest.raises(UnsupportedConnectionError) as raised:
        outbox.add(conn, TOPIC, b"v")
    assert "not a database connection the outbox supports" in str(raised.value)
    assert isinstance(raised.value, (OutboxError, InvalidArgumentError))
    with pytest.raises(UnsupportedConnectionError):
        outbox.install(conn)


def test_unknown_drivers_and_bad_overrides_are_refused() -> None:
    unknown = types.ModuleType("mysteriousdb")
    unknown.paramstyle = "qmark"  # type: ignore[attr-defined]

    class Conn:
        def cursor(self) -> None: ...
        def commit(self) -> None: ...
        def rollback(self) -> None: ...

    Conn.__module__ = "mysteriousdb"
    with pytest.raises(UnsupportedConnectionError, match="mysteriousdb"):
        outbox.adapt(Conn())
    with pytest.raises(UnsupportedConnectionError, match="paramstyle"):
        outbox.adapt(Conn(), dialect="sqlite")  # its module is not imported: no paramstyle to read
    memory = sqlite3.connect(":memory:")
    with pytest.raises(InvalidArgumentError):
        outbox.adapt(memory, dialect="oracle")
    with pytest.raises(UnsupportedConnectionError):
        outbox.adapt(memory, paramstyle="dollar")
    memory.close()


def test_bad_input_is_refused_before_the_connection_is_touched() -> None:
    """A bad value is reported as such even with a connection that is no connection."""
    with pytest.raises(InvalidArgumentError, match="value must be bytes"):
        outbox.add(object(), TOPIC, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="encode"):
        outbox.add(object(), TOPIC, b"v", key="text")  # type: ignore[arg-type]


def test_autocommit_connections_are_refused_by_the_relay(tmp_path: Path, store: logstore.Store) -> None:
    class AutoConn:
        autocommit = True

        def __init__(self) -> None:
            self._conn = sqlite3.connect(tmp_path / "auto.db")

        def cursor(self) -> Any:
            return self._conn.cursor()

        def commit(self) -> None:
            self._conn.commit()

        def rollback(self) -> None:
            self._conn.rollback()

        def close(self) -> None:
            self._conn.close()

    conn = AutoConn()
    relay = outbox.Relay(store, outbox.adapt(conn, dialect="sqlite", paramstyle="qmark"))
    with pytest.raises(OutboxError, match="autocommit"):
        relay.run_once()
    relay.close()
    conn.close()


# -- pure helpers -------------------------------------------------------------------------------------


def test_headers_round_trip_and_none_for_empty() -> None:
    headers = [("a", b"\x00\xff"), ("b", None), ("a", b"")]
    assert decode_headers(encode_headers(headers)) == headers
    assert encode_headers(None) is None and encode_headers([]) is None and decode_headers(None) == []
    assert decode_headers(encode_headers(iter([("g", bytearray(b"x"))]))) == [("g", b"x")]


def test_backoff_grows_is_capped_and_jittered() -> None:
    plain = outbox.Backoff(initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.0)
    assert [plain.delay(n) for n in (1, 2, 3, 4, 5, 1000)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = outbox.Backoff(initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.5)
    rng = random.Random(7)
    delays = [jittered.delay(3, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100
    for bad in ({"initial": -1}, {"multiplier": 0.5}, {"jitter": 2}, {"maximum": "1"}):
        with pytest.raises(InvalidArgumentError):
            outbox.Backoff(**bad)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_ddl_is_exported_per_dialect_and_table(dialect: str) -> None:
    statements = outbox.ddl(dialect, "app.events_outbox")
    script = outbox.ddl_script(dialect, "app.events_outbox")
    assert all(s in script for s in statements) and script.count(";\n\n") == len(statements)
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS app.events_outbox (")
    assert any("app.events_outbox_inbox" in s for s in statements)
    assert ("BYTEA" in script) == (dialect == "postgresql")
    assert ("pg_notify('events_outbox_relay'" in script) == (dialect == "postgresql")
    assert not any("_inbox" in s for s in outbox.ddl(dialect, inbox=False))
    with pytest.raises(InvalidArgumentError):
        outbox.ddl("mysql")
    with pytest.raises(InvalidArgumentError):
        outbox.ddl(dialect, "outbox; DROP TABLE users")


def test_install_on_sqlite_is_idempotent_and_creates_the_indexes(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "i.db")
    outbox.install(conn)
    outbox.install(conn)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"outbox", "outbox_inbox", "outbox_unpublished", "outbox_key_order", "outbox_status_updated"} <= names
    conn.close()
