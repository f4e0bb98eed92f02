"""Child process of test_broker_crash: creates topics and produces until it is killed (SIGKILL).

Usage: ``python broker_crash_child.py <data dir> <seed> [pause]``. It writes one JSON object per line to
stdout, each only once what it reports is durable:

- ``{"topic": name, "topic_id": ..., "partitions": n, "overrides": {...}}`` after a topic change;
- ``{"sent": [[topic, partition, offset, i], ...]}`` for records the parent may count on: those
  sent to the ``flush="always"`` topic as soon as ``send`` returns (or its future resolves), and
  those sent to the other topics after a ``store.flush()``.

Record ``i`` of a topic has the key and value of :func:`record_for` (shared with the parent).
With ``pause`` it sends one round to the ``flush="always"`` topic through each send path in turn,
reports it and waits (for the kill) before the next: nothing after the report can make those
records durable in its place.
"""

from __future__ import annotations

import json
import random
import sys
import time

import logstore

ALWAYS = "durable"
BUFFERED = "buffered"
GROWS = "grows"


def record_for(topic: str, i: int) -> tuple[bytes, bytes]:
    """(key, value) of the i-th record a child sends to ``topic``."""
    key = b"k%d" % (i % 17)
    value = b"%s-%d:" % (topic.encode(), i) + bytes([i % 251]) * (i % 61)
    return key, value


def report(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def report_topic(store: logstore.Store, name: str) -> None:
    desc = store.describe_topic(name)
    report({"topic": name, "topic_id": desc.topic_id, "partitions": desc.partition_count,
            "overrides": desc.overrides})


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    pause = sys.argv[3:] == ["pause"]
    rng = random.Random(seed)
    store = logstore.open(path, cleaner=False)
    small = {"segment_bytes": 4096, "index_interval_bytes": 256}
    store.create_topic(ALWAYS, partitions=3, config={"flush": "always", **small})
    report_topic(store, ALWAYS)
    store.create_topic(BUFFERED, partitions=2, config={"flush": "never", "retention.ms": 86_400_000, **small})
    report_topic(store, BUFFERED)
    store.create_topic(GROWS, partitions=1, config=small)
    report_topic(store, GROWS)
    producer = store.producer()
    lingering = store.producer(linger_ms=2, batch_size=2048)
    counters = {ALWAYS: 0, BUFFERED: 0, GROWS: 0}
    unflushed: list[list[object]] = []
    rounds = 0

    def send(p: logstore.Producer, topic: str) -> list[object]:
        """Send the topic's next record; returns [topic, partition, offset, i]."""
        i = counters[topic]
        counters[topic] += 1
        key, value = record_for(topic, i)
        meta = p.send(topic, value, key=key if i % 4 else None).get(10)
        return [topic, meta.partition, meta.offset, i]

    if pause:
        for p in (producer, lingering):
            report({"sent": [send(p, ALWAYS) for _ in range(50)]})
            time.sleep(0.5)
        time.sleep(60)

    while True:
        rounds += 1
        # durable at once: the flush="always" topic, through both send paths
        batch = [send(producer if rng.random() < 0.7 else lingering, ALWAYS) for _ in range(rng.randint(1, 20))]
        report({"sent": batch})
        # durable after store.flush()
        for _ in range(rng.randint(1, 30)):
            unflushed.append(send(producer, BUFFERED if rng.random() < 0.7 else GROWS))
        if rng.random() < 0.3:
            store.flush()
            report({"sent": unflushed})
            unflushed = []
        if rounds % 40 == 0 and store.partitions_for(GROWS) < 6:
            store.create_partitions(GROWS, store.partitions_for(GROWS) + 1)
            report_topic(store, GROWS)
        if rounds % 25 == 0:
            store.alter_topic_config(BUFFERED, {"segment_bytes": rng.choice([2048, 4096, 8192])})
            report_topic(store, BUFFERED)


if __name__ == "__main__":
    main()
