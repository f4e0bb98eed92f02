"""Value types of the broker API: topic-partition keys and topic descriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class TopicPartition(NamedTuple):
    """A partition of a topic: the key of positions, seeks and assignments (as in Kafka clients)."""

    topic: str
    partition: int


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segment_count: int


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    partitions: list[PartitionDescription]
    config: dict[str, Any] = field(default_factory=dict)
    """The full effective config."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """The keys set for this topic (the rest are the store's defaults)."""

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    @property
    def record_count(self) -> int:
        """Offsets between log start and high watermark, summed (exact unless compacted)."""
        return sum(p.high_watermark - p.log_start_offset for p in self.partitions)


__all__ = ["PartitionDescription", "TopicDescription", "TopicPartition"]
