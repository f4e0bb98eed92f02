"""Producers and consumers of the embedded broker (and their asyncio counterparts)."""

from logstore.client.aio import AsyncConsumer, AsyncProducer
from logstore.client.consumer import Consumer, ConsumerRecord
from logstore.client.producer import FutureRecordMetadata, Producer, RecordMetadata

__all__ = ["AsyncConsumer", "AsyncProducer", "Consumer", "ConsumerRecord", "FutureRecordMetadata", "Producer",
           "RecordMetadata"]
