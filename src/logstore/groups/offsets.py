"""Committed offsets and group metadata, stored in the compacted topic ``__consumer_offsets``.

Every commit appends one batch to the topic (so a commit of several partitions is atomic: a
batch is written whole or recovery drops it) and updates the in-memory table; on open the
table is rebuilt by replaying the topic, so offsets survive a restart and a kill -9. The
topic is compacted by key, so it holds about one record per (group, partition).

Record layout (big-endian; a leading tag byte makes keys of the two kinds never collide):

    offset key     0x01 | u16 len | group utf-8 | u16 len | topic utf-8 | i32 partition
    offset value   u8 version=1 | i64 offset | i32 leader epoch (-1: none) | i64 commit time ms
                   | u32 len | metadata utf-8                        (None value: deleted)
    group key      0x02 | u16 len | group utf-8
    group value    u8 version=1 | JSON {generation, protocol, leader, members: [...], time}
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from logstore._native.core import LogCore
from logstore.broker.types import TopicPartition
from logstore.errors import CorruptRecordError

if TYPE_CHECKING:
    from logstore.log.partition import PartitionLog

OFFSET_KEY_TAG = 0x01
GROUP_KEY_TAG = 0x02
VALUE_VERSION = 1

_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_OFFSET_VALUE = struct.Struct(">BqiqI")

MAX_GROUP_ID_BYTES = 0xFFFF


class OffsetAndMetadata(NamedTuple):
    """A committed position: ``offset`` is the next offset to read (as Kafka's)."""

    offset: int
    metadata: str = ""
    leader_epoch: int | None = None
    commit_timestamp: int = -1


@dataclass
class GroupRecord:
    """What the offsets topic keeps of a group besides its offsets: the last generation."""

    generation: int
    protocol: str | None
    leader: str | None
    members: list[dict[str, Any]]  # member_id, group_instance_id, client_id, topics, assignment [[t, p]]
    timestamp: int


def encode_offset_key(group: str, tp: TopicPartition) -> bytes:
    g = group.encode()
    t = tp.topic.encode()
    return b"\x01" + _U16.pack(len(g)) + g + _U16.pack(len(t)) + t + _I32.pack(tp.partition)


def encode_group_key(group: str) -> bytes:
    g = group.encode()
    return b"\x02" + _U16.pack(len(g)) + g


def encode_offset_value(om: OffsetAndMetadata) -> bytes:
    meta = om.metadata.encode()
    epoch = -1 if om.leader_epoch is None else om.leader_epoch
    return _OFFSET_VALUE.pack(VALUE_VERSION, om.offset, epoch, om.commit_timestamp, len(meta)) + meta


def encode_group_value(record: GroupRecord) -> bytes:
    body = {"generation": record.generation, "protocol": record.protocol, "leader": record.leader,
            "members": record.members, "time": record.timestamp}
    return bytes([VALUE_VERSION]) + json.dumps(body, separators=(",", ":")).encode()


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    if pos + n > len(buf):
        raise ValueError("string past the end")
    return buf[pos:pos + n].decode(), pos + n


def decode_key(key: bytes) -> tuple[str, TopicPartition | None]:
    """(group, partition) of an offset key, (group, None) of a group key."""
    if not key:
        raise ValueError("empty key")
    group, pos = _string(key, 1)
    if key[0] == GROUP_KEY_TAG and pos == len(key):
        return group, None
    if key[0] == OFFSET_KEY_TAG:
        topic, pos = _string(key, pos)
        if pos + 4 == len(key):
            return group, TopicPartition(topic, _I32.unpack_from(key, pos)[0])
    raise ValueError(f"unknown key layout (tag {key[0]})")


def decode_offset_value(value: bytes) -> OffsetAndMetadata:
    version, offset, epoch, ts, n = _OFFSET_VALUE.unpack_from(value, 0)
    if version != VALUE_VERSION or _OFFSET_VALUE.size + n != len(value):
        raise ValueError(f"offset value version {version}, {len(value)} bytes")
    meta = value[_OFFSET_VALUE.size:].decode()
    return OffsetAndMetadata(offset, meta, None if epoch < 0 else epoch, ts)


def decode_group_value(value: bytes) -> GroupRecord:
    if not value or value[0] != VALUE_VERSION:
        raise ValueError("group value version")
    body = json.loads(value[1:])
    return GroupRecord(int(body["generation"]), body["protocol"], body["leader"], list(body["members"]),
                       int(body["time"]))


class OffsetStore:
    """The in-memory table of committed offsets and group records, backed by the offsets log.

    Thread-safe; appends are serialized by an internal lock so the table and the log agree on
    the order of commits (the last commit of a partition wins in both).
    """

    def __init__(self, plog: PartitionLog) -> None:
        self._log = plog
        self._lock = threading.Lock()
        self.offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        self.groups: dict[str, GroupRecord] = {}
        self._replay()

    def _replay(self) -> None:
        for view in self._log.scan():
            for r in view:
                self._apply(r.key, r.value, r.offset)

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            raise CorruptRecordError(f"__consumer_offsets record at offset {offset} has no key")
        try:
            group, tp = decode_key(key)
            if tp is None:
                if value is None:
                    self.groups.pop(group, None)
                else:
                    self.groups[group] = decode_group_value(value)
            elif value is None:
                table = self.offsets.get(group)
                if table is not None:
                    table.pop(tp, None)
                    if not table:
                        del self.offsets[group]
            else:
                self.offsets.setdefault(group, {})[tp] = decode_offset_value(value)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CorruptRecordError(f"__consumer_offsets record at offset {offset} cannot be decoded: {e}") from None

    # -- writes ---------------------------------------------------------------------------------

    def commit(self, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata], sync: bool = True) -> int:
        """Store ``offsets`` of ``group`` (one batch: all or nothing); returns the batch's last
        offset. ``sync=False`` leaves the fsync of a flush="always" log to :meth:`sync_through`."""
        if not offsets:
            return -1
        now = int(time.time() * 1000)
        stamped = {tp: OffsetAndMetadata(om.offset, om.metadata, om.leader_epoch, now) for tp, om in offsets.items()}
        keys = [encode_offset_key(group, tp) for tp in stamped]
        values: list[bytes | None] = [encode_offset_value(om) for om in stamped.values()]
        with self._lock:
            # LogCore's append, not the log's durable wrapper: the fsync is the caller's to place
            first: int = LogCore.append_many(self._log, values, keys=keys)
            self.offsets.setdefault(group, {}).update(stamped)
        last = first + len(values) - 1
        if sync:
            self.sync_through(last)
        return last

    def sync_through(self, offset: int) -> None:
        """With flush="always", return once ``offset`` is fsynced (one fsync for all waiting)."""
        if offset >= 0 and self._log.durable_appends:
            self._log._sync_through(offset + 1)

    def delete_offsets(self, group: str, tps: Iterable[TopicPartition]) -> None:
        tps = [tp for tp in tps if tp in self.offsets.get(group, {})]
        if not tps:
            return
        with self._lock:
            self._log.append_many([None] * len(tps), keys=[encode_offset_key(group, tp) for tp in tps])
            table = self.offsets.get(group, {})
            for tp in tps:
                table.pop(tp, None)
            if not table:
                self.offsets.pop(group, None)

    def store_group(self, group: str, record: GroupRecord) -> None:
        value = encode_group_value(record)
        with self._lock:
            self._log.append_many([value], keys=[encode_group_key(group)])
            self.groups[group] = record

    def delete_group(self, group: str) -> None:
        """Tombstones for the group's offsets and record."""
        with self._lock:
            tps = list(self.offsets.get(group, {}))
            keys = [encode_offset_key(group, tp) for tp in tps] + [encode_group_key(group)]
            self._log.append_many([None] * len(keys), keys=keys)
            self.offsets.pop(group, None)
            self.groups.pop(group, None)

    # -- reads ----------------------------------------------------------------------------------

    def committed(self, group: str, tp: TopicPartition) -> OffsetAndMetadata | None:
        table = self.offsets.get(group)
        return None if table is None else table.get(tp)

    def group_offsets(self, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
        return dict(self.offsets.get(group, {}))

    def known_groups(self) -> set[str]:
        return set(self.offsets) | set(self.groups)

    def last_commit_ms(self, group: str) -> int:
        table = self.offsets.get(group, {})
        return max((om.commit_timestamp for om in table.values()), default=-1)
