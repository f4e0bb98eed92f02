"""The logstore.dlq/retry/replay headers: the original headers kept byte for byte, ours replaced
rather than stacked, every variable part capped, fitting a topic's max_message_bytes."""

from __future__ import annotations

import pytest

from logstore.dlq import headers as h
from logstore.errors import DeadLetterPublishError

ORIGINAL: list[tuple[str, bytes | None]] = [
    ("trace", b"\x00\xff\x80binary"), ("dup", b"1"), ("dup", b"2"), ("none", None), ("empty", b""),
]


def deep_exception(depth: int, message: str) -> ValueError:
    """An exception with a traceback of ``depth`` distinct frames (Python folds repeated ones)."""

    def recurse_a(n: int) -> None:
        if n == 0:
            raise ValueError(message)
        recurse_b(n - 1)

    def recurse_b(n: int) -> None:
        recurse_a(n - 1)

    try:
        recurse_a(depth)
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def failure(exc: BaseException, attempts: int = 3, reason: str = "exhausted") -> h.Failure:
    return h.Failure.of(exc, attempts, 1000, 2000, reason)


def build(original: list[tuple[str, bytes | None]], exc: BaseException, group: str | None = "g") -> h.Headers:
    return h.dead_letter_headers(original, topic="orders", partition=3, offset=1742, timestamp=99, group=group,
                                 failure=failure(exc))


def test_original_headers_come_first_unchanged() -> None:
    built = build(ORIGINAL, ValueError("boom"))
    assert built[:len(ORIGINAL)] == ORIGINAL
    found = h.header_map(built)
    assert found[h.ORIGINAL_TOPIC] == b"orders"
    assert found[h.ORIGINAL_PARTITION] == b"3"
    assert found[h.ORIGINAL_OFFSET] == b"1742"
    assert found[h.ORIGINAL_TIMESTAMP] == b"99"
    assert found[h.GROUP] == b"g"
    assert found[h.EXCEPTION_CLASS] == b"ValueError"
    assert found[h.EXCEPTION_MESSAGE] == b"boom"
    assert found[h.ATTEMPTS] == b"3"
    assert found[h.FIRST_FAILURE] == b"1000"
    assert found[h.LAST_FAILURE] == b"2000"
    assert found[h.REASON] == b"exhausted"
    assert found[h.STACKTRACE].endswith(b"ValueError: boom\n")
    assert h.GROUP not in h.header_map(build(ORIGINAL, ValueError("x"), group=None))


def test_earlier_dlq_and_retry_headers_are_replaced_not_stacked() -> None:
    once = build(ORIGINAL, ValueError("first"))
    with_retry = h.retry_headers(once, h.RetryInfo("orders", 3, 1742, 99, 2, 5, 1, 2, "retry", "g", "X"))
    twice = build(with_retry + [("replay", b"r")], KeyError("second"))
    names = [n for n, _ in twice]
    ours = [n for n in names if n.startswith(h.DLQ_PREFIX)]
    assert len(ours) == len(set(ours))
    assert not any(n.startswith(h.RETRY_PREFIX) for n in names)
    assert twice[:len(ORIGINAL) + 1] == ORIGINAL + [("replay", b"r")]
    assert h.header_map(twice)[h.EXCEPTION_CLASS] == b"KeyError"


def test_every_part_is_capped() -> None:
    exc = deep_exception(300, "m" * 50_000 + "é" * 3000)
    built = build(ORIGINAL, exc, group="g" * 10_000)
    found = h.header_map(built)
    assert len(found[h.STACKTRACE]) <= h.MAX_STACKTRACE_BYTES
    assert found[h.STACKTRACE].startswith(b"[...")  # the cut is marked, the innermost frames kept
    assert b"in recurse_a\n" in found[h.STACKTRACE]
    assert b"\nValueError: mmm" in found[h.STACKTRACE]  # the final line, cut short, stays
    assert len(found[h.EXCEPTION_MESSAGE]) <= h.MAX_MESSAGE_BYTES
    assert len(found[h.GROUP]) <= h.MAX_NAME_BYTES
    assert h.headers_size(h.header_map(built).items() - dict(ORIGINAL).items()) <= h.MAX_DLQ_HEADER_BYTES
    ours = [(n, v) for n, v in built if n.startswith(h.DLQ_PREFIX)]
    assert h.headers_size(ours) <= h.MAX_DLQ_HEADER_BYTES


@pytest.mark.parametrize("keep", ["head", "tail"])
def test_truncate_never_splits_a_character(keep: str) -> None:
    text = "aé€😀" * 500
    for limit in range(30, 120):
        out = truncate = h.truncate_utf8(text, limit, keep=keep)
        assert len(out) <= limit
        truncate.decode("utf-8")  # strict: a split character would raise
    assert h.truncate_utf8("short", 100) == b"short"


def test_fit_shortens_the_stacktrace_then_the_message() -> None:
    exc = deep_exception(200, "x" * 900)
    built = build([], exc)
    full = h.estimate_batch_bytes(b"k", b"v" * 100, built)
    fitted = h.fit_dead_letter(b"k", b"v" * 100, built, full - 1000, "orders.dlq")
    assert h.estimate_batch_bytes(b"k", b"v" * 100, fitted) <= full - 1000
    found = h.header_map(fitted)
    assert len(found[h.STACKTRACE]) < len(h.header_map(built)[h.STACKTRACE])
    assert found[h.EXCEPTION_MESSAGE] == b"x" * 900  # the message only goes when the trace is not enough
    assert h.fit_dead_letter(b"k", b"v", built, 10**6, "orders.dlq") is built


def test_fit_refuses_what_cannot_fit() -> None:
    built = build([], ValueError("boom"))
    with pytest.raises(DeadLetterPublishError, match="max_message_bytes=600"):
        h.fit_dead_letter(b"k", b"v" * 700, built, 600, "orders.dlq")


def test_retry_headers_round_trip() -> None:
    info = h.RetryInfo("orders", 2, 77, 5, 3, 123456, 1000, 2000, "parked", None, "app.Error")
    built = h.retry_headers(ORIGINAL, info)
    assert built[:len(ORIGINAL)] == ORIGINAL
    assert h.parse_retry_headers(built) == info
    assert h.strip_ours(built) == ORIGINAL
    assert h.headers_size([(n, v) for n, v in built if n.startswith(h.RETRY_PREFIX)]) <= h.MAX_RETRY_HEADER_BYTES


@pytest.mark.parametrize("bad", [
    [], [(h.RETRY_KIND, b"retry")], [(h.RETRY_KIND, b"other")],
])
def test_malformed_retry_headers_are_none(bad: list[tuple[str, bytes | None]]) -> None:
    assert h.parse_retry_headers(bad) is None
    info = h.RetryInfo("orders", 2, 77, 5, 3, 123456, 1000, 2000, "retry", None)
    broken = [(n, b"x" if n == h.RETRY_OFFSET else v) for n, v in h.retry_headers([], info)]
    assert h.parse_retry_headers(broken) is None


def test_replay_headers_replace_the_previous_marker() -> None:
    first = h.replay_headers(build(ORIGINAL, ValueError("a")), "orders.dlq/0:1", 1)
    second = h.replay_headers(build(first, ValueError("b")), "orders.dlq/0:9", 2)
    assert second == ORIGINAL + [(h.REPLAY_OF, b"orders.dlq/0:9"), (h.REPLAY_COUNT, b"2")]
