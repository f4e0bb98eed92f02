"""The headers logstore adds to dead-letter, retry and replayed records: their names, how they are
built and read back, and the caps that keep them small.

Three families, told apart by prefix:

- ``logstore.dlq.*`` on records of a ``<topic>.dlq`` topic: where the record came from and why it
  failed. Written by the processor; replaced (never stacked) when a record fails again.
- ``logstore.retry.*`` on records of a ``<topic>.retry`` topic: the original coordinates, the
  attempt count and the not-before time. Stripped before a record reaches the handler or a
  dead-letter topic.
- ``logstore.replay.*`` on records that ``DeadLetterQueue.replay`` wrote back: which entry they
  replay and how often the record was replayed. They stay on the record (so a failed replay is
  recognised in the dead-letter topic) and are replaced at the next replay.

Values are UTF-8 text, numbers in decimal, so ``logstore consume --format json`` shows them as
they are. Every variable-length value is capped, so the headers logstore adds to one record never
exceed :data:`MAX_DLQ_HEADER_BYTES` however often the record fails.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from logstore.dlq.policy import exception_name
from logstore.errors import DeadLetterPublishError

__all__ = [
    "DLQ_PREFIX", "RETRY_PREFIX", "REPLAY_PREFIX",
    "ORIGINAL_TOPIC", "ORIGINAL_PARTITION", "ORIGINAL_OFFSET", "ORIGINAL_TIMESTAMP", "GROUP",
    "EXCEPTION_CLASS", "EXCEPTION_MESSAGE", "STACKTRACE", "ATTEMPTS", "FIRST_FAILURE", "LAST_FAILURE", "REASON",
    "RETRY_TOPIC", "RETRY_PARTITION", "RETRY_OFFSET", "RETRY_TIMESTAMP", "RETRY_ATTEMPTS", "RETRY_NOT_BEFORE",
    "RETRY_FIRST_FAILURE", "RETRY_LAST_FAILURE", "RETRY_KIND", "RETRY_GROUP", "RETRY_EXCEPTION_CLASS",
    "REPLAY_OF", "REPLAY_COUNT",
    "MAX_STACKTRACE_BYTES", "MAX_MESSAGE_BYTES", "MAX_NAME_BYTES", "MAX_DLQ_HEADER_BYTES", "MAX_RETRY_HEADER_BYTES",
    "Failure", "RetryInfo", "Headers",
    "dead_letter_headers", "retry_headers", "replay_headers", "parse_retry_headers", "header_map",
    "strip_ours", "headers_size", "estimate_batch_bytes", "fit_dead_letter", "truncate_utf8", "format_stacktrace",
]

Headers = list[tuple[str, bytes | None]]

DLQ_PREFIX = "logstore.dlq."
RETRY_PREFIX = "logstore.retry."
REPLAY_PREFIX = "logstore.replay."

# -- on dead-letter records
ORIGINAL_TOPIC = "logstore.dlq.original.topic"
ORIGINAL_PARTITION = "logstore.dlq.original.partition"
ORIGINAL_OFFSET = "logstore.dlq.original.offset"
ORIGINAL_TIMESTAMP = "logstore.dlq.original.timestamp"
GROUP = "logstore.dlq.group"
EXCEPTION_CLASS = "logstore.dlq.exception.class"
EXCEPTION_MESSAGE = "logstore.dlq.exception.message"
STACKTRACE = "logstore.dlq.exception.stacktrace"
ATTEMPTS = "logstore.dlq.attempts"
FIRST_FAILURE = "logstore.dlq.first.failure.ms"
LAST_FAILURE = "logstore.dlq.last.failure.ms"
REASON = "logstore.dlq.reason"
"""Why the record was dead-lettered: "exhausted" (max_attempts), "fatal" (not retryable), "decode"."""

# -- on retry-topic records
RETRY_TOPIC = "logstore.retry.original.topic"
RETRY_PARTITION = "logstore.retry.original.partition"
RETRY_OFFSET = "logstore.retry.original.offset"
RETRY_TIMESTAMP = "logstore.retry.original.timestamp"
RETRY_ATTEMPTS = "logstore.retry.attempts"
RETRY_NOT_BEFORE = "logstore.retry.not.before.ms"
RETRY_FIRST_FAILURE = "logstore.retry.first.failure.ms"
RETRY_LAST_FAILURE = "logstore.retry.last.failure.ms"
RETRY_KIND = "logstore.retry.kind"
""""retry": a failed record waiting for its next attempt; "parked": a later record of a key that
has one in retry, waiting behind it (not attempted yet)."""
RETRY_GROUP = "logstore.retry.group"
RETRY_EXCEPTION_CLASS = "logstore.retry.exception.class"

# -- on replayed records
REPLAY_OF = "logstore.replay.of"
"""``<dlq topic>/<entry id>`` of the dead-letter entry this record replays."""
REPLAY_COUNT = "logstore.replay.count"

MAX_STACKTRACE_BYTES = 4096
"""The innermost frames are kept: where it failed matters more than how it got there."""
MAX_MESSAGE_BYTES = 1024
MAX_NAME_BYTES = 256
"""Exception class names and group ids."""
_MAX_TOPIC_BYTES = 249
_MAX_NUMBER_BYTES = 20  # a signed 64-bit int in decimal

_DLQ_NUMBERS = (ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP, ATTEMPTS, FIRST_FAILURE, LAST_FAILURE)
_DLQ_REASONS = ("exhausted", "fatal", "decode")
_RETRY_NUMBERS = (RETRY_PARTITION, RETRY_OFFSET, RETRY_TIMESTAMP, RETRY_ATTEMPTS, RETRY_NOT_BEFORE,
                  RETRY_FIRST_FAILURE, RETRY_LAST_FAILURE)

MAX_DLQ_HEADER_BYTES = (
    sum(len(n) + _MAX_NUMBER_BYTES for n in _DLQ_NUMBERS)
    + len(ORIGINAL_TOPIC) + _MAX_TOPIC_BYTES + len(GROUP) + MAX_NAME_BYTES + len(EXCEPTION_CLASS) + MAX_NAME_BYTES
    + len(EXCEPTION_MESSAGE) + MAX_MESSAGE_BYTES + len(STACKTRACE) + MAX_STACKTRACE_BYTES
    + len(REASON) + max(len(r) for r in _DLQ_REASONS)
)
"""The most the ``logstore.dlq.*`` headers of one record take (names and values)."""

MAX_RETRY_HEADER_BYTES = (
    sum(len(n) + _MAX_NUMBER_BYTES for n in _RETRY_NUMBERS)
    + len(RETRY_TOPIC) + _MAX_TOPIC_BYTES + len(RETRY_GROUP) + MAX_NAME_BYTES
    + len(RETRY_EXCEPTION_CLASS) + MAX_NAME_BYTES + len(RETRY_KIND) + len("parked")
)
"""The most the ``logstore.retry.*`` headers of one record take."""

_BATCH_OVERHEAD = 61  # record batch v2 header
_RECORD_OVERHEAD = 5 + 1 + 10 + 5 + 5 + 5 + 5  # length, attributes, timestamp/offset deltas, key/value lengths, count


def truncate_utf8(text: str, limit: int, *, keep: str = "head") -> bytes:
    """``text`` as UTF-8 in at most ``limit`` bytes, never splitting a character; a cut is marked.
    ``keep="tail"`` keeps the end (for stack traces)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    marker = f"[...{len(data)} bytes, cut...]"
    room = max(0, limit - len(marker) - 1)
    if keep == "tail":
        piece = data[len(data) - room:].decode("utf-8", errors="ignore").encode("utf-8")
        out = (marker + "\n").encode() + piece
    else:
        piece = data[:room].decode("utf-8", errors="ignore").encode("utf-8")
        out = piece + (" " + marker).encode()
    return out[:limit] if len(out) > limit else out


