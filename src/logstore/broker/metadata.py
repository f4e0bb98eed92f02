"""The durable topic catalogue of the embedded broker, and the topic id of each partition directory.

The catalogue is one JSON file, ``<data_dir>/meta/topics.json``: a format name and version, an
xxh64 of the payload (its canonical JSON encoding) and the payload (a generation counter and the
topics). Every change is written atomically (temp file, fsync, rename, fsync of the directory), so
after a kill -9 the file holds either the old or the new catalogue. A damaged file is a
CorruptRecordError, never an empty catalogue: an empty catalogue would make every partition
directory look stray.

Each partition directory holds ``partition.metadata`` with its topic's id (Kafka does the same),
so a directory left behind by a deleted topic is never adopted by a new topic of the same name.
Directories of deleted topics are first renamed to ``<name>.<uuid>-delete`` (atomic) and removed
later by :func:`purge_deleted`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import xxhash

from logstore.broker.topics import (
    check_collision,
    partition_dir_name,
    validate_partition_count,
    validate_topic_name,
)
from logstore.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidPartitionsError,
    TopicExistsError,
    UnknownTopicError,
)
from logstore.log.checkpoint import fsync_directory, write_atomic

__all__ = [
    "CATALOGUE_FILE",
    "META_DIR",
    "PARTITION_METADATA_FILE",
    "MetadataStore",
    "TopicRecord",
    "find_stray_partition_dirs",
    "mark_for_deletion",
    "new_topic_id",
    "purge_deleted",
    "read_partition_metadata",
    "write_partition_metadata",
]

log = logging.getLogger("logstore.broker")

META_DIR = "meta"
CATALOGUE_FILE = "topics.json"
CATALOGUE_FORMAT = "logstore-topics"
CATALOGUE_VERSION = 1
PARTITION_METADATA_FILE = "partition.metadata"
PARTITION_METADATA_VERSION = 0

_TOPIC_ID = re.compile(r"[0-9a-f]{32}")
_PARTITION_DIR = re.compile(r"(?P<topic>.+)-(?P<partition>0|[1-9][0-9]*)")
_DELETE_DIR = re.compile(r".+\.[0-9a-f]{32}-delete")
_DELETE_SUFFIX_LENGTH = len(".") + 32 + len("-delete")
_MAX_FILE_NAME = 255


def new_topic_id() -> str:
    return uuid.uuid4().hex


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TopicRecord:
    """One topic of the catalogue. ``config`` holds only the overrides (TopicConfig.overrides())."""

    name: str
    topic_id: str
    partitions: int
    config: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0

    def __post_init__(self) -> None:
        validate_topic_name(self.name)
        if not isinstance(self.topic_id, str) or not _TOPIC_ID.fullmatch(self.topic_id):
            raise InvalidArgumentError(f"topic_id must be 32 lowercase hex digits, not {self.topic_id!r}")
        validate_partition_count(self.partitions)
        if not isinstance(self.config, Mapping) or not all(isinstance(k, str) for k in self.config):
            raise InvalidArgumentError("config must be a mapping with str keys")
        if isinstance(self.created_ms, bool) or not isinstance(self.created_ms, int) or self.created_ms < 0:
            raise InvalidArgumentError(f"created_ms must be a non-negative int, not {self.created_ms!r}")
        object.__setattr__(self, "config", dict(self.config))  # our own copy: the record is immutable in use

    @classmethod
    def new(cls, name: str, partitions: int, config: Mapping[str, Any] | None = None,
            created_ms: int | None = None) -> TopicRecord:
        """A record for a topic being created: fresh topic id, created now."""
        return cls(name, new_topic_id(), partitions, dict(config or {}),
                   _now_ms() if created_ms is None else created_ms)

    def with_partitions(self, partitions: int) -> TopicRecord:
        return replace(self, partitions=partitions)

    def with_config(self, config: Mapping[str, Any]) -> TopicRecord:
        return replace(self, config=dict(config))

    def partition_dirs(self) -> list[str]:
        """Directory names (under the data directory) of this topic's partitions."""
        return [partition_dir_name(self.name, p) for p in range(self.partitions)]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "topic_id": self.topic_id, "partitions": self.partitions,
                "config": dict(self.config), "created_ms": self.created_ms}

    @classmethod
    def from_json(cls, obj: object) -> TopicRecord:
        if not isinstance(obj, dict) or set(obj) != {"name", "topic_id", "partitions", "config", "created_ms"}:
            raise ValueError(f"not a topic record: {obj!r}")
        return cls(obj["name"], obj["topic_id"], obj["partitions"], obj["config"], obj["created_ms"])


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _encode_catalogue(generation: int, topics: Mapping[str, TopicRecord]) -> bytes:
    payload = {"generation": generation, "topics": [topics[name].to_json() for name in sorted(topics)]}
    document = {"format": CATALOGUE_FORMAT, "version": CATALOGUE_VERSION,
                "xxh64": xxhash.xxh64_hexdigest(_canonical(payload)), "payload": payload}
    return (json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("ascii")


def _decode_catalogue(path: str, data: bytes) -> tuple[int, dict[str, TopicRecord]]:
    """(generation, topics) of a catalogue file; CorruptRecordError if it is damaged in any way."""
    def corrupt(why: str) -> CorruptRecordError:
        return CorruptRecordError(f"topic catalogue {path} is unreadable: {why}; refusing to start with an "
                                  "empty catalogue (restore the file or remove it with the partition directories)")

    try:
        document = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise corrupt(f"not valid JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != CATALOGUE_FORMAT:
        raise corrupt(f"not a {CATALOGUE_FORMAT} file")
    if document.get("version") != CATALOGUE_VERSION:
        raise corrupt(f"format version {document.get('version')!r}; this build reads version {CATALOGUE_VERSION}")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise corrupt("no payload")
    try:
        checksum = xxhash.xxh64_hexdigest(_canonical(payload))
    except ValueError as e:  # NaN or infinity smuggled in
        raise corrupt(str(e)) from None
    if document.get("xxh64") != checksum:
        raise corrupt("checksum mismatch")
    try:
        generation = payload["generation"]
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"bad generation {generation!r}")
        items = payload["topics"]
        if not isinstance(items, list):
            raise ValueError("topics is not a list")
        topics: dict[str, TopicRecord] = {}
        for item in items:
            record = TopicRecord.from_json(item)
            if record.name in topics:
                raise ValueError(f"topic {record.name!r} listed twice")
            topics[record.name] = record
    except (KeyError, TypeError, ValueError) as e:  # InvalidArgumentError is a ValueError too
        raise corrupt(f"bad payload ({e})") from None
    return generation, topics


class MetadataStore:
    """The topic catalogue of one data directory; every change is on disk before the call returns.

    One process owns a data directory (the Store's lock); within it, the methods are thread-safe.
    """

    def __init__(self, data_dir: str, generation: int, topics: dict[str, TopicRecord]) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, META_DIR, CATALOGUE_FILE)
        self._generation = generation
        self._topics = topics
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> MetadataStore:
        """Load the catalogue of ``data_dir``, creating an empty one in a new data directory.

        Raises CorruptRecordError if the catalogue is damaged, or if it is missing while partition
        directories exist (the catalogue was lost: starting empty would orphan every topic)."""
        data_dir = os.fspath(data_dir)
        meta_dir = os.path.join(data_dir, META_DIR)
        path = os.path.join(meta_dir, CATALOGUE_FILE)
        if not os.path.isdir(meta_dir):
            os.makedirs(meta_dir, exist_ok=True)
            fsync_directory(data_dir)
        try:
            os.unlink(path + ".tmp")  # an interrupted write; the rename never happened
        except FileNotFoundError:
            pass
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            orphans = [name for name in _partition_like_dirs(data_dir) if not _DELETE_DIR.fullmatch(name)]
            if orphans:
                shown = ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else "")
                raise CorruptRecordError(f"topic catalogue {path} is missing but {data_dir} holds partition "
                                         f"directories ({shown}); refusing to start with an empty catalogue") from None
            store = cls(data_dir, 0, {})
            write_atomic(path, _encode_catalogue(0, {}))
            return store
        except OSError as e:
            raise CorruptRecordError(f"topic catalogue {path} is unreadable: {e}") from None
        generation, topics = _decode_catalogue(path, data)
        return cls(data_dir, generation, topics)

    # -- reads ----------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Number of changes committed since the data directory was created."""
        with self._lock:
            return self._generation

    def topics(self) -> dict[str, TopicRecord]:
        """A snapshot of the catalogue: name -> record."""
        with self._lock:
            return dict(self._topics)

    def get(self, name: str) -> TopicRecord:
        with self._lock:
            try:
                return self._topics[name]
            except (KeyError, TypeError):
                raise UnknownTopicError(f"unknown topic {name!r}") from None

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._topics

    def __len__(self) -> int:
        with self._lock:
            return len(self._topics)

    # -- changes (each durable before it returns) ------------------------------------------------

    def add(self, record: TopicRecord) -> None:
        """Add a new topic; TopicExistsError if the name is taken, InvalidTopicError on a '.'/'_' collision."""
        with self._lock:
            if record.name in self._topics:
                raise TopicExistsError(f"topic {record.name!r} already exists")
            check_collision(record.name, self._topics)
            self._commit({**self._topics, record.name: record})

    def remove(self, name: str) -> TopicRecord:
        """Remove a topic from the catalogue and return its record (its directories are the caller's)."""
        with self._lock:
            if name not in self._topics:
                raise UnknownTopicError(f"unknown topic {name!r}")
            topics = dict(self._topics)
            record = topics.pop(name)
            self._commit(topics)
            return record

    def replace(self, record: TopicRecord) -> None:
        """Replace a topic's record (more partitions, other config); the topic id must stay, partitions
        may only grow."""
        with self._lock:
            current = self._topics.get(record.name)
            if current is None:
                raise UnknownTopicError(f"unknown topic {record.name!r}")
            if record.topic_id != current.topic_id:
                raise InvalidArgumentError(f"topic {record.name!r} has id {current.topic_id}, not {record.topic_id}")
            if record.partitions < current.partitions:
                raise InvalidPartitionsError(f"topic {record.name!r} has {current.partitions} partitions; "
                                             f"a topic cannot shrink to {record.partitions}")
            self._commit({**self._topics, record.name: record})

    def _commit(self, topics: dict[str, TopicRecord]) -> None:
        try:
            data = _encode_catalogue(self._generation + 1, topics)
        except (TypeError, ValueError) as e:  # a config value JSON cannot hold
            raise InvalidArgumentError(f"topic config cannot be stored: {e}") from None
        # on disk first: if the write fails, memory still matches the file
        write_atomic(self.path, data)
        self._generation += 1
        self._topics = topics


