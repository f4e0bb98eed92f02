"""The relay: claims due outbox rows under a lease, publishes them to the store's topics, marks them.

One cycle (:meth:`Relay.run_once`):

1. **claim** (one transaction): up to ``batch_size`` due rows, in id order, get this claim's lease
   (``lease_owner``, ``lease_expires_at``) and one more attempt. On PostgreSQL the scan locks rows
   with ``FOR UPDATE SKIP LOCKED``, so several relays share the work; on SQLite the claim is a
   single ``UPDATE ... RETURNING`` under the database's write lock (one relay at a time does work;
   a second one, or a relay restarted after a crash, takes over rows whose lease has expired).
2. **publish**: each row as :func:`logstore.broker.dedup.publish_once` does it, with its message id
   as the idempotency key: a row published before a crash (but not marked) is found in the topic's
   message-id index and not appended again. Then the touched partitions' buffers are handed to the
   OS (a process crash cannot lose them) or, with ``sync=True``, fsynced.
3. **mark** (one transaction): published rows get ``published`` with partition and offset; failed
   ones ``failed`` with a backoff, or ``dead`` after ``max_attempts`` (or at once for an error no
   retry fixes: a record the log refuses); rows not attempted are released.

Per-key order (``ordering="key"``, the default): a keyed row is claimed only while the first
unpublished row of its (topic, key) is claimable too, so a batch carries a key's rows in id order and
a key's later rows wait while an earlier one is leased elsewhere or backing off; when one fails, the
rest of its key in the batch are released untried. ``dead`` rows no longer block their key.
Rows without a key are not ordered among themselves (as in Kafka, where they spread over
partitions). ``ordering="none"`` drops the per-key checks for throughput.

Waking: ``wake()`` (or ``outbox.add(..., notify=relay)``) makes a running relay look at once and then
re-poll quickly for ``wake_grace`` seconds (a wake sent before the commit still finds the row soon);
otherwise it polls every ``poll_interval``. On PostgreSQL, with ``connect=``, it also LISTENs on the
insert trigger's channel (psycopg 3.2+), which fires at commit.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from logstore.broker.dedup import DedupWindow, MessageIdIndex
from logstore.errors import InvalidArgumentError, LogClosedError
from logstore.outbox.api import decode_headers, now_ms
from logstore.outbox.backoff import DEFAULT_MAX_ATTEMPTS, Backoff, check_max_attempts
from logstore.outbox.dialects import Database, adapt
from logstore.outbox.schema import DEFAULT_TABLE, check_table, notify_channel, statements

if TYPE_CHECKING:
    from logstore.broker.store import Store
    from logstore.client.producer import Producer

log = logging.getLogger("logstore.outbox")

Ordering = Literal["key", "none"]
STEPS = ("claimed", "published", "flushed", "marked")
"""Where ``on_step`` is called: after the claim committed, after each record's publish, after the
partitions were flushed, and after the marks were written but before their commit."""

_FAST_POLL = 0.0005


@dataclass
class RelayStats:
    """Counters of one relay since it was created."""

    cycles: int = 0
    """Calls of ``run_once`` (with or without rows)."""
    batches: int = 0
    """Cycles that claimed rows."""
    published: int = 0
    duplicates: int = 0
    """Rows whose message id the topic already held (published before a crash, not marked)."""
    failed: int = 0
    dead: int = 0
    released: int = 0
    lost_leases: int = 0
    """Marks that found the row no longer under this claim's lease (another relay took it over)."""


@dataclass(frozen=True)
class _Claimed:
    id: int
    message_id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: str | None
    attempts: int


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(f"{name} must be a positive number, not {value!r}")
    return float(value)


