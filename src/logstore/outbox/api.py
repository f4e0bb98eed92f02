"""The outbox table's operations in the application's transaction: ``install``, ``add``, and the
status changes and look-ups around them (``mark_received``, ``mark_done``, ``requeue``, ``get``).

None of these commits, except ``install`` (DDL; ``commit=False`` to run it inside your own
transaction): ``add`` is meant to be part of the transaction that changes the business data, so that
the message exists exactly when the change does.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from logstore.broker.dedup import check_message_id
from logstore.broker.topics import validate_topic_name
from logstore.errors import InvalidArgumentError, OutboxError
from logstore.outbox.dialects import adapt
from logstore.outbox.schema import COLUMNS, DEFAULT_TABLE, STATUSES, check_table, ddl, statements

if TYPE_CHECKING:
    from logstore.broker.store import Store

Header = tuple[str, "bytes | bytearray | memoryview | None"]


class Wakeable(Protocol):
    """What ``add(..., notify=...)`` takes: a :class:`~logstore.outbox.Relay`, or anything with ``wake()``."""

    def wake(self) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class OutboxRow:
    """One row of the outbox table (times in ms since the epoch)."""

    id: int
    message_id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    status: str
    attempts: int
    next_attempt_at: int
    lease_owner: str | None
    lease_expires_at: int | None
    created_at: int
    updated_at: int
    published_at: int | None
    partition: int | None
    offset: int | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> OutboxRow:
        values = list(row)
        values[3] = None if values[3] is None else bytes(values[3])
        values[4] = None if values[4] is None else bytes(values[4])
        values[5] = decode_headers(values[5])
        return cls(*values)


# -- headers --------------------------------------------------------------------------------------


def encode_headers(headers: Iterable[Header] | None) -> str | None:
    """Headers as stored: JSON ``[[name, base64 value or null], ...]`` (None for no headers)."""
    if headers is None:
        return None
    if isinstance(headers, (str, bytes, bytearray, memoryview)) or not isinstance(headers, Iterable):
        raise InvalidArgumentError(
            f"headers must be a sequence of (str, bytes | None) pairs, not {type(headers).__name__}")
    out: list[list[str | None]] = []
    for pair in headers:
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
            raise InvalidArgumentError(f"a header must be a (str, bytes | None) pair, not {pair!r}")
        name, value = pair
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"header {name!r}: a value must be bytes or None, not {type(value).__name__}")
        out.append([name, None if value is None else base64.b64encode(bytes(value)).decode("ascii")])
    return json.dumps(out, separators=(",", ":")) if out else None


def decode_headers(text: str | None) -> list[tuple[str, bytes | None]]:
    if not text:
        return []
    return [(name, None if value is None else base64.b64decode(value)) for name, value in json.loads(text)]


def _bytes_or_none(name: str, value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    hint = " (encode it first, e.g. .encode())" if isinstance(value, str) else ""
    raise InvalidArgumentError(f"{name} must be bytes or None, not {type(value).__name__}{hint}")


# -- install --------------------------------------------------------------------------------------


def install(conn: Any, *, table: str = DEFAULT_TABLE, inbox: bool = True, commit: bool = True) -> None:
    """Create the outbox table and indexes (and the inbox table, with ``inbox``), unless they exist.
    Commits unless ``commit=False``. The statements are :func:`logstore.outbox.ddl` for migration tools."""
    db = adapt(conn)
    for statement in ddl(db.dialect, table, inbox=inbox):
        db.execute(statement)
    if commit:
        db.commit()


# -- add ------------------------------------------------------------------------------------------


def add(conn: Any, topic: str, value: bytes | None, key: bytes | None = None,
        headers: Iterable[Header] | None = None, message_id: str | None = None, *,
        table: str = DEFAULT_TABLE, store: Store | None = None, notify: Wakeable | None = None) -> str:
    """Add a message for ``topic`` to the outbox, inside the caller's open transaction (nothing is
    committed here: the row exists exactly if that transaction commits). Returns the message id
    (``message_id``, or a new random one).

    ``value`` and ``key`` are bytes (or None: a ``None`` value is a tombstone for compacted topics);
    ``headers`` (str, bytes | None) pairs. With ``store``, a topic the store does not have (and would
    not auto-create) is refused now instead of failing at publish time. ``notify``: a relay to wake
    (call it again after commit, or let the relay's short re-poll after a wake pick the row up).
    Raises InvalidArgumentError for bad input, UnknownTopicError for a topic ``store`` lacks, and
    OutboxError for a message id already in the outbox; nothing is written then.
    """
    validate_topic_name(topic)
    payload = _bytes_or_none("value", value)
    msg_key = _bytes_or_none("key", key)
    encoded_headers = encode_headers(headers)
    message_id = uuid.uuid4().hex if message_id is None else check_message_id(message_id)
    check_table(table)
    if store is not None and not store.auto_create_topics:
        store.partitions_for(topic)  # UnknownTopicError
    db = adapt(conn)
    inserted = db.execute(statements(db.dialect, table).insert,
                          {"message_id": message_id, "topic": topic, "msg_key": msg_key, "payload": payload,
                           "headers": encoded_headers, "now": now_ms()})
    if inserted == 0:
        raise OutboxError(f"message id {message_id!r} is already in the outbox")
    if notify is not None:
        notify.wake()
    return message_id


# -- status changes and look-ups -----------------------------------------------------------------


def mark_received(conn: Any, message_id: str, *, table: str = DEFAULT_TABLE, partition: int | None = None,
                  offset: int | None = None) -> bool:
    """Move a message's row to ``received`` (from pending, failed or published: a consumer can see a
    record before the relay has marked it). In the caller's transaction; True if a row changed."""
    db = adapt(conn)
    return db.execute(statements(db.dialect, table).mark_received,
                      {"message_id": check_message_id(message_id), "partition": partition, "offset": offset,
                       "now": now_ms()}) > 0


