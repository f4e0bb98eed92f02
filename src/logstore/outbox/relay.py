"""The relay: claims due outbox rows under a lease, publishes them to the store's topics, marks them.

A batch goes through three steps:

1. **claim**: up to ``batch_size`` due rows, in id order, get this claim's lease (``lease_owner``,
   ``lease_expires_at``) and one more attempt. On PostgreSQL the scan locks rows with
   ``FOR UPDATE SKIP LOCKED``, so several relays share the work; on SQLite the claim is a single
   ``UPDATE ... RETURNING`` under the database's write lock (one relay at a time does work; a second
   one, or a relay restarted after a crash, takes over rows whose lease has expired).
2. **publish**: the rows, topic by topic, through the topic's message-id index
   (:meth:`~logstore.broker.dedup.MessageIdIndex.publish_many`: check and append under one hold of
   the index's lock), each row's message id being its idempotency key: a row published before a
   crash (but not marked) is found in the index and not appended again. Then the touched partitions'
   buffers are handed to the OS (a process crash cannot lose them) or, with ``sync=True``, fsynced.
3. **mark**: published rows get ``published`` with partition and offset (one ``UPDATE ... FROM``
   statement per 300 rows on SQLite 3.33+, one per batch on PostgreSQL); failed ones ``failed`` with
   a backoff, or ``dead`` after ``max_attempts`` (or at once for an error no retry fixes: a record
   the log refuses); rows not attempted are released. A mark changes a row only while it is still
   under this claim's lease.

**One transaction per batch**: the marks of a batch commit in the transaction that claims the next
batch (marks first, so that the claim sees them: a key whose row just failed is not claimed), so
``run_until_idle()`` commits n + 1 transactions for n batches instead of 2n. ``run_once()``, and
the last batch of ``run_until_idle()``, mark in a transaction of their own before returning. If a
claim fails, the marks that were to commit with it are written on their own before the error is
raised.

**Crash points** (kill -9 anywhere; ``tests/outbox/test_crash.py`` kills at each ``STEPS`` point).
T(n) is the transaction that marks batch n-1 and claims batch n:

- *before T(n) commits* (while marking, after the marks, while claiming): T(n) rolls back whole.
  Batch n was never claimed. Batch n-1 is still leased, and all its records are in the log (flushed
  before T(n) began). Once the lease expires another relay (or the scheduler, then a relay) takes it
  again, finds every record in the message-id index (rebuilt from the partitions' tails after a
  restart) and marks them with their first positions: nothing appended twice.
- *after T(n) committed, while publishing batch n* (before its flush): batch n-1 is marked; batch n
  is leased. Records not yet handed to the OS die with the process and are appended on the retry;
  those handed over are found in the index.
- *after the flush of batch n, before T(n+1) commits*: the first case, for batch n.

In every case each message ends in the topic exactly once, at the position its row records; a
crashed claim counts as an attempt (``attempts`` was raised in the committed claim); a key stays in
order, as the leased rows of a crashed batch block their keys' later rows until they are marked or
their lease expires, and are then claimed again before those.

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
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Literal

from logstore.broker.dedup import DedupWindow, MessageIdIndex, PublishRequest
from logstore.errors import InvalidArgumentError, LogClosedError
from logstore.outbox.api import decode_headers, now_ms
from logstore.outbox.backoff import DEFAULT_MAX_ATTEMPTS, Backoff, check_max_attempts
from logstore.outbox.dialects import Database, ThreadDatabases, adapt
from logstore.outbox.schema import DEFAULT_TABLE, check_table, notify_channel, statements

if TYPE_CHECKING:
    from logstore.broker.store import Store
    from logstore.client.producer import Producer

log = logging.getLogger("logstore.outbox")

Ordering = Literal["key", "none"]
STEPS = ("claimed", "published", "flushed", "marked")
"""Where ``on_step`` is called: after the claim committed, after each record's publish, after the
partitions were flushed, and after the marks were written but before their commit (which commits
the next batch's claim too)."""

_FAST_POLL = 0.0005


@dataclass
class RelayStats:
    """Counters of one relay since it was created."""

    cycles: int = 0
    """Claims made (with or without rows)."""
    batches: int = 0
    """Claims that got rows."""
    published: int = 0
    duplicates: int = 0
    """Rows whose message id the topic already held (published before a crash, not marked)."""
    failed: int = 0
    dead: int = 0
    released: int = 0
    lost_leases: int = 0
    """Marks that found the row no longer under this claim's lease (another relay took it over).
    Counted from the statements' row counts, where the driver reports them (the published rows'
    marks always; failed and released rows with the stdlib's sqlite3)."""


Claimed = tuple[int, str, str, "bytes | None", "bytes | None", "str | None", int]
"""A claimed row as the claim returns it: (id, message_id, topic, key, value, headers JSON, attempts).
Plain tuples: a batch has thousands, and a row object per row was measurable."""
_ID: Final = 0
_MESSAGE_ID: Final = 1
_TOPIC: Final = 2
_KEY: Final = 3
_VALUE: Final = 4
_HEADERS: Final = 5
_ATTEMPTS: Final = 6


@dataclass
class _Outcome:
    """What publishing a batch did, for its marks."""

    claim: str
    published: list[tuple[int, int, int]] = field(default_factory=list)
    """(row id, partition, offset)"""
    failures: list[tuple[Claimed, Exception]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    """Row ids not attempted."""
    partitions: set[tuple[str, int]] = field(default_factory=set)
    """The partitions appended to (to flush before the marks)."""
    duplicates: int = 0
    error: LogClosedError | None = None
    """The store closed during the batch: raised after the marks."""


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(f"{name} must be a positive number, not {value!r}")
    return float(value)


class Relay:
    """Publishes outbox rows to ``store``. Give it its own connection: ``conn`` (used as is, from the
    thread that calls it) or ``connect`` (a zero-argument factory; the relay opens a connection per
    thread that uses it, and one more to LISTEN on PostgreSQL).

    ``run_once()`` claims, publishes and marks one batch; ``run_until_idle()`` goes on while rows are
    due, committing each batch's marks with the next batch's claim; ``start()`` does that in a
    background thread until ``stop()``/``close()``.
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
        self._databases = ThreadDatabases(conn, connect)
        self._connect = connect
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
        return self._databases.get()

    def _close_thread_database(self) -> None:
        self._databases.close_current()

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
        return self._run(1)

    def run_until_idle(self, max_batches: int | None = None) -> int:
        """Batches until nothing is due (or ``max_batches``); returns the rows claimed. Each batch's
        marks commit with the next batch's claim (see the module doc); the last marks before this
        returns."""
        return self._run(max_batches)

    def _run(self, max_batches: int | None, stopping: threading.Event | None = None) -> int:
        if self._closed:
            raise LogClosedError("the relay is closed")
        self._get_producer()  # a closed store fails here, before rows are claimed
        db = self._database()
        total = batches = 0
        unmarked: _Outcome | None = None  # the batch published last, marked with the next claim
        while (max_batches is None or batches < max_batches) and not (stopping is not None and stopping.is_set()):
            claim, rows = self._transaction(db, unmarked, claim_next=True)
            unmarked = None
            if not rows:
                break
            batches += 1
            total += len(rows)
            self.stats.batches += 1
            self._step("claimed")
            out = self._publish(claim, rows)
            self._flush(out)
            self._step("flushed")
            unmarked = out
            if out.error is not None:
                break
        if unmarked is not None:
            self._transaction(db, unmarked, claim_next=False)
            if unmarked.error is not None:
                raise unmarked.error
        return total

    def _transaction(self, db: Database, marks: _Outcome | None, *, claim_next: bool) -> tuple[str, list[Claimed]]:
        """One write transaction: the marks of a published batch (if any), then the claim of the
        next batch (with ``claim_next``). Returns the new claim's id and rows.

        The marks go first so that the claim sees them (a key whose row just failed is not claimed).
        If the claim (or the commit) fails, the marks are written again in a transaction of their own
        before the error is raised, so that a failing claim does not leave a published batch leased."""
        claim = ""
        if claim_next:
            self.stats.cycles += 1
            claim = f"{self.owner}/{next(self._claims)}"
        rows: list[Claimed] = []
        counts: tuple[int, ...] = ()
        marks_written = False
        db.begin_write()
        try:
            if marks is not None:
                counts = self._write_marks(db, marks)
                self._step("marked")
                marks_written = True
            if claim_next:
                rows = self._claim(db, claim)
            db.commit()
        except BaseException as error:
            db.rollback()
            if marks is not None and marks_written and isinstance(error, Exception):
                try:
                    self._transaction(db, marks, claim_next=False)
                except Exception:  # the claim's error is the one to raise; this one is logged
                    log.exception("outbox relay %s: marking claim %s failed after its next claim failed; the rows "
                                  "stay leased until the lease expires", self.owner, marks.claim)
            raise
        if marks is not None:
            self._count_marks(marks, counts)
        return claim, rows

    def _claim(self, db: Database, claim: str) -> list[Claimed]:
        """Claim due rows (in the caller's transaction)."""
        sql = statements(db.dialect, self.table)
        now = now_ms()
        params = {"claim": claim, "lease_until": now + int(self.lease_seconds * 1000), "now": now,
                  "max_attempts": self.max_attempts, "limit": self.batch_size}
        rows: list[Claimed] = db.query(sql.claim_keyed if self.ordering == "key" else sql.claim_unordered, params)
        rows.sort(key=itemgetter(_ID))  # RETURNING gives no order
        if rows and self.ordering == "key" and db.dialect == "postgresql":
            rows = self._recheck_order(db, claim, rows)
        return rows

    def _recheck_order(self, db: Database, claim: str, rows: list[Claimed]) -> list[Claimed]:
        """PostgreSQL: keep a claimed keyed row only if every unpublished row of its key before it is
        in this claim too. The claim's scan ran on one snapshot and skipped rows other relays had
        locked; this fresh statement sees their committed claims (and ours)."""
        keyed = [r[_ID] for r in rows if r[_KEY] is not None]
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
        return [r for r in rows if r[_ID] not in drop]

    def _publish(self, claim: str, rows: list[Claimed]) -> _Outcome:
        """Publish the claimed rows, topic by topic, through the topics' message-id indexes (one
        ``publish_many`` per topic, so one hold of each index's lock for the batch)."""
        producer = self._get_producer()
        out = _Outcome(claim)
        by_topic: dict[str, list[Claimed]] = {}
        for row in rows:
            group = by_topic.get(row[_TOPIC])
            if group is None:
                by_topic[row[_TOPIC]] = [row]
            else:
                group.append(row)
        for topic, group in by_topic.items():
            if not self._publish_topic(producer, topic, group, out):
                # the store is closing: not the rows' fault; give back what was not published
                done = {row_id for row_id, _, _ in out.published}
                failed = {row[_ID] for row, _ in out.failures}
                out.released = [row[_ID] for row in rows if row[_ID] not in done and row[_ID] not in failed]
                break
        return out

    def _publish_topic(self, producer: Producer, topic: str, rows: list[Claimed], out: _Outcome) -> bool:
        """Publish one topic's rows (in id order) into ``out``; False if the store closed meanwhile."""
        ordered = self.ordering == "key"
        index: MessageIdIndex | None = None
        error: Exception | None = None
        try:
            index = MessageIdIndex.for_topic(self.store, topic, self.dedup)
        except LogClosedError as e:
            out.error = e
            return False
        except Exception as e:  # noqa: BLE001 - an unknown topic fails its rows, as a publish would
            error = e
        requests: list[PublishRequest] = [
            (row[_MESSAGE_ID], row[_VALUE], row[_KEY], decode_headers(row[_HEADERS]) if row[_HEADERS] else None)
            for row in rows]
        # with an on_step hook (tests), one record per call, so that the hook runs after each publish
        step = 1 if self._on_step is not None else len(rows)
        blocked: set[bytes] = set()
        start = 0
        while start < len(rows):
            if index is not None:
                results, error = index.publish_many(producer, requests[start:start + step])
                out.published += [(row[_ID], result[0], result[1]) for row, result in zip(rows[start:], results)]
                out.partitions.update([(topic, partition) for partition in {result[0] for result in results}])
                out.duplicates += sum([1 for result in results if result[2]])
                if self._on_step is not None:
                    for _ in results:
                        self._step("published")
                start += len(results)
                if error is None:
                    continue
                if isinstance(error, LogClosedError):
                    out.error = error
                    return False
            assert error is not None
            failed = rows[start]
            out.failures.append((failed, error))
            start += 1
            if ordered and failed[_KEY] is not None:
                # the rest of the failed row's key waits (released untried); the others go on
                blocked.add(failed[_KEY])
                keep = [i for i in range(start, len(rows)) if rows[i][_KEY] not in blocked]
                out.released.extend(rows[i][_ID] for i in range(start, len(rows)) if rows[i][_KEY] in blocked)
                rows = [rows[i] for i in keep]
                requests = [requests[i] for i in keep]
                start = 0
        return True

    def _flush(self, out: _Outcome) -> None:
        """Make the published records survive a process crash (or, with ``sync``, a power loss)
        before any row says they are published."""
        for tp in sorted(out.partitions):
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

    def _write_marks(self, db: Database, out: _Outcome) -> tuple[int, ...]:
        """Write a batch's marks (in the caller's transaction); returns the row counts of the statements."""
        sql = statements(db.dialect, self.table)
        claim = out.claim
        now = now_ms()
        failed_params = []
        for row, error in out.failures:
            attempts = row[_ATTEMPTS]
            dead = isinstance(error, InvalidArgumentError) or attempts >= self.max_attempts
            delay_ms = int(self.backoff.delay(attempts) * 1000)
            failed_params.append({"id": row[_ID], "claim": claim, "status": "dead" if dead else "failed",
                                  "next_attempt_at": now + delay_ms, "now": now,
                                  "error": f"{type(error).__name__}: {error}"[:4000]})
        return (self._mark_published(db, claim, now, out.published),
                db.executemany(sql.mark_failed, failed_params),
                db.executemany(sql.release, [{"id": row_id, "claim": claim} for row_id in out.released]))

    def _count_marks(self, out: _Outcome, counts: tuple[int, ...]) -> None:
        """Stats and logs of a batch whose marks committed."""
        for row, error in out.failures:
            if isinstance(error, InvalidArgumentError) or row[_ATTEMPTS] >= self.max_attempts:
                self.stats.dead += 1
                log.warning("outbox message %s to %r is dead after %d attempt(s): %s", row[_MESSAGE_ID], row[_TOPIC],
                            row[_ATTEMPTS], error)
            else:
                self.stats.failed += 1
        # a mark changes no row that is no longer under this claim's lease (a count of -1: not reported)
        lost = sum(expected - count for expected, count in zip(
            (len(out.published), len(out.failures), len(out.released)), counts) if count >= 0)
        if lost > 0:
            self.stats.lost_leases += lost
            log.warning("outbox relay %s: %d row(s) of claim %s were no longer under its lease when marked (its lease "
                        "expired and another relay took them over)", self.owner, lost, out.claim)
        self.stats.published += len(out.published)
        self.stats.duplicates += out.duplicates
        self.stats.released += len(out.released)

    def _mark_published(self, db: Database, claim: str, now: int, published: list[tuple[int, int, int]]) -> int:
        """Mark the published rows in as few statements as the database allows; returns the rows changed."""
        if not published:
            return 0
        sql = statements(db.dialect, self.table)
        if not db.supports_update_from():  # SQLite before 3.33: one statement per row
            return db.executemany(sql.mark_published, [{"id": row_id, "claim": claim, "partition": partition,
                                                        "offset": offset, "now": now}
                                                       for row_id, partition, offset in published])
        params = {"claim": claim, "now": now}
        if db.dialect == "sqlite":
            return db.execute_values(sql.mark_published_batch, params, published)
        ids, partitions, offsets = (list(column) for column in zip(*published))
        return db.execute(sql.mark_published_batch,
                          {**params, "ids": ids, "partitions": partitions, "offsets": offsets})

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
                    self._run(None, self._stopping)  # until nothing is due (or a stop)
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
