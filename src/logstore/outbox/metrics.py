"""Outbox metrics from the table: backlog, its age, relay lag, attempts.

``collect(conn)`` runs a few indexed queries; call it from a metrics exporter every few seconds.
A relay's own counters (published, duplicates avoided, failures) are ``relay.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logstore.outbox.api import now_ms
from logstore.outbox.dialects import adapt
from logstore.outbox.schema import DEFAULT_TABLE, SETTLED_SQL, STATUSES, check_table


@dataclass(frozen=True)
class OutboxMetrics:
    """A snapshot of one outbox table (ages and lags in seconds)."""

    counts: dict[str, int] = field(default_factory=dict)
    """Rows per status (every status, 0 included)."""
    pending: int = 0
    """Rows still to publish: ``pending`` + ``failed``."""
    oldest_pending_age: float | None = None
    """Age of the oldest row still to publish (None: none)."""
    relay_lag: float | None = None
    """Longest add -> publish time among rows published in the last ``window`` seconds."""
    relay_lag_avg: float | None = None
    published_in_window: int = 0
    attempts: int = 0
    """Publish attempts spent so far on rows still to publish."""
    max_attempts: int = 0
    """Most attempts of any row still to publish."""
    retrying: int = 0
    """Rows still to publish that failed at least once (attempts > 0 and not leased)."""

    @property
    def dead(self) -> int:
        return self.counts.get("dead", 0)


def collect(conn: Any, *, table: str = DEFAULT_TABLE, window: float = 60.0, now: int | None = None) -> OutboxMetrics:
    """Read the metrics of ``table`` (``now``: ms since the epoch, for tests). Reads in the
    connection's current transaction and commits nothing."""
    db = adapt(conn)
    t = check_table(table)
    now = now_ms() if now is None else now
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in db.query(f"SELECT status, COUNT(*) FROM {t} GROUP BY status"):  # (status, ...) index
        counts[status] = int(count)
    backlog = db.query(
        f"SELECT MIN(created_at), COALESCE(SUM(attempts), 0), COALESCE(MAX(attempts), 0), "
        f"COALESCE(SUM(CASE WHEN attempts > 0 AND lease_owner IS NULL THEN 1 ELSE 0 END), 0) "
        f"FROM {t} WHERE status IN ('pending', 'failed')")
    oldest, attempts, most, retrying = backlog[0]
    since = now - int(window * 1000)
    lag = db.query(
        f"SELECT COUNT(*), MAX(published_at - created_at), AVG(published_at - created_at) FROM {t} "
        f"WHERE status IN {SETTLED_SQL} AND status <> 'dead' AND updated_at >= :since AND published_at >= :since",
        {"since": since})
    published, lag_max, lag_avg = lag[0]
    return OutboxMetrics(
        counts=counts,
        pending=counts["pending"] + counts["failed"],
        oldest_pending_age=None if oldest is None else max(0.0, (now - int(oldest)) / 1000.0),
        relay_lag=None if lag_max is None else float(lag_max) / 1000.0,
        relay_lag_avg=None if lag_avg is None else float(lag_avg) / 1000.0,
        published_in_window=int(published),
        attempts=int(attempts),
        max_attempts=int(most),
        retrying=int(retrying),
    )


__all__ = ["OutboxMetrics", "collect"]
