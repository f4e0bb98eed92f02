"""Value types of the consumer-group API: group listings and descriptions."""

from __future__ import annotations

from dataclasses import dataclass, field

from logstore.broker.types import TopicPartition


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str
    """"Empty", "PreparingRebalance", "CompletingRebalance", "Stable" (or "Dead" once deleted)."""
    members: int


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str | None
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group: its committed offset, log end (high watermark), lag, owner."""

    topic: str
    partition: int
    committed: int | None
    log_end_offset: int
    lag: int | None
    """``log_end_offset - committed`` (None without a committed offset)."""
    member_id: str | None
    metadata: str = ""


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    generation: int
    protocol: str | None
    """The partition assignor the group agreed on in its last rebalance."""
    leader: str | None
    members: list[MemberDescription] = field(default_factory=list)
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


__all__ = ["GroupDescription", "GroupListing", "MemberDescription", "PartitionLag"]
