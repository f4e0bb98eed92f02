"""The scheduler: the outbox's periodic housekeeping, beside the relay.

Each cycle (:meth:`Scheduler.run_once`):

1. **expired leases**: an unpublished row whose lease expired belongs to a relay that died or
   stalled between claim and mark. It goes to ``failed`` with a backoff (its next attempt is a
   retry, and a record published before the crash is recognised by its message id and not appended
   again), or to ``dead`` once it has used ``max_attempts`` claims, which stops a row that kills
   every relay from doing so forever. The error says which relay's lease expired.
2. **stuck rows**: ``pending`` rows older than ``stuck_after`` seconds (a relay that is not running,
   missed wake-ups, a key blocked behind a failing row). They are logged and retried: the given relay
   is woken if it runs in the background, or run here until nothing is due.
3. **cleanup** (with ``retention``): :func:`logstore.outbox.cleanup`.

Give it its own connection (``conn`` or ``connect``), as for the relay. ``start()`` runs it every
``interval`` seconds in a daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logstore.errors import InvalidArgumentError
from logstore.outbox.api import now_ms
from logstore.outbox.backoff import DEFAULT_MAX_ATTEMPTS, Backoff, check_max_attempts
from logstore.outbox.cleanup import CleanupReport, Retention, cleanup
from logstore.outbox.dialects import Database, ThreadDatabases
from logstore.outbox.relay import Relay
from logstore.outbox.schema import DEFAULT_TABLE, check_table, statements

log = logging.getLogger("logstore.outbox")


@dataclass(frozen=True)
class SchedulerReport:
    """What one scheduler cycle found and did."""

    requeued: int = 0
    """Rows whose lease had expired, back to ``failed`` with a backoff."""
    dead: int = 0
    """Rows whose lease expired with no attempts left, now ``dead``."""
    stuck: int = 0
    """``pending`` rows older than ``stuck_after`` at the start of the cycle."""
    oldest_stuck_age: float | None = None
    retried: int = 0
    """Rows the scheduler's own relay run claimed (0 when it only woke a running relay)."""
    cleanup: CleanupReport | None = None


class Scheduler:
    """Re-queues rows of dead relays, retries stuck rows, and cleans up (see the module doc)."""

    def __init__(self, conn: Any = None, *, connect: Callable[[], Any] | None = None, table: str = DEFAULT_TABLE,
                 relay: Relay | None = None, stuck_after: float = 60.0, max_attempts: int | None = None,
                 backoff: Backoff | None = None, retention: Retention | None = None, interval: float = 5.0,
                 limit: int = 1000) -> None:
        if (conn is None) == (connect is None):
            raise InvalidArgumentError("give the scheduler either conn= (a connection) or connect= (a factory)")
        for name, value in (("stuck_after", stuck_after), ("interval", interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative number, not {value!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")
        self.table = check_table(table)
        self.relay = relay
        self.stuck_after = float(stuck_after)
        if max_attempts is None:
            max_attempts = relay.max_attempts if relay is not None else DEFAULT_MAX_ATTEMPTS
        self.max_attempts = check_max_attempts(max_attempts)
        self.backoff = backoff or (relay.backoff if relay is not None else Backoff())
        self.retention = retention
        self.interval = float(interval)
        self.limit = limit
        self._databases = ThreadDatabases(conn, connect)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _database(self) -> Database:
        return self._databases.get()

    def run_once(self) -> SchedulerReport:
        """One housekeeping cycle (see the module doc)."""
        db = self._database()
        requeued, dead = self._expire_leases(db)
        stuck, oldest = self._stuck(db)
        retried = 0
        if stuck and self.relay is not None:
            log.warning("outbox %s: %d row(s) pending for over %.0f s (oldest %.1f s): retrying", self.table, stuck,
                        self.stuck_after, oldest or 0.0)
            if self.relay.running:
                self.relay.wake()
            else:
                retried = self.relay.run_until_idle()
        elif stuck:
            log.warning("outbox %s: %d row(s) pending for over %.0f s (oldest %.1f s) and no relay to retry them",
                        self.table, stuck, self.stuck_after, oldest or 0.0)
        cleaned = None
        if self.retention is not None:
            cleaned = cleanup(db, self.retention, table=self.table)
        return SchedulerReport(requeued=requeued, dead=dead, stuck=stuck, oldest_stuck_age=oldest, retried=retried,
                               cleanup=cleaned)

    def _expire_leases(self, db: Database) -> tuple[int, int]:
        sql = statements(db.dialect, self.table)
        now = now_ms()
        db.begin_write()
        try:
            expired = db.query(sql.expired_leases, {"now": now, "max_attempts": self.max_attempts,
                                                    "limit": self.limit})
            updates = []
            dead = 0
            for row_id, attempts, owner, _expires in expired:
                if attempts >= self.max_attempts:
                    status = "dead"
                    dead += 1
                    error = (f"out of attempts: {attempts} claim(s), the last by relay {owner or '?'} whose lease "
                             "expired before it marked the row (the relay died or stalled)")
                else:
                    status = "failed"
                    error = (f"the lease of relay {owner} expired before it marked the row "
                             "(the relay died or stalled); retrying")
                updates.append({"id": row_id, "status": status, "error": error, "now": now,
                                "next_attempt_at": now + int(self.backoff.delay(max(1, attempts)) * 1000)})
            db.executemany(sql.requeue_expired, updates)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        for update in updates:
            if update["status"] == "dead":
                log.warning("outbox %s: row %s is dead: %s", self.table, update["id"], update["error"])
        return len(updates) - dead, dead

    def _stuck(self, db: Database) -> tuple[int, float | None]:
        now = now_ms()
        found = db.query(statements(db.dialect, self.table).stuck,
                         {"before": now - int(self.stuck_after * 1000), "now": now})
        db.commit()  # end the read transaction: a long-lived one would pin an old snapshot
        count, oldest = found[0] if found else (0, None)
        return int(count or 0), None if oldest is None else (now - int(oldest)) / 1000.0

    # -- background thread ----------------------------------------------------------------------

    def start(self) -> Scheduler:
        """Run a cycle every ``interval`` seconds in a daemon thread until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="logstore-outbox-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        self.stop()
        self._databases.close_current()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.run_once()
                except Exception:
                    log.exception("outbox scheduler (%s): a cycle failed", self.table)
                    self._databases.close_current()  # replace a possibly broken connection
                self._stopping.wait(self.interval)
        finally:
            self._databases.close_current()


__all__ = ["Scheduler", "SchedulerReport"]