_MAX_EXCEPTION_LINE_BYTES = 512


def format_stacktrace(exc: BaseException, limit: int = MAX_STACKTRACE_BYTES) -> bytes:
    """The traceback of ``exc`` in at most ``limit`` bytes: the innermost frames, and the final
    ``Type: message`` line cut short (the message has a header of its own) so that a long message
    cannot push the frames out."""
    body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    final = "".join(traceback.format_exception_only(type(exc), exc))
    if body.endswith(final):
        body = body[:len(body) - len(final)]
    last = truncate_utf8(final, min(_MAX_EXCEPTION_LINE_BYTES, limit), keep="head")
    return truncate_utf8(body, limit - len(last), keep="tail") + last


@dataclass(frozen=True)
class Failure:
    """Why a record is dead-lettered (what the ``logstore.dlq.*`` headers say)."""

    exception_class: str
    message: str
    stacktrace: bytes
    attempts: int
    first_failure_ms: int
    last_failure_ms: int
    reason: str

    @classmethod
    def of(cls, exc: BaseException, attempts: int, first_failure_ms: int, last_failure_ms: int,
           reason: str) -> Failure:
        return cls(exception_name(type(exc)), str(exc), format_stacktrace(exc), attempts, first_failure_ms,
                   last_failure_ms, reason)


