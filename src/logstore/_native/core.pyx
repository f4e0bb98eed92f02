# cython: language_level=3, boundscheck=False, cdivision=True
"""Hot paths of a partition log: append (one, many, arrays, raw batches) and read.

``logstore.log.partition.PartitionLog`` subclasses ``LogCore`` in Python and owns everything
that is not per-record: opening, recovery, roll, retention, truncation, checkpoints. Both sides
take the same reentrant lock, so a Python slow path and a native append never interleave; the
lock releases the GIL while it waits, and I/O releases the GIL while it runs.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

from fastrlock.rlock cimport create_fastrlock, lock_fastrlock, unlock_fastrlock

from logstore._native.codec cimport (BatchInfo, RecordBatchView, RecordInputs, RecordSpec,
                                     check_batch, now_ms, plan_batch, raise_batch_error, write_batch)
from logstore._native.includes cimport *
from logstore._native.segment cimport Segment

from logstore.errors import (InvalidArgumentError, InvalidRecordError, LogClosedError, OffsetOutOfRangeError,
                             OutOfOrderSequenceError, ProducerFencedError, RecordTooLargeError,
                             UnsupportedCodecError)

DEF MAX_RELATIVE_OFFSET = 0x7fffffff
DEF NO_LIMIT = 0x7fffffffffffffff
# single-record appends share a batch up to this size (Kafka's producer batch.size default)
DEF OPEN_BATCH_BYTES = 16384
# a segment's name is its base offset and its index holds offsets relative to it as 32 bits:
# recovery ignores segments based past 2**63 - 1 - 2**32, so no offset may reach there
DEF MAX_USABLE_OFFSET = 0x7fffffffffffffff - 0x100000000


cdef int check_offset_space(int64_t log_end, int64_t count) except -1:
    if count > MAX_USABLE_OFFSET - log_end:
        raise OffsetOutOfRangeError(
            f"offset space exhausted: {count} more records after offset {log_end} would pass {MAX_USABLE_OFFSET}")
    return 0

cdef bytes EMPTY = b""
# an idempotent producer's retried batch is recognised among its last this many batches (Kafka's 5)
DEF PRODUCER_WINDOW = 5
DEF INT32_MAX = 0x7fffffff


cdef inline int32_t next_sequence(int32_t seq) noexcept nogil:
    return 0 if seq == INT32_MAX else seq + 1


cdef class ProducerEntry:
    """What a partition remembers of one idempotent producer: its epoch, last sequence, and the
    sequence/offset ranges of its last ``PRODUCER_WINDOW`` batches (to answer a retry)."""

    def __cinit__(self, int64_t producer_id, int16_t epoch):
        self.producer_id = producer_id
        self.epoch = epoch
        self.last_sequence = -1
        self.last_offset = -1
        self.count = 0
        self.head = -1

    cdef void push(self, int32_t first_seq, int32_t last_seq, int64_t first_offset) noexcept:
        self.head = (self.head + 1) % PRODUCER_WINDOW
        self.first_seqs[self.head] = first_seq
        self.last_seqs[self.head] = last_seq
        self.first_offsets[self.head] = first_offset
        if self.count < PRODUCER_WINDOW:
            self.count += 1
        self.last_sequence = last_seq
        self.last_offset = first_offset + (<int64_t>last_seq - first_seq)

    cdef void extend(self, int32_t last_seq) noexcept:
        """The newest batch grew by records up to ``last_seq`` (consecutive single appends)."""
        self.last_offset += <int64_t>last_seq - self.last_seqs[self.head]
        self.last_seqs[self.head] = last_seq
        self.last_sequence = last_seq

    cdef int64_t find(self, int32_t first_seq, int32_t last_seq) noexcept:
        """Offset at which sequences first_seq..last_seq were appended, or -1."""
        cdef int i, k
        for k in range(self.count):
            i = (self.head - k + PRODUCER_WINDOW) % PRODUCER_WINDOW
            if self.first_seqs[i] <= first_seq and last_seq <= self.last_seqs[i] and first_seq <= last_seq:
                return self.first_offsets[i] + (first_seq - self.first_seqs[i])
        return -1

    def batches(self):
        """The remembered batches, oldest first: (first sequence, last sequence, first offset)."""
        cdef int i, k
        out = []
        for k in range(self.count - 1, -1, -1):
            i = (self.head - k + PRODUCER_WINDOW) % PRODUCER_WINDOW
            out.append((self.first_seqs[i], self.last_seqs[i], self.first_offsets[i]))
        return out


cdef class ProducerStateTable:
    """Idempotent producers seen by one partition (Kafka's ProducerStateManager, in memory).

    ``check`` runs before an append and ``update`` after it, both under the log's lock. The
    Python layer persists it (``snapshot``/``restore``) and rebuilds it from batch headers."""

    def __cinit__(self):
        self.entries = {}
        self.last = None

    cdef ProducerEntry get(self, int64_t producer_id):
        if self.last is not None and self.last.producer_id == producer_id:
            return self.last
        entry = self.entries.get(producer_id)
        if entry is not None:
            self.last = <ProducerEntry>entry
        return <ProducerEntry>entry if entry is not None else None

    cdef int64_t check(self, int64_t producer_id, int16_t epoch, int32_t first_seq,
                       int32_t last_seq) except -2:
        """-1: append; >= 0: a retry of records already at that offset; raises if out of order."""
        cdef ProducerEntry entry
        cdef int64_t dup
        if producer_id < 0:
            return -1
        if first_seq < 0 or epoch < 0:
            raise OutOfOrderSequenceError(
                f"producer {producer_id}: an idempotent batch needs a sequence and epoch >= 0, got {first_seq}/{epoch}")
        entry = self.get(producer_id)
        if entry is None:
            # as Kafka: an unknown producer may start anywhere (its state can have been removed
            # with the segments that held it)
            return -1
        if epoch > entry.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {producer_id} has a new epoch {epoch}: its first sequence must be 0, not {first_seq}")
            return -1
        if epoch < entry.epoch:
            raise ProducerFencedError(
                f"producer {producer_id} epoch {epoch} is fenced: this partition has seen epoch {entry.epoch}")
        if first_seq == next_sequence(entry.last_sequence):
            return -1
        dup = entry.find(first_seq, last_seq)
        if dup >= 0:
            return dup
        raise OutOfOrderSequenceError(
            f"producer {producer_id} epoch {epoch}: expected sequence {next_sequence(entry.last_sequence)}, "
            f"got {first_seq} (not a retry of any of its last {PRODUCER_WINDOW} batches)")

    cdef int update(self, int64_t producer_id, int16_t epoch, int32_t first_seq, int32_t last_seq,
                    int64_t first_offset, bint extended) except -1:
        """Record an append; ``extended``: the records joined the producer's newest batch."""
        cdef ProducerEntry entry
        if producer_id < 0:
            return 0
        entry = self.get(producer_id)
        if entry is None or epoch != entry.epoch:
            entry = ProducerEntry(producer_id, epoch)
            self.entries[producer_id] = entry
            self.last = entry
            extended = False
        if extended and entry.count:
            entry.extend(last_seq)
        else:
            entry.push(first_seq, last_seq, first_offset)
        return 0

    def replay(self, int64_t producer_id, int producer_epoch, int32_t first_seq, int32_t last_seq,
               int64_t first_offset):
        """Apply one batch read back from the log (rebuilding the table on open/truncation)."""
        cdef ProducerEntry entry
        if producer_id < 0 or first_seq < 0:
            return
        entry = self.get(producer_id)
        if entry is not None and producer_epoch < entry.epoch:
            return
        self.update(producer_id, <int16_t>producer_epoch, first_seq, last_seq, first_offset, False)

    def snapshot(self):
        """[(producer id, epoch, [(first seq, last seq, first offset), ...]), ...]"""
        return [(e.producer_id, e.epoch, e.batches()) for e in self.entries.values()]

    def restore(self, entries):
        cdef ProducerEntry entry
        self.entries = {}
        self.last = None
        for producer_id, epoch, batches in entries:
            entry = ProducerEntry(producer_id, epoch)
            for first_seq, last_seq, first_offset in batches:
                entry.push(first_seq, last_seq, first_offset)
            self.entries[producer_id] = entry

    def clear(self):
        self.entries = {}
        self.last = None

    def entry(self, int64_t producer_id):
        """(epoch, last sequence, last offset) of a producer, or None."""
        cdef ProducerEntry e = self.get(producer_id)
        return None if e is None else (e.epoch, e.last_sequence, e.last_offset)

    def __len__(self):
        return len(self.entries)


cdef class SequenceCounters:
    """A producer's next sequence number per partition of one topic. The log reads and advances
    a counter under its own lock, so threads sharing a producer never take the same number, and
    a record that failed to append does not use one up."""

    def __cinit__(self, Py_ssize_t count):
        self.values = NULL
        self.capacity = 0
        self.grow(count)

    def __dealloc__(self):
        PyMem_Free(self.values)

    cdef int grow(self, Py_ssize_t count) except -1:
        cdef int32_t *p
        cdef Py_ssize_t i
        if count <= self.capacity:
            return 0
        p = <int32_t *>PyMem_Realloc(self.values, count * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        for i in range(self.capacity, count):
            p[i] = 0
        self.values = p
        self.capacity = count
        return 0

    def ensure(self, Py_ssize_t count):
        """Room for ``count`` partitions (a topic grew); existing counters are kept."""
        self.grow(count)

    def __getitem__(self, Py_ssize_t i):
        if not 0 <= i < self.capacity:
            raise IndexError(i)
        return self.values[i]

    def __len__(self):
        return self.capacity


cdef class AppendNotifier:
    """Wakes consumers blocked in poll when a log they read gets data. Appenders pay one int
    check unless someone is waiting."""

    def __cinit__(self):
        import threading
        self.cond = threading.Condition(threading.Lock())
        self.waiters = 0
        self.version = 0

    cdef void notify(self) noexcept:
        # called with the log's lock held: never block on anything but the condition's lock
        self.version += 1
        if self.waiters:
            try:
                with self.cond:
                    self.cond.notify_all()
            except BaseException:
                pass

    def wake(self):
        self.notify()

    def wait(self, uint64_t seen_version, double timeout):
        """Wait until an append after ``seen_version`` (or timeout). Returns the new version."""
        with self.cond:
            if self.version == seen_version:
                self.waiters += 1
                try:
                    self.cond.wait(timeout)
                finally:
                    self.waiters -= 1
        return self.version

    @property
    def current_version(self):
        return self.version


cdef class LogCore:
    """Native state and hot paths of one partition log (use ``PartitionLog.open``)."""

    def __cinit__(self, *args, **kwargs):
        self._lock = create_fastrlock()
        self._segments = []
        self._active = None
        self._inputs = RecordInputs()
        self.log_end_offset = 0
        self._log_start_offset = 0
        self._high_watermark = 0
        self._segment_bytes = 1 << 30
        self._segment_ms = 0
        self._max_record_bytes = 1048588
        self._leader_epoch = 0
        self._verify_crc = True
        self._log_append_time = False
        self._closed = True
        self._hw_follows_leo = False
        self._producers = ProducerStateTable()
        self._notifier = None

    cdef int _enter(self) except -1:
        lock_fastrlock(self._lock, -1, True)
        if self._closed:
            unlock_fastrlock(self._lock)
            raise LogClosedError("the log is closed")
        return 0

    cdef void _exit(self) noexcept:
        unlock_fastrlock(self._lock)

    def _install_segments(self, list segments):
        """Adopt ``segments`` (sorted, last one active); called by the Python layer under the lock."""
        self._segments = segments
        self._active = segments[-1] if segments else None
        self.log_end_offset = self._active.next_offset if self._active is not None else 0

    # -- append ------------------------------------------------------------------------------

    def append(self, value, key=None, headers=None, timestamp=None):
        """Append one record; returns its offset. Consecutive single appends share one batch in
        a user-space buffer, handed to the OS within ``flush_interval_ms`` (or at the next
        read, batch append, ``flush_buffer()`` or ``flush()``)."""
        cdef int64_t ts
        return self.append_record(value, key, headers, timestamp, -1, -1, None, -1, &ts)

    cdef int64_t append_record(self, value, key, headers, timestamp, int64_t producer_id,
                               int16_t producer_epoch, SequenceCounters counters, Py_ssize_t slot,
                               int64_t *out_timestamp) except -2:
        """One record (the producer's hot path). An idempotent producer passes its counters:
        the record gets ``counters[slot]`` as its sequence, advanced once it is appended.
        Returns the offset."""
        cdef int64_t now, offset, dup
        cdef Py_ssize_t size, cnt
        cdef RecordSpec *spec
        cdef int16_t attrs = 0
        cdef int joined
        cdef int32_t sequence = -1
        self._enter()
        try:
            if producer_id >= 0:
                if not 0 <= slot < counters.capacity:
                    raise InvalidArgumentError(f"no sequence counter for partition {slot}")
                sequence = counters.values[slot]
                dup = self._producers.check(producer_id, producer_epoch, sequence, sequence)
                if dup >= 0:
                    counters.values[slot] = next_sequence(sequence)  # the retry used its number
                    out_timestamp[0] = -1
                    return dup
            check_offset_space(self.log_end_offset, 1)
            now = now_ms()
            self._inputs.load_one(value, key, headers, timestamp, now)
            spec = self._inputs.specs
            if self._log_append_time:
                spec.timestamp = now
                attrs = LS_TIMESTAMP_TYPE_MASK
            size = plan_batch(spec, 1, self._max_record_bytes, &cnt)
            if size > self._max_record_bytes:
                raise RecordTooLargeError(
                    f"record needs a {size}-byte batch, over max_record_bytes={self._max_record_bytes}")
            self._maybe_roll(size, 1, now)
            offset = self.log_end_offset
            if self._active.created_ms < 0:
                self._active.created_ms = now
            joined = self._active.append_single(spec, offset, self._leader_epoch, attrs,
                                                min(OPEN_BATCH_BYTES, self._max_record_bytes),
                                                producer_id, producer_epoch, sequence)
            self.log_end_offset = offset + 1
            if producer_id >= 0:
                self._producers.update(producer_id, producer_epoch, sequence, sequence, offset, joined)
                counters.values[slot] = next_sequence(sequence)
            out_timestamp[0] = spec.timestamp
            self._appended()
            return offset
        finally:
            self._inputs.clear()
            self._exit()

    cdef void _appended(self) noexcept:
        if self._hw_follows_leo:
            self._high_watermark = self.log_end_offset
        if self._notifier is not None:
            (<AppendNotifier>self._notifier).notify()

    def append_many(self, values, keys=None, headers=None, timestamps=None, *,
                    int64_t producer_id=-1, int producer_epoch=-1, int64_t base_sequence=-1,
                    SequenceCounters sequence_counters=None, Py_ssize_t counter_slot=-1):
        """Append records (one batch per ``max_record_bytes``); returns the first offset.

        ``keys``/``headers``/``timestamps`` are None or one item per value; ``timestamps`` may
        also be one int for all or an integer numpy array. The producer fields are stamped into
        the batch headers (idempotent producers)."""
        cdef int64_t now, first, dup, last_seq
        if sequence_counters is not None and producer_id >= 0:
            if not 0 <= counter_slot < sequence_counters.capacity:
                raise InvalidArgumentError(f"no sequence counter for partition {counter_slot}")
            base_sequence = 0  # read under the lock below
        if producer_id >= 0 and not 0 <= base_sequence <= INT32_MAX:
            raise OutOfOrderSequenceError(f"base_sequence {base_sequence} is not a valid sequence number")
        if producer_id >= 0 and not 0 <= producer_epoch <= 0x7fff:
            raise InvalidArgumentError(f"producer_epoch {producer_epoch} is not in [0, 32767]")
        self._enter()
        try:
            now = now_ms()
            self._inputs.load(values, keys, headers, timestamps, now)
            if self._inputs.count == 0:
                return self.log_end_offset
            if sequence_counters is not None and producer_id >= 0:
                base_sequence = sequence_counters.values[counter_slot]
            last_seq = base_sequence + self._inputs.count - 1
            if producer_id >= 0:
                if last_seq > INT32_MAX:
                    raise OutOfOrderSequenceError("the batch's sequence numbers would pass 2**31 - 1")
                dup = self._producers.check(producer_id, <int16_t>producer_epoch, <int32_t>base_sequence,
                                            <int32_t>last_seq)
                if dup >= 0:
                    if sequence_counters is not None:
                        sequence_counters.values[counter_slot] = next_sequence(<int32_t>last_seq)
                    return dup
            first = self._write(now, producer_id, producer_epoch, base_sequence)
            self._active.drain()  # one syscall per call: the batch survives a process crash
            if producer_id >= 0:
                self._producers.update(producer_id, <int16_t>producer_epoch, <int32_t>base_sequence,
                                       <int32_t>last_seq, first, False)
                if sequence_counters is not None:
                    sequence_counters.values[counter_slot] = next_sequence(<int32_t>last_seq)
            self._appended()
            return first
        finally:
            self._inputs.clear()
            self._exit()

    def append_arrays(self, values, value_lengths, keys=None, key_lengths=None, timestamps=None):
        """Append records packed in buffers: ``values`` holds the values back to back and
        ``value_lengths`` their lengths (-1: null); likewise ``keys``/``key_lengths``.
        ``timestamps`` is None or an int64 array. Returns the first offset."""
        cdef int64_t now, first
        self._enter()
        try:
            now = now_ms()
            self._inputs.load_arrays(values, value_lengths, keys, key_lengths, timestamps, now)
            first = self._write(now, -1, -1, -1)
            self._active.drain()
            self._appended()
            return first
        finally:
            self._inputs.clear()
            self._exit()

    cdef int64_t _write(self, int64_t now, int64_t producer_id, int producer_epoch,
                        int64_t base_sequence) except -1:
        cdef RecordSpec *specs = self._inputs.specs
        cdef Py_ssize_t n = self._inputs.count, i = 0, cnt, size
        cdef int64_t first = self.log_end_offset, base, max_ts
        cdef int16_t attrs = 0
        cdef unsigned char *out
        cdef Segment seg
        if n == 0:
            return first
        check_offset_space(first, n)
        if self._log_append_time:
            attrs = LS_TIMESTAMP_TYPE_MASK
            for i in range(n):
                specs[i].timestamp = now
            i = 0
        # every record must fit a batch of its own before anything is written
        for i in range(n):
            size = plan_batch(specs + i, 1, self._max_record_bytes, &cnt)
            if size > self._max_record_bytes:
                raise RecordTooLargeError(
                    f"record {i} needs a {size}-byte batch, over max_record_bytes={self._max_record_bytes}")
        i = 0
        while i < n:
            size = plan_batch(specs + i, n - i, self._max_record_bytes, &cnt)
            self._maybe_roll(size, cnt, now)
            seg = self._active
            out = seg.reserve(size)
            base = self.log_end_offset
            write_batch(out, specs + i, cnt, size, base, self._leader_epoch, producer_id,
                        <int16_t>producer_epoch, <int32_t>(base_sequence + i if base_sequence >= 0 else -1), attrs)
            if seg.created_ms < 0:
                seg.created_ms = now
            max_ts = ls_load_i64(out + LS_MAX_TIMESTAMP)
            seg.commit(size, base, base + cnt - 1, max_ts)
            self.log_end_offset = base + cnt
            i += cnt
        return first

    def append_batch(self, data):
        """Append raw record batch v2 bytes (one or more whole batches, e.g. from a Kafka
        producer). Each batch is validated (size, magic, CRC32C, codec, record framing), then
        gets the log's offsets and leader epoch; the CRC stays valid because it does not cover
        them. Returns the first offset assigned."""
        cdef const unsigned char[::1] mv
        cdef const unsigned char *p
        cdef Py_ssize_t n, pos = 0, count = 0
        cdef BatchInfo info
        cdef int rc
        cdef int64_t first, base, now, pid, call_pid = -1, dup = -1, last_seq
        cdef int16_t pepoch, prev_epoch = -1
        cdef int32_t seq, prev_last = -1
        cdef bint duplicate = False
        cdef unsigned char *out
        cdef Segment seg
        try:
            mv = memoryview(data).cast("B")
        except TypeError:
            raise InvalidRecordError(f"a raw batch must be bytes-like, not {type(data).__name__}")
        n = mv.shape[0]
        if n == 0:
            raise InvalidRecordError("a raw batch must not be empty")
        p = &mv[0]
        self._enter()
        try:
            # validate everything first: nothing is written unless every batch is good
            while pos < n:
                rc = check_batch(p + pos, n - pos, &info, True, True)
                if rc == 5:
                    raise UnsupportedCodecError(
                        f"raw batch at byte {pos} is compressed (codec {info.attributes & 7}); "
                        "only uncompressed batches are supported")
                if rc != 0:
                    try:
                        raise_batch_error(rc, pos)
                    except Exception as e:
                        raise InvalidRecordError(f"raw batch rejected: {e}") from None
                if info.attributes & LS_CONTROL_MASK or info.attributes & LS_TRANSACTIONAL_MASK:
                    raise InvalidRecordError("transactional and control batches are not supported yet")
                if info.size > self._max_record_bytes:
                    raise RecordTooLargeError(
                        f"raw batch of {info.size} bytes is over max_record_bytes={self._max_record_bytes}")
                if info.record_count == 0:
                    raise InvalidRecordError("a raw batch must hold at least one record")
                pid = ls_load_i64(p + pos + LS_PRODUCER_ID)
                if pid >= 0:
                    pepoch = ls_load_i16(p + pos + LS_PRODUCER_EPOCH)
                    seq = ls_load_i32(p + pos + LS_BASE_SEQUENCE)
                    last_seq = seq + (info.last_offset - info.base_offset)
                    if last_seq > INT32_MAX:
                        raise OutOfOrderSequenceError(f"raw batch at byte {pos}: sequences pass 2**31 - 1")
                    if pos == 0:
                        call_pid = pid
                        dup = self._producers.check(pid, pepoch, seq, <int32_t>last_seq)
                        duplicate = dup >= 0
                    elif pid != call_pid or pepoch != prev_epoch or seq != next_sequence(prev_last):
                        raise OutOfOrderSequenceError(
                            f"raw batch at byte {pos}: an idempotent call must hold one producer's consecutive batches")
                    elif duplicate and self._producers.check(pid, pepoch, seq, <int32_t>last_seq) < 0:
                        raise OutOfOrderSequenceError(f"raw batch at byte {pos}: part of the call is a retry, part is not")
                    prev_epoch = pepoch
                    prev_last = <int32_t>last_seq
                elif pos != 0 and call_pid >= 0:
                    raise OutOfOrderSequenceError("an idempotent call must hold one producer's batches only")
                count += info.last_offset - info.base_offset + 1
                pos += info.size
            if duplicate:
                return dup
            check_offset_space(self.log_end_offset, count)
            first = self.log_end_offset
            now = now_ms()
            pos = 0
            while pos < n:
                check_batch(p + pos, n - pos, &info, False, False)
                count = info.last_offset - info.base_offset + 1
                self._maybe_roll(info.size, count, now)
                seg = self._active
                out = seg.reserve(info.size)
                memcpy(out, p + pos, info.size)
                base = self.log_end_offset
                ls_store_i64(out + LS_BASE_OFFSET, base)
                ls_store_i32(out + LS_LEADER_EPOCH, self._leader_epoch)
                if self._log_append_time:
                    ls_store_i16(out + LS_ATTRIBUTES, info.attributes | LS_TIMESTAMP_TYPE_MASK)
                    ls_store_i64(out + LS_MAX_TIMESTAMP, now)
                    ls_store_u32(out + LS_CRC, ls_crc32c(0, out + LS_CRC_START, info.size - LS_CRC_START))
                    info.max_timestamp = now
                if seg.created_ms < 0:
                    seg.created_ms = now
                seg.commit(info.size, base, base + count - 1, info.max_timestamp)
                self.log_end_offset = base + count
                pid = ls_load_i64(out + LS_PRODUCER_ID)
                if pid >= 0:
                    seq = ls_load_i32(out + LS_BASE_SEQUENCE)
                    self._producers.update(pid, ls_load_i16(out + LS_PRODUCER_EPOCH), seq,
                                           <int32_t>(seq + count - 1), base, False)
                pos += info.size
            self._active.drain()
            self._appended()
            return first
        finally:
            self._exit()

    cdef int _maybe_roll(self, Py_ssize_t size, Py_ssize_t count, int64_t now) except -1:
        cdef Segment seg = self._active
        if seg.file_size + seg.wlen == 0:
            return 0
        if (seg.file_size + seg.wlen + size > self._segment_bytes
                or self.log_end_offset + count - 1 - seg.base_offset > MAX_RELATIVE_OFFSET
                or seg.offset_index.entries + 1 >= seg.offset_index.max_entries
                or seg.time_index.entries + 1 >= seg.time_index.max_entries
                or (self._segment_ms > 0 and seg.created_ms >= 0 and now - seg.created_ms >= self._segment_ms)):
            self._roll()
        return 0

    # -- read --------------------------------------------------------------------------------

    cdef Py_ssize_t _segment_index(self, int64_t offset) noexcept:
        """Index of the last segment whose base offset is <= ``offset``."""
        cdef Py_ssize_t lo = 0, hi = len(self._segments), mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if (<Segment>self._segments[mid]).base_offset <= offset:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1 if lo > 0 else 0

    cdef RecordBatchView _read(self, int64_t offset, Py_ssize_t max_bytes, int64_t max_offset):
        cdef Py_ssize_t i
        cdef Segment seg
        cdef RecordBatchView view
        if offset < self._log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log [{self._log_start_offset}, {self.log_end_offset}]")
        if max_offset > self.log_end_offset:
            max_offset = self.log_end_offset
        if offset >= max_offset:
            return RecordBatchView(EMPTY, 0, 0, offset, max_offset)
        i = self._segment_index(offset)
        while i < len(self._segments):
            seg = <Segment>self._segments[i]
            if seg.wlen:
                seg.drain()
            view = seg.read_from(offset, max_bytes, max_offset, self._verify_crc)
            if view is not None:
                return view
            i += 1
        return RecordBatchView(EMPTY, 0, 0, offset, max_offset)

    def read(self, int64_t offset, Py_ssize_t max_bytes=1 << 20, max_offset=None):
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (always at least
        one batch), as a zero-copy :class:`RecordBatchView` of the records with
        ``offset <= record offset < max_offset`` (default: the log end offset)."""
        if max_bytes <= 0:
            raise InvalidArgumentError(f"max_bytes must be positive, not {max_bytes}")
        self._enter()
        try:
            return self._read(offset, max_bytes, NO_LIMIT if max_offset is None else max_offset)
        finally:
            self._exit()

    def position_of(self, int64_t offset):
        """``(segment base offset, file position)`` of the batch holding ``offset``."""
        cdef Segment seg
        cdef BatchInfo info
        cdef Py_ssize_t pos
        self._enter()
        try:
            if offset < self._log_start_offset or offset >= self.log_end_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside the log [{self._log_start_offset}, {self.log_end_offset})")
            seg = <Segment>self._segments[self._segment_index(offset)]
            if seg.wlen:
                seg.drain()
            pos = seg.locate(offset, &info)
            return (seg.base_offset, pos)
        finally:
            self._exit()

    @property
    def log_start_offset(self):
        return self._log_start_offset

    @property
    def high_watermark(self):
        return self._high_watermark

    @property
    def leader_epoch(self):
        return self._leader_epoch

    @property
    def closed(self):
        return self._closed

    @property
    def producer_state(self):
        """The idempotent producers this partition has seen (:class:`ProducerStateTable`)."""
        return self._producers
