"""The transactional outbox: publish to logstore topics exactly when your database transaction commits.

::

    from logstore import outbox

    outbox.install(conn)                                  # once: tables and indexes (or outbox.ddl(...))
    with conn:                                            # your transaction
        conn.execute("UPDATE accounts SET ...")
        outbox.add(conn, "payments", b'{"id": 7}', key=b"account-42")
    relay = outbox.Relay(store, connect=lambda: sqlite3.connect("app.db")).start()

``add`` writes a row in the caller's transaction; the :class:`Relay` publishes committed rows (per-key
order, exactly one record per message even across relay crashes), the :class:`Scheduler` retries and
cleans up, :mod:`logstore.outbox.inbox` processes each message once per consumer group. Works on
``sqlite3``, DB-API 2 connections (psycopg, ...) and SQLAlchemy ``Connection``/``Session``, on SQLite
and PostgreSQL. See docs/outbox.md.
"""

from logstore.broker.dedup import MESSAGE_ID_HEADER, DedupWindow
from logstore.outbox import inbox
from logstore.outbox.api import OutboxRow, add, get, install, mark_done, mark_received, requeue, rows
from logstore.outbox.backoff import Backoff
from logstore.outbox.cleanup import CleanupReport, Retention, cleanup
from logstore.outbox.dialects import Database, adapt
from logstore.outbox.metrics import OutboxMetrics, collect as metrics
from logstore.outbox.relay import Relay, RelayStats
from logstore.outbox.scheduler import Scheduler, SchedulerReport
from logstore.outbox.schema import STATUSES, ddl, ddl_script

__all__ = [
    "MESSAGE_ID_HEADER",
    "STATUSES",
    "Backoff",
    "CleanupReport",
    "Database",
    "DedupWindow",
    "OutboxMetrics",
    "OutboxRow",
    "Relay",
    "RelayStats",
    "Retention",
    "Scheduler",
    "SchedulerReport",
    "adapt",
    "add",
    "cleanup",
    "ddl",
    "ddl_script",
    "get",
    "inbox",
    "install",
    "mark_done",
    "mark_received",
    "metrics",
    "requeue",
    "rows",
]
