"""Consumer groups: the coordinator (membership, generations, fencing), assignors, and committed
offsets stored in the internal compacted topic ``__consumer_offsets``. See docs/groups.md."""

from logstore.groups.assignors import (
    CooperativeStickyAssignor,
    MemberMetadata,
    PartitionAssignor,
    RangeAssignor,
    RoundRobinAssignor,
    StickyAssignor,
)
from logstore.groups.membership import ConsumerRebalanceListener
from logstore.groups.offsets import OffsetAndMetadata
from logstore.groups.types import GroupDescription, GroupListing, MemberDescription, PartitionLag

__all__ = [
    "ConsumerRebalanceListener",
    "CooperativeStickyAssignor",
    "GroupDescription",
    "GroupListing",
    "MemberDescription",
    "MemberMetadata",
    "OffsetAndMetadata",
    "PartitionAssignor",
    "PartitionLag",
    "RangeAssignor",
    "RoundRobinAssignor",
    "StickyAssignor",
]