def _number(value: int) -> bytes:
    return b"%d" % value


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Headers as a dict (the last value of a repeated name wins; None values are left out)."""
    return {name: value for name, value in (headers or ()) if value is not None}


def strip_ours(headers: Iterable[tuple[str, bytes | None]] | None, *, keep_replay: bool = True) -> Headers:
    """The headers without logstore's dead-letter and retry headers (and replay ones unless ``keep_replay``)."""
    prefixes: tuple[str, ...] = (DLQ_PREFIX, RETRY_PREFIX) if keep_replay else (DLQ_PREFIX, RETRY_PREFIX,
                                                                                 REPLAY_PREFIX)
    return [(name, value) for name, value in (headers or ()) if not name.startswith(prefixes)]


def headers_size(headers: Iterable[tuple[str, bytes | None]]) -> int:
    """Bytes of header names and values (what the caps bound)."""
    return sum(len(name.encode()) + (len(value) if value is not None else 0) for name, value in headers)


def estimate_batch_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """An upper bound of the size of a one-record batch holding this record (max_message_bytes checks batches)."""
    size = _BATCH_OVERHEAD + _RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    return size + sum(10 + len(name.encode()) + (len(v) if v is not None else 0) for name, v in headers)


def dead_letter_headers(original: Iterable[tuple[str, bytes | None]] | None, *, topic: str, partition: int,
                        offset: int, timestamp: int, group: str | None, failure: Failure) -> Headers:
    """The original headers, byte for byte and in order, without any earlier ``logstore.dlq.*`` or
    ``logstore.retry.*`` headers, followed by this failure's ``logstore.dlq.*`` headers."""
    if failure.reason not in _DLQ_REASONS:
        raise ValueError(f"reason must be one of {_DLQ_REASONS}, not {failure.reason!r}")
    ours: Headers = [
        (ORIGINAL_TOPIC, topic.encode()),
        (ORIGINAL_PARTITION, _number(partition)),
        (ORIGINAL_OFFSET, _number(offset)),
        (ORIGINAL_TIMESTAMP, _number(timestamp)),
    ]
    if group is not None:
        ours.append((GROUP, truncate_utf8(group, MAX_NAME_BYTES)))
    ours += [
        (EXCEPTION_CLASS, truncate_utf8(failure.exception_class, MAX_NAME_BYTES)),
        (EXCEPTION_MESSAGE, truncate_utf8(failure.message, MAX_MESSAGE_BYTES)),
        (STACKTRACE, failure.stacktrace[-MAX_STACKTRACE_BYTES:]),
        (ATTEMPTS, _number(failure.attempts)),
        (FIRST_FAILURE, _number(failure.first_failure_ms)),
        (LAST_FAILURE, _number(failure.last_failure_ms)),
        (REASON, failure.reason.encode()),
    ]
    return strip_ours(original) + ours


