"""Topic names and per-topic configuration of the embedded broker.

Names follow Kafka's rules: 1 to 249 ASCII letters, digits, '.', '_' or '-', never "." or "..",
and no two topics whose names differ only by '.' versus '_' (Kafka forbids the pair because both
map to the same metric name; we keep the rule so topics move between logstore and Kafka).

:class:`TopicConfig` holds every per-topic setting with Kafka's defaults. It accepts snake_case
names and Kafka's dotted names ("retention.ms"), validates every value once, and knows which
settings are the partition log's (:meth:`TopicConfig.log_kwargs`) and which are the cleaner's.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logstore.errors import ConfigError, InvalidPartitionsError, InvalidTopicError
from logstore.log.config import FLUSH_MODES, TIMESTAMP_TYPES

__all__ = [
    "CONSUMER_OFFSETS_TOPIC",
    "CONFIG_KEYS",
    "INTERNAL_TOPIC_PREFIX",
    "KAFKA_NAMES",
    "MAX_PARTITIONS",
    "MAX_TOPIC_NAME_LENGTH",
    "TopicConfig",
    "check_collision",
    "collision_name",
    "is_internal",
    "partition_dir_name",
    "validate_partition_count",
    "validate_topic_name",
]

MAX_TOPIC_NAME_LENGTH = 249
"""Kafka's limit: "<topic>-<partition>" must still fit a 255-byte file name."""
MAX_PARTITIONS = 100_000
"""Partition ids have at most 5 digits, so the longest partition directory name is 249 + 1 + 5 = 255."""
INTERNAL_TOPIC_PREFIX = "__"
CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"