class Relay:
    """Publishes outbox rows to ``store``. Give it its own connection: ``conn`` (used as is, from the
    thread that calls it) or ``connect`` (a zero-argument factory; the relay opens a connection per
    thread that uses it, and one more to LISTEN on PostgreSQL).

    ``run_once()`` does one claim-publish-mark cycle; ``run_until_idle()`` repeats it while rows are
    due; ``start()`` runs it in a background thread until ``stop()``/``close()``.
    """

    def __init__(self, store: Store, conn: Any = None, *, connect: Callable[[], Any] | None = None,
                 table: str = DEFAULT_TABLE, batch_size: int = 500, ordering: Ordering = "key",
                 lease_seconds: float = 30.0, poll_interval: float = 0.2, wake_grace: float = 0.1,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff: Backoff | None = None, sync: bool = False,
                 owner: str | None = None, dedup: DedupWindow | None = None, listen: bool = True,
                 on_step: Callable[[str], None] | None = None) -> None:
        if (conn is None) == (connect is None):
            raise InvalidArgumentError("give the relay either conn= (a connection) or connect= (a factory), not both")
        if connect is not None and not callable(connect):
            raise InvalidArgumentError("connect must be a callable returning a new connection")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, not {batch_size!r}")
        if ordering not in ("key", "none"):
            raise InvalidArgumentError(f"ordering must be 'key' or 'none', not {ordering!r}")
        self.store = store
        self.table = check_table(table)
        self.batch_size = batch_size
        self.ordering: Ordering = ordering
        self.lease_seconds = _positive("lease_seconds", lease_seconds)
        self.poll_interval = _positive("poll_interval", poll_interval)
        self.wake_grace = _positive("wake_grace", wake_grace, allow_zero=True)
        self.max_attempts = check_max_attempts(max_attempts)
        self.backoff = backoff or Backoff()
        self.sync = bool(sync)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.dedup = dedup
        self.listen = listen
        self.stats = RelayStats()
        self._on_step = on_step
        self._conn = None if conn is None else adapt(conn)
        self._connect = connect
        self._local = threading.local()
        self._claims = itertools.count(1)
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._grace_until = 0.0
        self._fast_delay = _FAST_POLL
        self._closed = False
        self.listening = threading.Event()
        """Set while the background relay LISTENs for PostgreSQL's insert notifications."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.running else "idle"
        return f"Relay(owner={self.owner!r}, table={self.table!r}, {state})"

    # -- connections and producer ----------------------------------------------------------------

    def _database(self) -> Database:
        if self._conn is not None:
            return self._conn
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            assert self._connect is not None
            db = self._local.db = adapt(self._connect())
        return db

    def _close_thread_database(self) -> None:
        db: Database | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            try:
                db.close()
            except Exception:  # closing is best effort
                log.debug("closing the relay's connection failed", exc_info=True)

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self.store.producer()
            return self._producer

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    # -- one cycle ------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, publish and mark one batch; returns the number of rows claimed (0: nothing due)."""
        if self._closed:
            raise LogClosedError("the relay is closed")
        self._get_producer()  # a closed store fails here, before rows are claimed
        db = self._database()
        self.stats.cycles += 1
        claim = f"{self.owner}/{next(self._claims)}"
        rows = self._claim(db, claim)
        if not rows:
            return 0
        self.stats.batches += 1
        self._step("claimed")
        published, failures, released, error = self._publish(rows)
        self._flush(published)
        self._step("flushed")
        self._mark(db, claim, published, failures, released)
        if error is not None:
            raise error
        return len(rows)

    def run_until_idle(self, max_batches: int | None = None) -> int:
        """``run_once`` until nothing is due (or ``max_batches``); returns the rows claimed."""
        total = 0
        for _ in itertools.count() if max_batches is None else range(max_batches):
            claimed = self.run_once()
            total += claimed
            if claimed == 0:
                break
        return total

    def _claim(self, db: Database, claim: str) -> list[_Claimed]:
        sql = statements(db.dialect, self.table)
        now = now_ms()
        params = {"claim": claim, "lease_until": now + int(self.lease_seconds * 1000), "now": now,
                  "max_attempts": self.max_attempts, "limit": self.batch_size}
        db.begin_write()
        try:
            found = db.query(sql.claim_keyed if self.ordering == "key" else sql.claim_unordered, params)
            rows = sorted((_Claimed(*r) for r in found), key=lambda r: r.id)
            if rows and self.ordering == "key" and db.dialect == "postgresql":
                rows = self._recheck_order(db, claim, rows)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return rows

    def _recheck_order(self, db: Database, claim: str, rows: list[_Claimed]) -> list[_Claimed]:
        """PostgreSQL: keep a claimed keyed row only if every unpublished row of its key before it is
        in this claim too. The claim's scan ran on one snapshot and skipped rows other relays had
        locked; this fresh statement sees their committed claims (and ours)."""
        keyed = [r.id for r in rows if r.key is not None]
        if not keyed:
            return rows
        blocked: set[tuple[str, bytes]] = set()
        drop: set[int] = set()
        for row_id, topic, key, owner in db.query(statements(db.dialect, self.table).claimed_keys_unpublished,
                                                  {"claim": claim, "max_id": max(keyed)}):
            key_id = (topic, bytes(key))
            if owner != claim:
                blocked.add(key_id)
            elif key_id in blocked:
                drop.add(row_id)
        if drop:
            db.executemany(statements(db.dialect, self.table).release,
                           [{"id": row_id, "claim": claim} for row_id in sorted(drop)])
            self.stats.released += len(drop)
        return [r for r in rows if r.id not in drop]

    def _publish(self, rows: list[_Claimed]) -> tuple[list[tuple[_Claimed, int, int]], list[tuple[_Claimed, Exception]],
                                                      list[int], LogClosedError | None]:
        producer = self._get_producer()
        published: list[tuple[_Claimed, int, int]] = []
        failures: list[tuple[_Claimed, Exception]] = []
        released: list[int] = []
        blocked: set[tuple[str, bytes]] = set()
        indexes: dict[str, MessageIdIndex] = {}
        ordered = self.ordering == "key"
        for i, row in enumerate(rows):
            key_id = (row.topic, row.key) if ordered and row.key is not None else None
            if key_id is not None and key_id in blocked:
                released.append(row.id)
                continue
            try:
                index = indexes.get(row.topic)
                if index is None:  # once per topic and batch (UnknownTopicError fails the row)
                    index = indexes[row.topic] = MessageIdIndex.for_topic(self.store, row.topic, self.dedup)
                partition, offset, duplicate = index.publish(producer, row.message_id, row.value, row.key,
                                                             decode_headers(row.headers) if row.headers else None)
            except LogClosedError as e:
                # the store is closing: not the rows' fault; give back what was not published
                released.extend(r.id for r in rows[i:])
                return published, failures, released, e
            except Exception as e:  # noqa: BLE001 - any failure of one row is recorded on that row
                failures.append((row, e))
                if key_id is not None:
                    blocked.add(key_id)
                continue
            published.append((row, partition, offset))
            if duplicate:
                self.stats.duplicates += 1
            self._step("published")
        return published, failures, released, None

    def _flush(self, published: list[tuple[_Claimed, int, int]]) -> None:
        """Make the published records survive a process crash (or, with ``sync``, a power loss)
        before any row says they are published."""
        for tp in dict.fromkeys((row.topic, partition) for row, partition, _ in published):
            try:
                plog = self.store.partition_log(tp)
                if self.sync:
                    plog.flush()
                else:
                    plog.flush_buffer()
            except LogClosedError:
                if not self.store.closed:
                    raise
                # the store closed meanwhile: closing flushed every log

    def _mark(self, db: Database, claim: str, published: list[tuple[_Claimed, int, int]],
              failures: list[tuple[_Claimed, Exception]], released: list[int]) -> None:
        sql = statements(db.dialect, self.table)
        now = now_ms()
        failed_params = []
        for row, error in failures:
            permanent = isinstance(error, InvalidArgumentError)
            dead = permanent or row.attempts >= self.max_attempts
            delay_ms = int(self.backoff.delay(row.attempts) * 1000)
            failed_params.append({"id": row.id, "claim": claim, "status": "dead" if dead else "failed",
                                  "next_attempt_at": now + delay_ms, "now": now,
                                  "error": f"{type(error).__name__}: {error}"[:4000]})
            if dead:
                self.stats.dead += 1
                log.warning("outbox message %s to %r is dead after %d attempt(s): %s", row.message_id, row.topic,
                            row.attempts, error)
            else:
                self.stats.failed += 1
        db.begin_write()
        try:
            db.executemany(sql.mark_published, [{"id": row.id, "claim": claim, "partition": partition,
                                                 "offset": offset, "now": now}
                                                for row, partition, offset in published])
            db.executemany(sql.mark_failed, failed_params)
            db.executemany(sql.release, [{"id": row_id, "claim": claim} for row_id in released])
            self._step("marked")
            db.commit()
        except BaseException:
            db.rollback()
            raise
        self.stats.published += len(published)
        self.stats.released += len(released)

    # -- background thread ----------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due rows now (call it after committing rows: ``add(..., notify=relay)`` does)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Relay:
        """Run the relay in a daemon thread until ``stop()``. Returns the relay."""
        if self._closed:
            raise LogClosedError("the relay is closed")
        if self.running:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="logstore-outbox-relay", daemon=True)
        self._thread.start()
        if self.listen and self._connect is not None:
            self._listener = threading.Thread(target=self._listen_loop, name="logstore-outbox-listen", daemon=True)
            self._listener.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread (it finishes its current batch)."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        self._thread = self._listener = None

    def close(self) -> None:
        """Stop, close the producer and the connections the relay opened. Idempotent."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._close_thread_database()
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and not self.store.closed:
            producer.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _idle_wait(self) -> float:
        if time.monotonic() < self._grace_until:
            delay = self._fast_delay
            self._fast_delay = min(self._fast_delay * 2, self.poll_interval)
            return delay
        return self.poll_interval

    def _loop(self) -> None:
        errors = 0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed = self.run_once()
                    errors = 0
                except Exception:
                    if self.store.closed:
                        log.info("outbox relay %s: the store closed, stopping", self.owner)
                        return
                    errors += 1
                    log.exception("outbox relay %s: a cycle failed (retrying)", self.owner)
                    self._wake.wait(min(5.0, 0.05 * 2 ** min(errors, 10)))
                    self._close_thread_database()  # a broken connection is replaced on the next cycle
                    continue
                if claimed:
                    continue  # more may be due
                if self._wake.wait(self._idle_wait()):
                    self._grace_until = time.monotonic() + self.wake_grace
                    self._fast_delay = _FAST_POLL
        finally:
            self._close_thread_database()

    def _listen_loop(self) -> None:
        """PostgreSQL with psycopg 3.2+: wake on the insert trigger's NOTIFY (sent at commit)."""
        assert self._connect is not None
        try:
            conn = self._connect()
        except Exception:
            log.exception("outbox relay %s: could not open the LISTEN connection; polling only", self.owner)
            return
        try:
            db = adapt(conn)
            if db.dialect != "postgresql" or db.kind != "dbapi" or not hasattr(conn, "notifies"):
                return
            conn.autocommit = True
            conn.execute(f"LISTEN {notify_channel(self.table)}")
            self.listening.set()
            while not self._stopping.is_set():
                try:
                    for _ in conn.notifies(timeout=0.25, stop_after=1):
                        self.wake()
                except TypeError:  # psycopg < 3.2: notifies() takes no timeout; polling only
                    return
        except Exception:
            if not self._stopping.is_set():
                log.exception("outbox relay %s: LISTEN failed; polling only", self.owner)
        finally:
            self.listening.clear()
            try:
                conn.close()
            except Exception:
                log.debug("closing the LISTEN connection failed", exc_info=True)


__all__ = ["STEPS", "Ordering", "Relay", "RelayStats"]
