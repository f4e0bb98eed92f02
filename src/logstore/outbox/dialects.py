"""The outbox's view of the application's database connection: one small interface over the stdlib's
``sqlite3``, any DB-API 2 connection and SQLAlchemy ``Connection``/``Session``.

:func:`adapt` recognises the connection and returns a :class:`Database`: the SQL dialect (SQLite or
PostgreSQL, the two whose SQL the outbox speaks) and the driver's paramstyle (from its DB-API module's
``paramstyle``, or SQLAlchemy's dialect). The outbox's statements are written with ``:name``
parameters and rewritten once per paramstyle.

DB-API drivers are recognised by their module: ``sqlite3``, ``pysqlite3``, ``sqlean`` (SQLite);
``psycopg`` (3), ``psycopg2``, ``pg8000`` and ``pgdb`` (PostgreSQL). Another driver for one of these
databases works with ``adapt(conn, dialect="postgresql")``; pass the result wherever the outbox
takes a connection. SQLAlchemy is optional and never imported unless a SQLAlchemy object is passed.
"""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from logstore.errors import OutboxError, UnsupportedConnectionError
from logstore.outbox.schema import ROWS, Dialect, check_dialect

log = logging.getLogger("logstore.outbox")

PARAMSTYLES = ("qmark", "numeric", "named", "format", "pyformat")

_DRIVER_DIALECTS: dict[str, Dialect] = {
    "sqlite3": "sqlite",
    "pysqlite3": "sqlite",
    "pysqlite2": "sqlite",
    "sqlean": "sqlite",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "psycopg2cffi": "postgresql",
    "pg8000": "postgresql",
    "pgdb": "postgresql",
}

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_COMPILED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}

Params = Mapping[str, Any]
Row = tuple[Any, ...]

VALUES_PER_STATEMENT = 300
"""Rows per statement of :meth:`Database.execute_values`: 3 columns of 300 rows and a few more
parameters stay under 999, the variable limit of SQLite builds before 3.32."""


