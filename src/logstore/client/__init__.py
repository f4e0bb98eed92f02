"""Producers and consumers of the embedded broker."""

from logstore.client.consumer import Consumer, ConsumerRecord
from logstore.client.producer import FutureRecordMetadata, Producer, RecordMetadata

__all__ = ["Consumer", "ConsumerRecord", "FutureRecordMetadata", "Producer", "RecordMetadata"]
