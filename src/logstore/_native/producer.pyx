# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The producer's hot path: pick a partition for a record and append it, in one native call.

``logstore.client.producer.Producer`` subclasses ``ProducerCore``: the Python side resolves
topics into ``TopicRoute`` objects (once per topic), owns configuration, batching with linger,
serializers and close; ``send`` with ``linger_ms=0`` and no serializers runs entirely here.

Partitioners (``partitioner`` codes):
  0 ``default``  keyed: XXH64(key, seed 0) mod partitions (the same on every platform and run);
                 keyless: sticky (fill ``batch_size`` bytes on one partition, then move to another
                 chosen at random), as Kafka's since 2.4.
  1 ``murmur2``  keyed: Kafka's Java client: (murmur2(key) & 0x7fffffff) mod partitions; keyless
                 records sticky as above.
A user callable is handled by the Python layer before it calls ``send_to``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t, uint64_t

from logstore._native.core cimport LogCore, SequenceCounters
from logstore._native.includes cimport ls_murmur2, ls_now_ms, ls_xxh64

from logstore.errors import InvalidArgumentError, InvalidRecordError, LogClosedError, UnknownTopicError

DEF INT32_MAX = 0x7fffffff

cdef object _TopicPartition = None


cdef class RecordMetadata:
    """Where a sent record landed. Also answers the future API (``get``, ``result``, ``done``)
    so code written for kafka-python's futures works unchanged."""

    def __cinit__(self, str topic, int partition, int64_t offset, int64_t timestamp):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp

    @property
    def topic_partition(self):
        global _TopicPartition
        if _TopicPartition is None:
            from logstore.broker.types import TopicPartition as tp
            _TopicPartition = tp
        return _TopicPartition(self.topic, self.partition)

    def get(self, timeout=None):
        return self

    def result(self, timeout=None):
        return self

    def done(self):
        return True

    def exception(self, timeout=None):
        return None

    def __repr__(self):
        return (f"RecordMetadata(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"timestamp={self.timestamp})")

    def __eq__(self, other):
        if not isinstance(other, RecordMetadata):
            return NotImplemented
        o = <RecordMetadata>other
        return (self.topic, self.partition, self.offset, self.timestamp) == (o.topic, o.partition, o.offset, o.timestamp)

    def __hash__(self):
        return hash((self.topic, self.partition, self.offset))


cdef class TopicRoute:
    """One topic as a producer sees it: its partitions' logs, the sticky partition, and the
    producer's next sequence number per partition."""

    def __cinit__(self, str name, list logs, bint compacted, bint durable=False):
        if not logs:
            raise InvalidArgumentError("a topic has at least one partition")
        self.name = name
        self.logs = list(logs)
        self.count = len(logs)
        self.compacted = compacted
        self.durable = durable
        self.sticky = -1
        self.sticky_bytes = 0
        self.sequences = SequenceCounters(self.count)

    @property
    def partitions(self):
        return self.count

    @property
    def sequence_counters(self):
        return self.sequences

    def next_sequence(self, int partition):
        return self.sequences[partition]

    def adopt_sequences(self, TopicRoute old):
        """Share the sequence counters of the route this one replaces (after a topic change):
        restarting at 0 would make the next records look like retries of the first ones, and
        threads still holding the old route must advance the same counters."""
        old.sequences.ensure(self.count)
        self.sequences = old.sequences


cdef inline Py_ssize_t _size_of(object b) except -2:
    # an estimate for the sticky partitioner; the log validates the value itself
    if type(b) is bytes:
        return PyBytes_GET_SIZE(b)
    try:
        return memoryview(b).nbytes
    except TypeError:
        return 0


