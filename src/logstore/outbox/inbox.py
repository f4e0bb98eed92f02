"""The consumer side: process each message once per consumer group, inside the application's
transaction, by remembering processed message ids in the ``<table>_inbox`` table.

A consumer can see a record more than once (a restart before its offsets were committed, a
rebalance, a replay). With the inbox, the handler's database changes and the "processed" mark
commit together, so a redelivery finds the mark and is skipped::

    for record in consumer.poll(timeout=1.0):
        with conn:                                    # sqlite3: commit, or roll back on error
            outbox.inbox.process(conn, "billing", record, handle)

The message id is the record's ``logstore.message-id`` header (set by the relay); a record without
one is identified by its topic, partition and offset instead.

When the producer's outbox table is in the same database (one service that publishes to itself,
or a shared database), ``mark_outbox=True`` also moves the outbox row to ``received`` and ``done``.
It is off by default: on PostgreSQL a statement on a missing table aborts the whole transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from logstore.broker.dedup import check_message_id, message_id_of
from logstore.errors import InvalidArgumentError
from logstore.outbox.api import now_ms
from logstore.outbox.dialects import adapt
from logstore.outbox.schema import DEFAULT_TABLE, check_table, statements


class RecordLike(Protocol):
    """What the inbox reads from a consumed record (``logstore.Record``, ``ConsumerRecord``)."""

    @property
    def topic(self) -> str | None: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, bytes | None]]: ...


R = TypeVar("R", bound=RecordLike)
T = TypeVar("T")


def record_message_id(record: RecordLike) -> str:
    """The record's message id: its ``logstore.message-id`` header, else ``topic/partition/offset``."""
    found = message_id_of(record.headers or ())
    if found is not None:
        return found
    return f"{record.topic}/{record.partition}/{record.offset}"


def _check_group(group_id: object) -> str:
    if not isinstance(group_id, str) or not group_id or len(group_id) > 255:
        raise InvalidArgumentError(f"the consumer group is a non-empty str of at most 255 characters, not {group_id!r}")
    return group_id


def receive(conn: Any, group_id: str, record: RecordLike, *, table: str = DEFAULT_TABLE,
            mark_outbox: bool = False) -> bool:
    """Claim ``record`` for ``group_id`` in the caller's transaction: True the first time (process
    it, then commit), False if the group has it already (skip it). With ``mark_outbox``, the outbox
    row becomes ``received``."""
    db = adapt(conn)
    sql = statements(db.dialect, table)
    message_id = check_message_id(record_message_id(record))
    params = {"group_id": _check_group(group_id), "message_id": message_id, "topic": record.topic,
              "partition": record.partition, "offset": record.offset, "now": now_ms()}
    if db.execute(sql.inbox_insert, params) == 0:
        return False
    if mark_outbox:
        db.execute(sql.mark_received, params)
    return True


def complete(conn: Any, record: RecordLike, *, table: str = DEFAULT_TABLE) -> bool:
    """Move the outbox row of ``record`` to ``done`` (the business logic succeeded), in the
    caller's transaction; True if a row changed."""
    db = adapt(conn)
    return db.execute(statements(db.dialect, table).mark_done,
                      {"message_id": check_message_id(record_message_id(record)), "partition": record.partition,
                       "offset": record.offset, "now": now_ms()}) > 0


def process(conn: Any, group_id: str, record: R, handler: Callable[[R], T], *, table: str = DEFAULT_TABLE,
            mark_outbox: bool = False) -> bool:
    """Run ``handler(record)`` unless ``group_id`` processed this message already; in the caller's
    transaction, which the caller commits (or rolls back, if the handler raised: the inbox entry goes
    with it and a redelivery is processed again). Returns True if the handler ran. With
    ``mark_outbox``, the outbox row ends ``done``."""
    if not receive(conn, group_id, record, table=table, mark_outbox=mark_outbox):
        return False
    handler(record)
    if mark_outbox:
        complete(conn, record, table=table)
    return True


def processed(conn: Any, group_id: str, message_id: str, *, table: str = DEFAULT_TABLE) -> bool:
    """Whether ``group_id`` has processed ``message_id`` (committed, or in this transaction)."""
    db = adapt(conn)
    found = db.query(f"SELECT 1 FROM {check_table(table)}_inbox WHERE consumer_group = :group_id "
                     "AND message_id = :message_id", {"group_id": _check_group(group_id),
                                                       "message_id": check_message_id(message_id)})
    return bool(found)


__all__ = ["RecordLike", "complete", "process", "processed", "receive", "record_message_id"]
