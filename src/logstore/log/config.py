"""Per-log configuration, validated once at open: a bad value is a ConfigError, never a late surprise."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from logstore.errors import ConfigError

FLUSH_MODES = ("never", "interval", "always")
TIMESTAMP_TYPES = ("create_time", "log_append_time")
RECOVERY_MODES = ("auto", "full")


@dataclass(frozen=True)
class LogConfig:
    """Settings of one partition log; names follow Kafka's topic configs where Kafka has one."""

    segment_bytes: int = 1 << 30
    """Roll to a new segment before a segment's .log would pass this size (Kafka: segment.bytes)."""
    segment_ms: int | None = 7 * 24 * 3600 * 1000
    """Roll a segment this long after its first append (None: never by time)."""
    index_interval_bytes: int = 4096
    """Add an offset/time index entry at most once per this many bytes of log."""
    max_index_bytes: int = 10 * 1024 * 1024
    """Preallocated size of each index file; a full index rolls the segment."""
    retention_ms: int | None = None
    """Delete whole segments whose newest record is older than this (None: keep forever)."""
    retention_bytes: int | None = None
    """Delete the oldest whole segments while the log is larger than this (None: no limit)."""
    max_record_bytes: int = 1048588
    """Largest record batch; a record that cannot fit one batch is rejected (Kafka: max.message.bytes)."""
    flush: str = "interval"
    """Durability against power loss: "never" (fsync only on flush()/close()), "interval" (a
    background fsync every flush_interval_ms), "always" (fsync before an append returns, with
    group commit). Against a process crash, in every mode: batch appends are in the OS page cache
    when they return; single appends within flush_interval_ms."""
    flush_interval_ms: int = 1000
    timestamp_type: str = "create_time"
    """"create_time" keeps the producer's timestamps; "log_append_time" stamps the append time."""
    verify_crc: bool = True
    """Check every batch's CRC32C when it is read (a flipped byte is never served as data)."""
    recovery: str = "auto"
    """"auto" scans only past the recovery point after a crash; "full" validates every segment."""

    def __post_init__(self) -> None:
        def positive_int(name: str, low: int, high: int = 2**63 - 1, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name} must be an int, not {type(v).__name__}")
            if not low <= v <= high:
                raise ConfigError(f"{name}={v} is out of range [{low}, {high}]")

        positive_int("segment_bytes", 128, 2**31 - 1)
        positive_int("segment_ms", 1, optional=True)
        positive_int("index_interval_bytes", 0, 2**31 - 1)
        positive_int("max_index_bytes", 64, 2**31 - 1)
        positive_int("retention_ms", 0, optional=True)
        positive_int("retention_bytes", 0, optional=True)
        positive_int("max_record_bytes", 128, 2**31 - 1)
        positive_int("flush_interval_ms", 1, 24 * 3600 * 1000)
        for name, allowed in (("flush", FLUSH_MODES), ("timestamp_type", TIMESTAMP_TYPES),
                              ("recovery", RECOVERY_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if not isinstance(self.verify_crc, bool):
            raise ConfigError("verify_crc must be a bool")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LogConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown log config {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)