# -- partition directories ------------------------------------------------------------------------


def _encode_partition_metadata(topic_id: str) -> bytes:
    body = f"version: {PARTITION_METADATA_VERSION}\ntopic_id: {topic_id}\n".encode("ascii")
    return body + f"xxh64: {xxhash.xxh64_hexdigest(body)}\n".encode("ascii")


def write_partition_metadata(directory: str | os.PathLike[str], topic_id: str) -> None:
    """Write ``partition.metadata`` (atomically) naming the topic the directory belongs to.

    Creates the directory if needed. Write it before the partition log puts anything there: a
    partition directory without this file is treated as stray."""
    directory = os.fspath(directory)
    if not isinstance(topic_id, str) or not _TOPIC_ID.fullmatch(topic_id):
        raise InvalidArgumentError(f"topic_id must be 32 lowercase hex digits, not {topic_id!r}")
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        fsync_directory(os.path.dirname(os.path.abspath(directory)))
    write_atomic(os.path.join(directory, PARTITION_METADATA_FILE), _encode_partition_metadata(topic_id))


def read_partition_metadata(directory: str | os.PathLike[str]) -> str | None:
    """The topic id recorded in ``directory``; None if the file does not exist.

    A damaged file is a CorruptRecordError: guessing would either adopt or discard a partition."""
    path = os.path.join(os.fspath(directory), PARTITION_METADATA_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    body, sep, tail = data.rpartition(b"xxh64: ")
    try:
        if not sep or tail != f"{xxhash.xxh64_hexdigest(body)}\n".encode("ascii"):
            raise ValueError("checksum mismatch")
        lines = body.decode("ascii").splitlines()
        if len(lines) != 2 or lines[0] != f"version: {PARTITION_METADATA_VERSION}":
            raise ValueError("unknown layout or version")
        prefix, _, topic_id = lines[1].partition(": ")
        if prefix != "topic_id" or not _TOPIC_ID.fullmatch(topic_id):
            raise ValueError("no topic id")
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptRecordError(f"{path} is damaged: {e}") from None
    return topic_id


def _partition_like_dirs(data_dir: str) -> list[str]:
    """Names of the directories in ``data_dir`` that are partition directories or deleted ones."""
    names = []
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if _DELETE_DIR.fullmatch(entry.name) or _parse_partition_dir(entry.name) is not None:
            names.append(entry.name)
    return sorted(names)


def _parse_partition_dir(name: str) -> tuple[str, int] | None:
    """(topic, partition) of a directory named ``<topic>-<partition>``; None for any other name."""
    match = _PARTITION_DIR.fullmatch(name)
    if match is None:
        return None
    topic, partition = match["topic"], int(match["partition"])
    try:
        validate_topic_name(topic)
    except ValueError:
        return None
    return topic, partition


def find_stray_partition_dirs(data_dir: str | os.PathLike[str], catalogue: Mapping[str, TopicRecord]) -> list[str]:
    """Paths of the partition directories under ``data_dir`` that belong to no topic of ``catalogue``.

    Stray: renamed ``*-delete`` directories; ``<topic>-<n>`` directories whose topic is not in the
    catalogue, whose n is not below the topic's partition count, or whose ``partition.metadata`` is
    missing or names another topic id. Deletes nothing. A damaged ``partition.metadata`` of a
    catalogue topic raises CorruptRecordError (neither adopt nor discard what cannot be identified).
    """
    data_dir = os.fspath(data_dir)
    stray = []
    for name in _partition_like_dirs(data_dir):
        path = os.path.join(data_dir, name)
        parsed = _parse_partition_dir(name)
        if parsed is None:  # a renamed, deleted directory
            stray.append(path)
            continue
        topic, partition = parsed
        record = catalogue.get(topic)
        if record is None or partition >= record.partitions or read_partition_metadata(path) != record.topic_id:
            stray.append(path)
    return stray


def mark_for_deletion(path: str | os.PathLike[str]) -> str:
    """Rename a partition directory to ``<name>.<uuid>-delete`` (atomic; the parent is fsynced) and
    return the new path. The name is cut so the result still fits a 255-byte file name."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    deleted = f"{name[:_MAX_FILE_NAME - _DELETE_SUFFIX_LENGTH]}.{uuid.uuid4().hex}-delete"
    target = os.path.join(parent, deleted)
    os.rename(path, target)
    fsync_directory(parent)
    return target


def purge_deleted(data_dir: str | os.PathLike[str]) -> list[str]:
    """Remove every ``*-delete`` directory under ``data_dir``; returns the paths removed.

    A directory that cannot be removed is logged and left for the next purge."""
    data_dir = os.fspath(data_dir)
    removed = []
    for name in _partition_like_dirs(data_dir):
        if not _DELETE_DIR.fullmatch(name):
            continue
        path = os.path.join(data_dir, name)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("could not remove deleted partition directory %s: %s", path, e)
            continue
        removed.append(path)
    if removed:
        fsync_directory(data_dir)
    return removed