_LEGAL_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a legal topic name, else raise InvalidTopicError naming the rule broken."""
    if not isinstance(name, str):
        raise InvalidTopicError(f"a topic name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidTopicError("a topic name must not be empty")
    if name in (".", ".."):
        raise InvalidTopicError(f"a topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters long; the limit is {MAX_TOPIC_NAME_LENGTH}")
    illegal = sorted(set(name) - _LEGAL_NAME_CHARS)
    if illegal:
        shown = ", ".join(repr(c) for c in illegal)
        raise InvalidTopicError(
            f"topic name {name!r} contains illegal character(s) {shown}; "
            "legal are ASCII letters, digits, '.', '_' and '-'")
    return name


def is_internal(name: str) -> bool:
    """Internal topics (e.g. "__consumer_offsets") start with two underscores."""
    return name.startswith(INTERNAL_TOPIC_PREFIX)


def collision_name(name: str) -> str:
    """The form under which "a.b" and "a_b" are the same topic (Kafka's metric-name collision)."""
    return name.replace(".", "_")


def check_collision(name: str, existing: Iterable[str]) -> None:
    """Raise InvalidTopicError if a *different* topic in ``existing`` collides with ``name``."""
    key = collision_name(name)
    for other in existing:
        if other != name and collision_name(other) == key:
            raise InvalidTopicError(
                f"topic {name!r} collides with existing topic {other!r}: "
                "names that differ only by '.' versus '_' are not allowed together")


def validate_partition_count(partitions: object) -> int:
    """Return ``partitions`` if it is a legal partition count (an int in [1, MAX_PARTITIONS])."""
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise InvalidPartitionsError(f"the partition count must be an int, not {type(partitions).__name__}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidPartitionsError(f"the partition count must be in [1, {MAX_PARTITIONS}], not {partitions}")
    return partitions


def partition_dir_name(topic: str, partition: int) -> str:
    """Name of a partition's directory under the data directory, as Kafka names it."""
    return f"{topic}-{partition}"


# -- per-topic config -------------------------------------------------------------------------

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
_DAY_MS = 24 * 3600 * 1000

CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
_TIMESTAMP_TYPE_ALIASES = {"createtime": "create_time", "logappendtime": "log_append_time"}
_DECIMAL_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class _IntRange:
    low: int
    high: int
    unlimited: bool = False  # -1 (or None at create) means "no limit"


# Ranges follow Kafka's where the partition log allows them (LogConfig is stricter on a few minimums).
_INT_KEYS: dict[str, _IntRange] = {
    "segment_bytes": _IntRange(128, _INT32_MAX),
    "segment_ms": _IntRange(1, _INT64_MAX),
    "retention_ms": _IntRange(-1, _INT64_MAX, unlimited=True),
    "retention_bytes": _IntRange(-1, _INT64_MAX, unlimited=True),
    "max_message_bytes": _IntRange(128, _INT32_MAX),
    "index_interval_bytes": _IntRange(0, _INT32_MAX),
    "flush_interval_ms": _IntRange(1, _DAY_MS),
    "delete_retention_ms": _IntRange(0, _INT64_MAX),
    "min_compaction_lag_ms": _IntRange(0, _INT64_MAX),
    "max_index_bytes": _IntRange(64, _INT32_MAX),
}

CONFIG_KEYS = (
    "segment_bytes", "segment_ms", "retention_ms", "retention_bytes", "cleanup_policy", "max_message_bytes",
    "index_interval_bytes", "flush", "flush_interval_ms", "message_timestamp_type", "delete_retention_ms",
    "min_compaction_lag_ms", "min_cleanable_dirty_ratio", "max_index_bytes",
)
"""Every per-topic config key, snake_case."""

KAFKA_NAMES: dict[str, str] = {key: key.replace("_", ".") for key in CONFIG_KEYS}
"""snake_case key -> Kafka's topic config name (ours for the keys Kafka does not have: flush, flush.interval.ms)."""
KAFKA_NAMES["max_index_bytes"] = "segment.index.bytes"

_ALIASES: dict[str, str] = {dotted: key for key, dotted in KAFKA_NAMES.items()}
_ALIASES["max.index.bytes"] = "max_index_bytes"  # the plain dotted form of the snake name

_CLEANER_ONLY_KEYS = ("cleanup_policy", "delete_retention_ms", "min_compaction_lag_ms", "min_cleanable_dirty_ratio")


def _canonical_key(key: object) -> str:
    if isinstance(key, str):
        if key in CONFIG_KEYS:
            return key
        if key in _ALIASES:
            return _ALIASES[key]
    raise ConfigError(f"unknown topic config {key!r}; known: {', '.join(CONFIG_KEYS)} "
                      "(or Kafka's dotted names, e.g. retention.ms)")


def _coerce_int(shown: str, value: object, spec: _IntRange) -> int:
    expected = f"an int in [{spec.low}, {spec.high}]" + (" (-1: no limit)" if spec.unlimited else "")
    if isinstance(value, str) and _DECIMAL_INT.fullmatch(value):
        value = int(value)  # Kafka's configs travel as strings (CLI, kafka-configs files)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{shown} must be {expected}, not {type(value).__name__} {value!r}")
    if not spec.low <= value <= spec.high:
        raise ConfigError(f"{shown}={value} is out of range; expected {expected}")
    return value


def _coerce_ratio(shown: str, value: object) -> float:
    expected = "a number in [0, 1]"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{shown} must be {expected}, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{shown} must be {expected}, not {type(value).__name__} {value!r}")
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{shown}={value} is out of range; expected {expected}")
    return float(value)


def _coerce_cleanup_policy(shown: str, value: object) -> str:
    expected = "'delete', 'compact' or 'compact,delete' (a comma-separated str or a list)"
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ConfigError(f"{shown} must be {expected}, not {type(value).__name__} {value!r}")
    if not items or any(item not in ("delete", "compact") for item in items):
        raise ConfigError(f"{shown}={value!r} is not allowed; expected {expected}")
    return ",".join(sorted({str(item) for item in items}))  # "compact" < "delete": one spelling for both


def _coerce_choice(shown: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{shown}={value!r} is not allowed; expected one of {', '.join(allowed)}")
    return value


def _coerce(key: str, value: object, shown: str | None = None) -> Any:
    """Validate and normalise the value of canonical ``key``; errors name the key as the user spelled it."""
    shown = shown or key
    if key in _INT_KEYS:
        return _coerce_int(shown, value, _INT_KEYS[key])
    if key == "min_cleanable_dirty_ratio":
        return _coerce_ratio(shown, value)
    if key == "cleanup_policy":
        return _coerce_cleanup_policy(shown, value)
    if key == "flush":
        return _coerce_choice(shown, value, FLUSH_MODES)
    if key == "message_timestamp_type":
        if isinstance(value, str):  # Kafka spells them "CreateTime" / "LogAppendTime"
            value = _TIMESTAMP_TYPE_ALIASES.get(value.lower(), value)
        return _coerce_choice(shown, value, TIMESTAMP_TYPES)
    raise AssertionError(f"no validation for {key}")  # pragma: no cover - every key is handled above


def _normalise_changes(changes: Mapping[str, object], what: str) -> dict[str, tuple[str, object]]:
    """canonical key -> (key as given, value); two spellings of one key are an error."""
    if not isinstance(changes, Mapping):
        raise ConfigError(f"{what} must be a mapping of config names to values, not {type(changes).__name__}")
    out: dict[str, tuple[str, object]] = {}
    for given, value in changes.items():
        key = _canonical_key(given)
        if key in out:
            raise ConfigError(f"topic config {key} is given twice (as {out[key][0]!r} and {given!r})")
        out[key] = (given, value)
    return out


@dataclass(frozen=True)
class TopicConfig:
    """The effective configuration of one topic; every value validated and normalised at construction.

    ``defaults`` is the configuration this one was derived from (the store's topic defaults; None:
    Kafka's defaults): :meth:`overrides` is relative to it and a None in :meth:`with_overrides`
    resets a key to it.
    """

    segment_bytes: int = 1 << 30
    """Roll to a new segment before a segment's .log passes this size (segment.bytes)."""
    segment_ms: int = 7 * _DAY_MS
    """Roll a segment this long after its first append (segment.ms)."""
    retention_ms: int = 7 * _DAY_MS
    """Delete whole segments whose newest record is older than this; -1: keep forever (retention.ms)."""
    retention_bytes: int = -1
    """Delete the oldest whole segments while a *partition* is larger than this; -1: no limit."""
    cleanup_policy: str = "delete"
    """"delete" (retention), "compact" (latest record per key, no retention) or "compact,delete"."""
    max_message_bytes: int = 1048588
    """Largest record batch a producer may append (max.message.bytes)."""
    index_interval_bytes: int = 4096
    """Bytes of log between two offset/time index entries (index.interval.bytes)."""
    flush: str = "interval"
    """fsync policy of the partition logs: "never", "interval" or "always" (see LogConfig.flush)."""
    flush_interval_ms: int = 1000
    """Period of the background fsync with flush="interval"."""
    message_timestamp_type: str = "create_time"
    """"create_time" keeps the producer's timestamps, "log_append_time" stamps the append time."""
    delete_retention_ms: int = _DAY_MS
    """How long the cleaner keeps tombstones after compacting them (delete.retention.ms)."""
    min_compaction_lag_ms: int = 0
    """A record stays uncompacted at least this long after it was appended (min.compaction.lag.ms)."""
    min_cleanable_dirty_ratio: float = 0.5
    """Compact once this share of the log is uncompacted (min.cleanable.dirty.ratio)."""
    max_index_bytes: int = 10 * 1024 * 1024
    """Preallocated size of each index file; a full index rolls the segment (segment.index.bytes)."""
    defaults: TopicConfig | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        for key in CONFIG_KEYS:
            value = getattr(self, key)
            if value is None and key in _INT_KEYS and _INT_KEYS[key].unlimited:
                value = -1
            object.__setattr__(self, key, _coerce(key, value))
        if self.defaults is not None and not isinstance(self.defaults, TopicConfig):
            raise ConfigError(f"defaults must be a TopicConfig, not {type(self.defaults).__name__}")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, overrides: Mapping[str, object] | None = None,
                  defaults: TopicConfig | Mapping[str, object] | None = None) -> TopicConfig:
        """The config of a new topic: ``defaults`` (a TopicConfig, a mapping of overrides of Kafka's
        defaults, or None for Kafka's) with ``overrides`` applied. Keys are snake_case or Kafka's
        dotted names; None for retention_ms / retention_bytes means no limit, for any other key it
        is an error. Raises ConfigError naming the key for an unknown key or a bad value."""
        base = cls._resolve_defaults(defaults)
        values = base.to_dict()
        for key, (given, value) in _normalise_changes(overrides or {}, "topic config").items():
            if value is None:
                if not (key in _INT_KEYS and _INT_KEYS[key].unlimited):
                    raise ConfigError(f"{given} needs a value; None means 'no limit' only for "
                                      "retention_ms and retention_bytes")
                value = -1
            values[key] = _coerce(key, value, given)
        return cls(**values, defaults=base)

    @staticmethod
    def _resolve_defaults(defaults: TopicConfig | Mapping[str, object] | None) -> TopicConfig:
        if defaults is None:
            return TopicConfig()
        if isinstance(defaults, TopicConfig):
            return defaults
        if isinstance(defaults, Mapping):
            return TopicConfig.from_dict(defaults)
        raise ConfigError(f"topic defaults must be a mapping or a TopicConfig, not {type(defaults).__name__}")

    def with_overrides(self, changes: Mapping[str, object]) -> TopicConfig:
        """A copy with ``changes`` applied (alter config); a value of None resets that key to its
        default (the ``defaults`` this config was derived from). For "no limit" pass -1."""
        base = self.base
        values = self.to_dict()
        for key, (given, value) in _normalise_changes(changes, "config changes").items():
            values[key] = getattr(base, key) if value is None else _coerce(key, value, given)
        return TopicConfig(**values, defaults=self.defaults)

    # -- views ----------------------------------------------------------------------------------

    @property
    def base(self) -> TopicConfig:
        """The defaults this config is relative to."""
        return self.defaults if self.defaults is not None else _KAFKA_DEFAULTS

    @property
    def compaction_enabled(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def retention_enabled(self) -> bool:
        """Whether time/size retention deletes segments (Kafka: only with the "delete" policy)."""
        return "delete" in self.cleanup_policy

    def to_dict(self) -> dict[str, Any]:
        """The full effective config, snake_case keys (JSON-serialisable)."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}

    def overrides(self) -> dict[str, Any]:
        """Only the keys whose value differs from the defaults (what a topic's metadata stores)."""
        base = self.base
        return {key: getattr(self, key) for key in CONFIG_KEYS if getattr(self, key) != getattr(base, key)}

    def log_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``PartitionLog.open(path, **kwargs)`` for a partition of this topic.

        The cleaner-only keys are left out. A compact-only topic has no time/size retention (as in
        Kafka), so its logs get retention_ms=None and retention_bytes=None."""
        retain = self.retention_enabled
        return {
            "segment_bytes": self.segment_bytes,
            "segment_ms": self.segment_ms,
            "index_interval_bytes": self.index_interval_bytes,
            "max_index_bytes": self.max_index_bytes,
            "retention_ms": self.retention_ms if retain and self.retention_ms != -1 else None,
            "retention_bytes": self.retention_bytes if retain and self.retention_bytes != -1 else None,
            "max_record_bytes": self.max_message_bytes,
            "flush": self.flush,
            "flush_interval_ms": self.flush_interval_ms,
            "timestamp_type": self.message_timestamp_type,
        }

    def cleaner_settings(self) -> dict[str, Any]:
        """The keys only the cleaner reads (left out of :meth:`log_kwargs`)."""
        return {key: getattr(self, key) for key in _CLEANER_ONLY_KEYS}


_KAFKA_DEFAULTS = TopicConfig()
