"""Retry timing of failed publishes: exponential backoff with jitter, and the attempt limit."""

from __future__ import annotations

import random
from dataclasses import dataclass

from logstore.errors import InvalidArgumentError

DEFAULT_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failed attempts: ``initial * multiplier ** (n - 1)``
    seconds, at most ``maximum``, of which a random share of up to ``jitter`` (0..1) is taken off, so
    that rows that failed together do not all retry at the same instant."""

    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in ("initial", "multiplier", "maximum", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError(f"Backoff.{name} must be a non-negative number, not {value!r}")
        if self.multiplier < 1:
            raise InvalidArgumentError(f"Backoff.multiplier must be >= 1, not {self.multiplier!r}")
        if self.jitter > 1:
            raise InvalidArgumentError(f"Backoff.jitter must be between 0 and 1, not {self.jitter!r}")

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (attempts >= 1)."""
        exponent = max(0, attempts - 1)
        # cap the exponent before the power: a large attempt count must not overflow the float
        base = self.maximum if exponent > 64 else min(self.maximum, self.initial * self.multiplier ** exponent)
        share = (rng or random).random() * self.jitter
        return base * (1.0 - share)


def check_max_attempts(max_attempts: object) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidArgumentError(f"max_attempts must be a positive int, not {max_attempts!r}")
    return max_attempts


__all__ = ["DEFAULT_MAX_ATTEMPTS", "Backoff", "check_max_attempts"]