def fit_dead_letter(key: bytes | None, value: bytes | None, headers: Headers, max_message_bytes: int,
                    topic: str) -> Headers:
    """``headers`` (built by :func:`dead_letter_headers`), with the stack trace and then the message
    shortened until the record fits a batch of ``max_message_bytes``; DeadLetterPublishError if even
    that is not enough (the record itself is never cut)."""
    if estimate_batch_bytes(key, value, headers) <= max_message_bytes:
        return headers
    fitted = list(headers)
    for name in (STACKTRACE, EXCEPTION_MESSAGE):
        excess = estimate_batch_bytes(key, value, fitted) - max_message_bytes
        if excess <= 0:
            return fitted
        for i, (n, v) in enumerate(fitted):
            if n == name and v is not None:
                room = max(0, len(v) - excess)
                keep = "tail" if name == STACKTRACE else "head"
                fitted[i] = (n, truncate_utf8(v.decode("utf-8", errors="replace"), room, keep=keep) if room else b"")
    if estimate_batch_bytes(key, value, fitted) <= max_message_bytes:
        return fitted
    raise DeadLetterPublishError(
        f"the record of {len(key or b'') + len(value or b'')} bytes with its dead-letter headers does not fit "
        f"max_message_bytes={max_message_bytes} of topic {topic!r}; raise the topic's max_message_bytes")


@dataclass(frozen=True)
class RetryInfo:
    """What the ``logstore.retry.*`` headers of a retry-topic record say."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    attempts: int
    not_before_ms: int
    first_failure_ms: int
    last_failure_ms: int
    kind: str  # "retry" or "parked"
    group: str | None
    exception_class: str | None = None


def retry_headers(original: Iterable[tuple[str, bytes | None]] | None, info: RetryInfo) -> Headers:
    """The original headers (without earlier retry or dead-letter headers) and ``info``'s."""
    ours: Headers = [
        (RETRY_TOPIC, info.topic.encode()),
        (RETRY_PARTITION, _number(info.partition)),
        (RETRY_OFFSET, _number(info.offset)),
        (RETRY_TIMESTAMP, _number(info.timestamp)),
        (RETRY_ATTEMPTS, _number(info.attempts)),
        (RETRY_NOT_BEFORE, _number(info.not_before_ms)),
        (RETRY_FIRST_FAILURE, _number(info.first_failure_ms)),
        (RETRY_LAST_FAILURE, _number(info.last_failure_ms)),
        (RETRY_KIND, info.kind.encode()),
    ]
    if info.group is not None:
        ours.append((RETRY_GROUP, truncate_utf8(info.group, MAX_NAME_BYTES)))
    if info.exception_class is not None:
        ours.append((RETRY_EXCEPTION_CLASS, truncate_utf8(info.exception_class, MAX_NAME_BYTES)))
    return strip_ours(original) + ours


def _int(found: Mapping[str, bytes], name: str) -> int:
    return int(found[name].decode("ascii"))


def parse_retry_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> RetryInfo | None:
    """The retry information of a retry-topic record; None if it has none or it is malformed."""
    found = header_map(headers)
    try:
        kind = found[RETRY_KIND].decode()
        if kind not in ("retry", "parked"):
            return None
        group = found.get(RETRY_GROUP)
        exc = found.get(RETRY_EXCEPTION_CLASS)
        return RetryInfo(found[RETRY_TOPIC].decode(), _int(found, RETRY_PARTITION), _int(found, RETRY_OFFSET),
                         _int(found, RETRY_TIMESTAMP), _int(found, RETRY_ATTEMPTS), _int(found, RETRY_NOT_BEFORE),
                         _int(found, RETRY_FIRST_FAILURE), _int(found, RETRY_LAST_FAILURE), kind,
                         None if group is None else group.decode("utf-8", errors="replace"),
                         None if exc is None else exc.decode("utf-8", errors="replace"))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def replay_headers(original: Iterable[tuple[str, bytes | None]] | None, replay_of: str, count: int) -> Headers:
    """The original headers (without any of logstore's) and the replay marker."""
    return strip_ours(original, keep_replay=False) + [(REPLAY_OF, replay_of.encode()), (REPLAY_COUNT, _number(count))]