cdef class ProducerCore:
    """Native state of a producer; see ``logstore.client.producer.Producer``."""

    def __cinit__(self, *args, **kwargs):
        self._routes = {}
        self._partitioner = 0
        self._batch_size = 16384
        self._producer_id = -1
        self._producer_epoch = -1
        self._rng = <uint64_t>ls_now_ms() * 0x9E3779B97F4A7C15ULL + 1
        self._closed = False

    cdef uint64_t _random(self) noexcept:
        # xorshift64*: the sticky partitioner only needs an even spread
        self._rng ^= self._rng >> 12
        self._rng ^= self._rng << 25
        self._rng ^= self._rng >> 27
        return self._rng * 0x2545F4914F6CDD1DULL

    cdef int _pick(self, TopicRoute route, object key, Py_ssize_t value_size) except -1:
        cdef const unsigned char[::1] mv
        cdef const unsigned char *p
        cdef Py_ssize_t n
        cdef int nxt
        if key is not None:
            if type(key) is bytes:
                p = <const unsigned char *>PyBytes_AS_STRING(key)
                n = PyBytes_GET_SIZE(key)
            else:
                try:
                    mv = memoryview(key).cast("B")
                except TypeError:
                    raise InvalidRecordError(
                        f"a key must be bytes-like (or set key_serializer), not {type(key).__name__}") from None
                n = mv.shape[0]
                p = &mv[0] if n else <const unsigned char *>b""
            if self._partitioner == 1:
                return <int>((ls_murmur2(p, n) & 0x7fffffffU) % <uint32_t>route.count)
            return <int>(ls_xxh64(p, n, 0) % <uint64_t>route.count)
        # keyless: stay on one partition until a batch's worth went there (Kafka's sticky partitioner)
        if route.sticky < 0 or route.sticky_bytes >= self._batch_size:
            if route.count == 1:
                nxt = 0
            elif route.sticky < 0:
                nxt = <int>(self._random() % <uint64_t>route.count)
            else:
                nxt = <int>(self._random() % <uint64_t>(route.count - 1))
                if nxt >= route.sticky:
                    nxt += 1
            route.sticky = nxt
            route.sticky_bytes = 0
        route.sticky_bytes += value_size + 16
        return route.sticky

    def send(self, topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        """Append one record to ``topic``; returns its :class:`RecordMetadata` (a retried
        idempotent send returns the original offset)."""
        cdef TopicRoute route
        cdef int p
        if self._closed:
            raise LogClosedError("the producer is closed")
        if type(topic) is not str:
            raise InvalidArgumentError(f"a topic name is a str, not {type(topic).__name__}")
        r = self._routes.get(topic)
        route = <TopicRoute>(r if r is not None else self._route(topic))
        if partition is None:
            p = self._pick(route, key, _size_of(value) if route.count > 1 and key is None else 0)
        else:
            if type(partition) is not int:
                raise InvalidArgumentError(f"partition must be an int, not {type(partition).__name__}")
            p = partition
            if not 0 <= p < route.count:
                raise UnknownTopicError(f"partition {partition} of topic {topic!r} does not exist "
                                        f"(it has {route.count})")
        if route.compacted and key is None:
            raise InvalidRecordError(f"topic {topic!r} is compacted: every record needs a key")
        try:
            return self._append(route, p, value, key, headers, timestamp_ms)
        except LogClosedError:
            if self._closed:
                raise
            # the topic was deleted or its logs replaced since this route was resolved
            self._invalidate_route(topic)
            return self._append(<TopicRoute>self._route(topic), p, value, key, headers, timestamp_ms)

    cdef RecordMetadata _append(self, TopicRoute route, int p, value, key, headers, timestamp_ms):
        cdef LogCore log = <LogCore>route.logs[p]
        cdef int64_t offset, ts
        if self._producer_id >= 0:
            offset = log.append_record(value, key, headers, timestamp_ms, self._producer_id,
                                       self._producer_epoch, route.sequences, p, &ts)
        else:
            offset = log.append_record(value, key, headers, timestamp_ms, -1, -1, None, -1, &ts)
        if route.durable:
            # the topic's flush="always": return once the record is fsynced (group commit)
            (<object>log)._sync_through(offset + 1)
        return RecordMetadata(route.name, p, offset, ts)

    def send_to(self, TopicRoute route, int partition, value=None, key=None, headers=None, timestamp_ms=None):
        """Append to a partition the caller chose (custom partitioners, serializers)."""
        if self._closed:
            raise LogClosedError("the producer is closed")
        if not 0 <= partition < route.count:
            raise UnknownTopicError(f"partition {partition} of topic {route.name!r} does not exist")
        if route.compacted and key is None:
            raise InvalidRecordError(f"topic {route.name!r} is compacted: every record needs a key")
        return self._append(route, partition, value, key, headers, timestamp_ms)

    def partition_for(self, TopicRoute route, key, Py_ssize_t value_size=0):
        """The partition the built-in partitioner picks (advances the sticky state for keyless)."""
        return self._pick(route, key, value_size)

    @property
    def routes(self):
        """topic -> TopicRoute this producer has resolved (the Python layer adds and drops them)."""
        return self._routes

    def _route(self, str topic):  # pragma: no cover - the Python subclass provides it
        raise NotImplementedError

    def _invalidate_route(self, str topic):  # pragma: no cover - the Python subclass provides it
        self._routes.pop(topic, None)
