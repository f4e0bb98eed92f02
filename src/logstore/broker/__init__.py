"""The embedded broker: topics of partition logs in one data directory."""

from logstore.broker.store import Store, open
from logstore.broker.topics import TopicConfig
from logstore.broker.types import PartitionDescription, TopicDescription, TopicPartition

__all__ = ["PartitionDescription", "Store", "TopicConfig", "TopicDescription", "TopicPartition", "open"]
