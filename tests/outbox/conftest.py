"""Fixtures of the outbox tests: a store, and the databases the outbox runs on.

``backend`` runs a test on SQLite (always) and on PostgreSQL. The PostgreSQL server is, in order:

1. the one at ``LOGSTORE_TEST_POSTGRES_DSN`` (``.ci/run`` starts one, see ``.ci/postgres``);
2. a throwaway cluster this session starts itself, if ``initdb`` is found (Debian's ``postgresql``
   package: ``/usr/lib/postgresql/<version>/bin``; as root it runs as the ``postgres`` user);
3. otherwise the PostgreSQL tests are skipped, with the reason, unless ``LOGSTORE_REQUIRE_POSTGRES=1``
   (CI), where they fail instead.

Each PostgreSQL test gets tables of its own name (``outbox_<random>``), dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import logstore
from logstore import outbox

REQUIRE_POSTGRES = os.environ.get("LOGSTORE_REQUIRE_POSTGRES", "").strip() == "1"


def unavailable(reason: str) -> None:
    """Skip (or, when PostgreSQL is required, fail) the test: never silently."""
    if REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL is required (LOGSTORE_REQUIRE_POSTGRES=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


# -- a throwaway PostgreSQL cluster ---------------------------------------------------------------


def find_pg_bin() -> str | None:
    """The directory of initdb/pg_ctl: Debian's newest /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


class Cluster:
    """initdb + pg_ctl start in a temp directory, listening on 127.0.0.1 only, trust auth."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.dir = tempfile.mkdtemp(prefix="logstore-pg-test-")
        self.as_user: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # initdb and postgres refuse to run as root
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root and runuser is missing")
            subprocess.run(["id", "postgres"], check=True, capture_output=True)
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = os.path.join(self.dir, "data")
        self.started = False

    def run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> str:
        self.run(os.path.join(self.bin_dir, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                   "-c fsync=off -c max_connections=50")
        self.run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                 "-w", "-t", "60", "-o", options, "start")
        self.started = True
        self.run(os.path.join(self.bin_dir, "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 "logstore_test")
        return f"postgresql://postgres@127.0.0.1:{self.port}/logstore_test"

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self.as_user, os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    try:
        import psycopg
    except ImportError as e:
        unavailable(f"psycopg is not importable ({e}); pip install '.[test]'")
    dsn = os.environ.get("LOGSTORE_TEST_POSTGRES_DSN", "").strip()
    cluster: Cluster | None = None
    if not dsn:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            unavailable("no server: LOGSTORE_TEST_POSTGRES_DSN is not set and no initdb was found "
                        "(apt-get install postgresql, or set the DSN)")
        assert bin_dir is not None
        cluster = Cluster(bin_dir)
        try:
            dsn = cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            cluster.stop()
            unavailable(f"a throwaway cluster with {bin_dir}/initdb could not be started: {e}")
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as e:
        if cluster is not None:
            cluster.stop()
        unavailable(f"cannot connect to {dsn}: {e}")
    yield dsn
    if cluster is not None:
        cluster.stop()


# -- the store and the backends -------------------------------------------------------------------

TOPIC = "orders"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[logstore.Store]:
    s = logstore.open(tmp_path / "data", cleaner=False)
    s.create_topic(TOPIC, 3)
    yield s
    s.close()


@dataclass
class Backend:
    """One database for a test: ``connect()`` opens a connection (closed at teardown), ``table`` is
    the outbox table, installed."""

    name: str
    factory: Callable[[], Any]
    table: str
    url: str
    """``sqlite:<path>`` or ``postgresql:<dsn>``: how a child process connects (relay_crash_child.py)."""
    opened: list[Any] = field(default_factory=list)

    def connect(self) -> Any:
        conn = self.factory()
        self.opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.opened:
            try:
                conn.close()
            except Exception:  # closing is best effort at teardown
                pass
        self.opened.clear()


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "app.db"
    # a long busy timeout: the tests' writers and relays share the file
    backend = Backend("sqlite", lambda: sqlite3.connect(path, timeout=30), "outbox", f"sqlite:{path}")
    with backend.connect() as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        outbox.install(conn)
    return backend


def _postgres_backend(dsn: str) -> Backend:
    import psycopg

    table = f"outbox_{uuid.uuid4().hex[:10]}"
    backend = Backend("postgresql", lambda: psycopg.connect(dsn), table, f"postgresql:{dsn}")
    outbox.install(backend.connect(), table=table)
    return backend


def _drop_postgres(dsn: str, table: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_inbox CASCADE")
        conn.execute(f"DROP FUNCTION IF EXISTS {table}_notify()")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = _sqlite_backend(tmp_path)
        yield made
        made.close_all()
        return
    dsn = request.getfixturevalue("postgres_dsn")
    made = _postgres_backend(dsn)
    yield made
    made.close_all()
    _drop_postgres(dsn, made.table)


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[Backend]:
    made = _postgres_backend(postgres_dsn)
    yield made
    made.close_all()
    _drop_postgres(postgres_dsn, made.table)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    made = _sqlite_backend(tmp_path)
    yield made
    made.close_all()


def topic_records(store: logstore.Store, topic: str = TOPIC) -> list[tuple[int, Any]]:
    """Every record of ``topic`` as (partition, record), partition by partition, in offset order."""
    out: list[tuple[int, Any]] = []
    for tp in store.topic_partitions([topic]):
        plog = store.partition_log(tp)
        offset = plog.log_start_offset
        while offset < plog.high_watermark:
            view = plog.read(offset, 1 << 20, plog.high_watermark)
            out.extend((tp.partition, record) for record in view)
            offset = view.next_offset
    return out


def message_ids(records: list[Any]) -> list[str]:
    ids = []
    for record in records:
        found = dict(record.headers).get(outbox.MESSAGE_ID_HEADER)
        assert found is not None, f"record {record.offset} has no message id header"
        ids.append(found.decode())
    return ids