def compile_sql(sql: str, paramstyle: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` written with ``:name`` parameters, rewritten for ``paramstyle``, and the parameter
    names in the order a positional style binds them (cached)."""
    key = (sql, paramstyle)
    found = _COMPILED.get(key)
    if found is not None:
        return found
    if paramstyle not in PARAMSTYLES:
        raise UnsupportedConnectionError(f"unknown DB-API paramstyle {paramstyle!r}; known: {', '.join(PARAMSTYLES)}")
    names: list[str] = []
    text = sql.replace("%", "%%") if paramstyle in ("format", "pyformat") else sql

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        names.append(name)
        if paramstyle == "qmark":
            return "?"
        if paramstyle == "numeric":
            return f":{len(names)}"
        if paramstyle == "named":
            return f":{name}"
        if paramstyle == "format":
            return "%s"
        return f"%({name})s"

    compiled = (_PARAM.sub(placeholder, text), tuple(names))
    _COMPILED[key] = compiled
    return compiled


def _bind(names: tuple[str, ...], paramstyle: str, params: Params) -> Any:
    if paramstyle in ("named", "pyformat"):
        return params
    return tuple(params[n] for n in names)


class Database:
    """A connection the outbox writes through: ``query``/``execute``/``executemany`` with ``:name``
    parameters, ``commit``/``rollback``, and ``begin_write`` for the transactions the outbox owns
    (relay, scheduler). Get one with :func:`adapt`."""

    kind = "dbapi"

    def __init__(self, connection: Any, dialect: Dialect, paramstyle: str) -> None:
        self.connection = connection
        self.dialect: Dialect = dialect
        self.paramstyle = paramstyle
        self.driver = type(connection).__module__.split(".", 1)[0]
        self._update_from: bool | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.driver}, dialect={self.dialect!r}, paramstyle={self.paramstyle!r})"

    def _run(self, sql: str, params: Params | None) -> tuple[Any, Any]:
        """(cursor, result) of one statement."""
        text, names = compile_sql(sql, self.paramstyle)
        cursor = self.connection.cursor()
        if params is None:
            cursor.execute(text)
        else:
            cursor.execute(text, _bind(names, self.paramstyle, params))
        return cursor, cursor

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        """The rows of a statement that returns rows (bytea/BLOB values as ``bytes``)."""
        cursor, _ = self._run(sql, params)
        try:
            return [tuple(_plain(v) for v in row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run a statement; returns its row count."""
        cursor, _ = self._run(sql, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def executemany(self, sql: str, rows: Sequence[Params]) -> int:
        """Run a statement once per parameter set; returns the summed row count where the driver
        reports one for ``executemany`` (the stdlib's sqlite3), else -1."""
        if not rows:
            return 0
        text, names = compile_sql(sql, self.paramstyle)
        cursor = self.connection.cursor()
        try:
            cursor.executemany(text, [_bind(names, self.paramstyle, r) for r in rows])
        finally:
            cursor.close()
        return -1

    def execute_values(self, sql: str, params: Params, rows: Sequence[Sequence[Any]],
                       per_statement: int = VALUES_PER_STATEMENT) -> int:
        """Run ``sql``, which holds :data:`~logstore.outbox.schema.ROWS` once (where a VALUES list
        goes), for ``rows`` (tuples of equal length): one statement per ``per_statement`` rows, with
        ``ROWS`` replaced by that many parameter tuples; ``params`` are the statement's named
        parameters. Returns the summed row count (-1 if the driver does not report it)."""
        total = 0
        width = len(rows[0]) if rows else 0
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            bound = dict(params)
            tuples = []
            for i, row in enumerate(chunk):
                names = [f"values_{i}_{j}" for j in range(width)]
                bound.update(zip(names, row))
                tuples.append("(" + ", ".join(f":{name}" for name in names) + ")")
            count = self.execute(sql.replace(ROWS, ", ".join(tuples)), bound)
            total = -1 if total < 0 or count < 0 else total + count
        return total

    def supports_update_from(self) -> bool:
        """Whether the database runs ``UPDATE ... FROM`` (PostgreSQL; SQLite from 3.33)."""
        if self._update_from is None:
            self._update_from = (self.dialect == "postgresql"
                                 or _version(self.query("SELECT sqlite_version()")[0][0]) >= (3, 33))
        return self._update_from

    def begin_write(self) -> None:
        """Start a transaction that will write (DB-API drivers start one implicitly)."""
        if getattr(self.connection, "autocommit", False) is True:
            raise OutboxError(
                f"the connection ({self.driver}) is in autocommit mode: the outbox's relay and scheduler need "
                "transactions (turn autocommit off on the connection you hand them)")

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def close(self) -> None:
        self.connection.close()


class SQLiteDatabase(Database):
    """The stdlib's ``sqlite3.Connection`` (statements through ``Connection.execute``)."""

    kind = "sqlite3"

    def _run(self, sql: str, params: Params | None) -> tuple[Any, Any]:
        text, names = compile_sql(sql, "qmark")
        cursor = self.connection.execute(text, () if params is None else tuple(params[n] for n in names))
        return cursor, cursor

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        cursor, _ = self._run(sql, params)
        return cursor.fetchall()  # type: ignore[no-any-return]  # sqlite3 rows are tuples of plain values

    def execute(self, sql: str, params: Params | None = None) -> int:
        cursor, _ = self._run(sql, params)
        return int(cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Params]) -> int:
        if not rows:
            return 0
        text, names = compile_sql(sql, "qmark")
        return int(self.connection.executemany(text, [tuple(r[n] for n in names) for r in rows]).rowcount)

    def execute_values(self, sql: str, params: Params, rows: Sequence[Sequence[Any]],
                       per_statement: int = VALUES_PER_STATEMENT) -> int:
        # positional: the parameters before ROWS, the rows' values flattened, the parameters after
        head, tail = sql.split(ROWS)
        head_text, head_names = compile_sql(head, "qmark")
        tail_text, tail_names = compile_sql(tail, "qmark")
        before = [params[n] for n in head_names]
        after = [params[n] for n in tail_names]
        placeholder = "(" + ", ".join("?" * len(rows[0])) + ")" if rows else ""
        total = 0
        execute = self.connection.execute
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            text = head_text + ", ".join([placeholder] * len(chunk)) + tail_text
            total += execute(text, [*before, *itertools.chain.from_iterable(chunk), *after]).rowcount
        return total

    def supports_update_from(self) -> bool:
        return sqlite3.sqlite_version_info >= (3, 33)

    def begin_write(self) -> None:
        # take the write lock up front: a deferred transaction that reads, then writes, can fail to
        # upgrade with SQLITE_BUSY when another connection wrote meanwhile
        if not self.connection.in_transaction:
            self.connection.execute("BEGIN IMMEDIATE")


class SQLAlchemyDatabase(Database):
    """A SQLAlchemy ``Connection`` or ``Session`` (its connection), statements through
    ``exec_driver_sql`` in the driver's paramstyle."""

    kind = "sqlalchemy"

    def __init__(self, connection: Any, dialect: Dialect, paramstyle: str, session: Any = None) -> None:
        super().__init__(connection, dialect, paramstyle)
        self.driver = "sqlalchemy"
        self.session = session

    def _conn(self) -> Any:
        # a Session's connection is the one of its current transaction (begun on demand)
        return self.session.connection() if self.session is not None else self.connection

    def _run(self, sql: str, params: Params | None) -> tuple[Any, Any]:
        text, names = compile_sql(sql, self.paramstyle)
        conn = self._conn()
        if params is None:
            result = conn.exec_driver_sql(text)
        else:
            result = conn.exec_driver_sql(text, _bind(names, self.paramstyle, params))
        return result, result

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        result, _ = self._run(sql, params)
        return [tuple(_plain(v) for v in row) for row in result.fetchall()]

    def execute(self, sql: str, params: Params | None = None) -> int:
        result, _ = self._run(sql, params)
        return int(result.rowcount)

    def executemany(self, sql: str, rows: Sequence[Params]) -> int:
        if rows:
            text, names = compile_sql(sql, self.paramstyle)
            self._conn().exec_driver_sql(text, [_bind(names, self.paramstyle, r) for r in rows])
        return -1 if rows else 0

    def begin_write(self) -> None:
        pass  # SQLAlchemy 2 begins a transaction on the first statement ("autobegin")

    def commit(self) -> None:
        (self.session or self.connection).commit()

    def rollback(self) -> None:
        (self.session or self.connection).rollback()

    def close(self) -> None:
        (self.session or self.connection).close()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _plain(value: Any) -> Any:
    """bytea/BLOB values as bytes (psycopg2 and some drivers hand out memoryview)."""
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value


def _describe(conn: object) -> str:
    t = type(conn)
    return f"{t.__module__}.{t.__qualname__}"


def _sqlalchemy(conn: Any, dialect: str | None, paramstyle: str | None) -> Database:
    cls_names = {c.__name__ for c in type(conn).__mro__}
    session = None
    if "Engine" in cls_names:
        raise UnsupportedConnectionError(
            "the outbox writes in your transaction, so it takes a SQLAlchemy Connection or Session, not an "
            "Engine: pass engine.connect() (or the connection of `with engine.begin() as conn`)")
    if {"AsyncConnection", "AsyncSession", "async_scoped_session"} & cls_names:
        raise UnsupportedConnectionError(
            f"{_describe(conn)} is asynchronous; the outbox runs on synchronous connections (use the sync Session, "
            "or AsyncSession.run_sync)")
    if "Session" in cls_names or "scoped_session" in cls_names:
        session = conn
        bind = conn.get_bind()
        sa_dialect = bind.dialect
    elif "Connection" in cls_names:
        sa_dialect = conn.dialect
    else:
        raise UnsupportedConnectionError(
            f"{_describe(conn)} is not a SQLAlchemy Connection or Session, which are the SQLAlchemy objects "
            "the outbox takes")
    name = dialect or sa_dialect.name
    if name not in ("sqlite", "postgresql"):
        raise UnsupportedConnectionError(
            f"SQLAlchemy dialect {sa_dialect.name!r}: the outbox speaks SQLite and PostgreSQL")
    style = paramstyle or getattr(getattr(sa_dialect, "dbapi", None), "paramstyle", None) or sa_dialect.paramstyle
    return SQLAlchemyDatabase(conn, check_dialect(name), style, session=session)


class ThreadDatabases:
    """The database a relay or scheduler works on: the connection it was given (used by one
    thread), or one connection per thread opened by ``connect``."""

    def __init__(self, conn: Any, connect: Callable[[], Any] | None) -> None:
        self._conn = None if conn is None else adapt(conn)
        self._connect = connect
        self._local = threading.local()

    def get(self) -> Database:
        if self._conn is not None:
            return self._conn
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            assert self._connect is not None
            db = self._local.db = adapt(self._connect())
        return db

    def close_current(self) -> None:
        """Close this thread's own connection (best effort; a given connection stays open); the
        next :meth:`get` opens a new one."""
        db: Database | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            try:
                db.close()
            except Exception:  # closing is best effort
                log.debug("closing an outbox connection failed", exc_info=True)


def adapt(conn: Any, *, dialect: str | None = None, paramstyle: str | None = None) -> Database:
    """The :class:`Database` for ``conn``: a ``sqlite3.Connection``, a DB-API 2 connection of a known
    driver, a SQLAlchemy ``Connection`` or ``Session``, or a Database (returned as is). ``dialect``
    ("sqlite" or "postgresql") and ``paramstyle`` override what is detected, for drivers the outbox
    does not know. Raises UnsupportedConnectionError for anything else."""
    if isinstance(conn, Database):
        return conn
    if dialect is not None:
        check_dialect(dialect)
    if paramstyle is not None and paramstyle not in PARAMSTYLES:
        raise UnsupportedConnectionError(f"unknown DB-API paramstyle {paramstyle!r}; known: {', '.join(PARAMSTYLES)}")
    if isinstance(conn, sqlite3.Connection) and dialect in (None, "sqlite") and paramstyle in (None, "qmark"):
        return SQLiteDatabase(conn, "sqlite", "qmark")
    root = type(conn).__module__.split(".", 1)[0]
    if root == "sqlalchemy":
        return _sqlalchemy(conn, dialect, paramstyle)
    if not all(callable(getattr(conn, m, None)) for m in ("cursor", "commit", "rollback")):
        raise UnsupportedConnectionError(
            f"{_describe(conn)} is not a database connection the outbox supports: pass a sqlite3.Connection, a "
            "DB-API 2 connection (psycopg, psycopg2, pg8000, ...) or a SQLAlchemy Connection or Session")
    found_dialect = dialect or _DRIVER_DIALECTS.get(root)
    if found_dialect is None:
        raise UnsupportedConnectionError(
            f"{_describe(conn)}: the outbox does not know which SQL the {root!r} driver speaks; it supports SQLite "
            f"and PostgreSQL (drivers {', '.join(sorted(_DRIVER_DIALECTS))}); for another driver of those, use "
            "outbox.adapt(conn, dialect='postgresql' or 'sqlite')")
    module = sys.modules.get(root)
    style = paramstyle or getattr(module, "paramstyle", None)
    if style not in PARAMSTYLES:
        raise UnsupportedConnectionError(
            f"{_describe(conn)}: its module {root!r} declares no DB-API paramstyle; pass adapt(conn, paramstyle=...)")
    assert isinstance(style, str)
    return Database(conn, check_dialect(found_dialect), style)


def rows_as_dicts(columns: Iterable[str], rows: Iterable[Row]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, row)) for row in rows]


__all__ = ["PARAMSTYLES", "Database", "SQLAlchemyDatabase", "SQLiteDatabase", "adapt", "compile_sql"]
