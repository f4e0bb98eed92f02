"""RetryPolicy: validation, backoff (fixed, exponential, cap, jitter) and which exceptions retry."""

from __future__ import annotations

import pytest

from logstore.dlq import RetryPolicy
from logstore.dlq.policy import exception_name
from logstore.errors import ConfigError, DeadLetterError


class AppError(Exception):
    pass


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": True}, {"max_attempts": 2.0}, {"backoff_ms": -1},
    {"backoff_ms": float("nan")}, {"multiplier": 0.5}, {"max_backoff_ms": "10"}, {"jitter": 1.5},
    {"jitter": -0.1}, {"retry_on": ValueError("not a class")}, {"fatal_on": (KeyError, int)},
])
def test_bad_values_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy.exponential(100, multiplier=2, max_backoff_ms=1000, max_attempts=10)
    assert [policy.delay_ms(n) for n in range(1, 8)] == [100, 200, 400, 800, 1000, 1000, 1000]


def test_fixed_backoff_is_the_same_every_time() -> None:
    policy = RetryPolicy.fixed(250, max_attempts=5)
    assert {policy.delay_ms(n) for n in range(1, 5)} == {250}


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10**6, backoff_ms=1, multiplier=10, max_backoff_ms=5000)
    assert policy.delay_ms(10**6 - 1) == 5000


def test_jitter_takes_up_to_its_share_off_the_delay() -> None:
    policy = RetryPolicy(backoff_ms=1000, multiplier=1, max_backoff_ms=1000, jitter=0.5)
    assert policy.delay_ms(1, lambda: 0.0) == 1000
    assert policy.delay_ms(1, lambda: 1.0) == 500
    assert policy.delay_ms(1, lambda: 0.5) == 750
    # the default random source stays within the band
    assert all(500 <= policy.delay_ms(1) <= 1000 for _ in range(200))


def test_delay_counts_attempts_from_one() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy().delay_ms(0)


def test_retry_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(ValueError(), 1)
    assert policy.should_retry(ValueError(), 2)
    assert not policy.should_retry(ValueError(), 3)
    assert not RetryPolicy(max_attempts=1).should_retry(ValueError(), 1)


def test_fatal_on_wins_over_retry_on() -> None:
    policy = RetryPolicy(retry_on=(Exception,), fatal_on=(KeyError,))
    assert not policy.should_retry(KeyError("k"), 1)
    assert policy.should_retry(ValueError(), 1)


def test_only_retry_on_classes_are_retried() -> None:
    policy = RetryPolicy.fixed(10, retry_on=TimeoutError)
    assert policy.retry_on == (TimeoutError,)
    assert policy.should_retry(TimeoutError(), 1)
    assert not policy.should_retry(ValueError(), 1)


def test_exception_names() -> None:
    assert exception_name(ValueError) == "ValueError"
    assert exception_name(AppError) == f"{__name__}.AppError"
    assert exception_name(DeadLetterError) == "logstore.errors.DeadLetterError"
