"""Cleanup: delete outbox rows that are finished and old, and old inbox entries, a capped number per cycle.

Retention is per status, counted from the row's last change (``updated_at``): ``published``,
``received`` and ``done`` rows, and inbox entries (from ``received_at``). ``pending`` rows are work to
do, and ``failed`` and ``dead`` rows are kept until someone looks at them (``requeue`` or a manual
``DELETE``): :class:`Retention` has no setting that deletes them.

Deleting an inbox entry forgets that its message was processed: a redelivery of that message after
its inbox retention would be processed again. Keep inbox retention longer than any redelivery can
come (consumer offsets reset, replays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logstore.errors import InvalidArgumentError
from logstore.outbox.api import now_ms
from logstore.outbox.dialects import adapt
from logstore.outbox.schema import DEFAULT_TABLE, check_table

_DAY = 86_400.0
DELETABLE = ("published", "received", "done")


@dataclass(frozen=True)
class Retention:
    """Seconds to keep rows of each finished status (None: keep forever), and how many rows one
    cleanup deletes at most per status (and from the inbox), so that a cycle stays short."""

    published: float | None = 7 * _DAY
    received: float | None = 7 * _DAY
    done: float | None = 1 * _DAY
    inbox: float | None = 30 * _DAY
    max_deletes: int = 1000

    def __post_init__(self) -> None:
        for name in (*DELETABLE, "inbox"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise InvalidArgumentError(f"Retention.{name} must be None or a non-negative number of seconds, "
                                           f"not {value!r}")
        if isinstance(self.max_deletes, bool) or not isinstance(self.max_deletes, int) or self.max_deletes < 1:
            raise InvalidArgumentError(f"Retention.max_deletes must be a positive int, not {self.max_deletes!r}")


@dataclass(frozen=True)
class CleanupReport:
    deleted: dict[str, int] = field(default_factory=dict)
    """Rows deleted per status, and ``"inbox"`` entries."""

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def cleanup(conn: Any, retention: Retention | None = None, *, table: str = DEFAULT_TABLE, inbox: bool = True,
            now: int | None = None, commit: bool = True) -> CleanupReport:
    """Delete rows past their status's retention, at most ``retention.max_deletes`` per status (and
    from the inbox, with ``inbox``), oldest first; commits after each status unless ``commit=False``.
    ``now``: ms since the epoch (tests)."""
    retention = retention or Retention()
    t = check_table(table)
    db = adapt(conn)
    now = now_ms() if now is None else now
    deleted: dict[str, int] = {}
    # the subquery picks the oldest rows (index: status, updated_at); its LIMIT caps the delete
    for status in DELETABLE:
        keep = getattr(retention, status)
        if keep is None:
            continue
        db.begin_write()
        deleted[status] = db.execute(
            f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE status = :status AND updated_at < :before "
            f"ORDER BY updated_at LIMIT :limit)",
            {"status": status, "before": now - int(keep * 1000), "limit": retention.max_deletes})
        if commit:
            db.commit()
    if inbox and retention.inbox is not None:
        db.begin_write()
        deleted["inbox"] = db.execute(
            f"DELETE FROM {t}_inbox WHERE (consumer_group, message_id) IN (SELECT consumer_group, message_id "
            f"FROM {t}_inbox WHERE received_at < :before ORDER BY received_at LIMIT :limit)",
            {"before": now - int(retention.inbox * 1000), "limit": retention.max_deletes})
        if commit:
            db.commit()
    return CleanupReport(deleted)


__all__ = ["DELETABLE", "CleanupReport", "Retention", "cleanup"]