def mark_done(conn: Any, message_id: str, *, table: str = DEFAULT_TABLE, partition: int | None = None,
              offset: int | None = None) -> bool:
    """Move a message's row to ``done`` (the consumer's business logic succeeded). In the caller's
    transaction; True if a row changed."""
    db = adapt(conn)
    return db.execute(statements(db.dialect, table).mark_done,
                      {"message_id": check_message_id(message_id), "partition": partition, "offset": offset,
                       "now": now_ms()}) > 0


def requeue(conn: Any, message_ids: Iterable[str] | None = None, *, table: str = DEFAULT_TABLE,
            statuses: Sequence[str] = ("dead", "failed")) -> int:
    """Put ``dead``/``failed`` rows back to ``pending`` with no attempts and no backoff (all of them,
    or those of ``message_ids``), e.g. after fixing what made them fail. A requeued row keeps its id,
    so it publishes before later rows of its key that are still unpublished. In the caller's
    transaction; returns the number of rows changed."""
    for status in statuses:
        if status not in ("dead", "failed"):
            raise InvalidArgumentError(f"requeue takes rows that are dead or failed, not {status!r}")
    db = adapt(conn)
    t = check_table(table)
    in_statuses = ", ".join(f"'{s}'" for s in statuses)
    sql = (f"UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = :now, updated_at = :now, "
           f"lease_owner = NULL, lease_expires_at = NULL WHERE status IN ({in_statuses})")
    now = now_ms()
    if message_ids is None:
        return db.execute(sql, {"now": now})
    changed = 0
    for message_id in message_ids:
        changed += db.execute(sql + " AND message_id = :message_id",
                              {"now": now, "message_id": check_message_id(message_id)})
    return changed


def get(conn: Any, message_id: str, *, table: str = DEFAULT_TABLE) -> OutboxRow | None:
    """The row of ``message_id``, or None."""
    db = adapt(conn)
    rows = db.query(f"SELECT {', '.join(COLUMNS)} FROM {check_table(table)} WHERE message_id = :message_id",
                    {"message_id": check_message_id(message_id)})
    return OutboxRow.from_row(rows[0]) if rows else None


def rows(conn: Any, *, status: str | None = None, table: str = DEFAULT_TABLE, limit: int = 1000) -> list[OutboxRow]:
    """Rows in id order (of one ``status``, or all), at most ``limit``."""
    if status is not None and status not in STATUSES:
        raise InvalidArgumentError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")
    db = adapt(conn)
    where = "" if status is None else " WHERE status = :status"
    found = db.query(f"SELECT {', '.join(COLUMNS)} FROM {check_table(table)}{where} ORDER BY id LIMIT :limit",
                     {"status": status, "limit": limit})
    return [OutboxRow.from_row(r) for r in found]


__all__ = [
    "OutboxRow",
    "Wakeable",
    "add",
    "decode_headers",
    "encode_headers",
    "get",
    "install",
    "mark_done",
    "mark_received",
    "now_ms",
    "requeue",
    "rows",
]
