"""The retry policy of consumer handlers: how many attempts, which exceptions are worth another
try, and how long to wait between attempts (fixed or exponential backoff, a cap, jitter)."""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logstore.errors import ConfigError

__all__ = ["RetryPolicy", "exception_name"]

ExceptionClasses = tuple[type[BaseException], ...]


def exception_name(cls: type[BaseException]) -> str:
    """``module.QualName`` of an exception class; builtins by their bare name (``ValueError``)."""
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _exception_classes(name: str, value: Any) -> ExceptionClasses:
    items = value if isinstance(value, (tuple, list, frozenset, set)) else (value,)
    out = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigError(f"{name} takes exception classes, not {item!r}")
        out.append(item)
    return tuple(out)


def _number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not low <= value <= high:
        bound = f"[{low}, {high}]" if high != math.inf else f">= {low}"
        raise ConfigError(f"{name} must be a number {bound}, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing handler is retried.

    ``max_attempts`` counts every call of the handler for one record, the first included
    (1: no retry). After attempt ``n`` failed, the next one waits
    ``min(backoff_ms * multiplier ** (n - 1), max_backoff_ms)``, less a random share of up to
    ``jitter`` of it (0: exact delays; 0.5: between half and all of it). ``multiplier=1`` is a
    fixed backoff.

    An exception is retried if it is an instance of ``retry_on`` and not of ``fatal_on``
    (``fatal_on`` wins); any other goes to the dead-letter topic at once. Only ``Exception``
    subclasses are ever caught: ``KeyboardInterrupt`` and ``SystemExit`` pass through.
    """

    max_attempts: int = 3
    backoff_ms: float = 1000.0
    multiplier: float = 2.0
    max_backoff_ms: float = 60_000.0
    jitter: float = 0.0
    retry_on: ExceptionClasses = (Exception,)
    fatal_on: ExceptionClasses = ()

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"max_attempts must be an int >= 1, not {attempts!r}")
        object.__setattr__(self, "backoff_ms", _number("backoff_ms", self.backoff_ms, 0.0))
        object.__setattr__(self, "multiplier", _number("multiplier", self.multiplier, 1.0))
        object.__setattr__(self, "max_backoff_ms", _number("max_backoff_ms", self.max_backoff_ms, 0.0))
        object.__setattr__(self, "jitter", _number("jitter", self.jitter, 0.0, 1.0))
        object.__setattr__(self, "retry_on", _exception_classes("retry_on", self.retry_on))
        object.__setattr__(self, "fatal_on", _exception_classes("fatal_on", self.fatal_on))

    @classmethod
    def fixed(cls, backoff_ms: float, *, max_attempts: int = 3, jitter: float = 0.0,
              retry_on: ExceptionClasses | type[BaseException] = (Exception,),
              fatal_on: ExceptionClasses | type[BaseException] = ()) -> RetryPolicy:
        """The same delay before every retry."""
        return cls(max_attempts=max_attempts, backoff_ms=backoff_ms, multiplier=1.0, max_backoff_ms=backoff_ms,
                   jitter=jitter, retry_on=_exception_classes("retry_on", retry_on),
                   fatal_on=_exception_classes("fatal_on", fatal_on))

    @classmethod
    def exponential(cls, initial_ms: float, *, multiplier: float = 2.0, max_backoff_ms: float = 60_000.0,
                    max_attempts: int = 3, jitter: float = 0.0,
                    retry_on: ExceptionClasses | type[BaseException] = (Exception,),
                    fatal_on: ExceptionClasses | type[BaseException] = ()) -> RetryPolicy:
        """``initial_ms``, then ``multiplier`` times the previous delay, never above ``max_backoff_ms``."""
        return cls(max_attempts=max_attempts, backoff_ms=initial_ms, multiplier=multiplier,
                   max_backoff_ms=max_backoff_ms, jitter=jitter, retry_on=_exception_classes("retry_on", retry_on),
                   fatal_on=_exception_classes("fatal_on", fatal_on))

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt at all (ignoring the attempt count)."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.fatal_on)

    def should_retry(self, exc: BaseException, attempts: int) -> bool:
        """After ``attempts`` failed attempts, the last raising ``exc``: try again?"""
        return attempts < self.max_attempts and self.is_retryable(exc)

    def delay_ms(self, attempts: int, random: Callable[[], float] = _random.random) -> int:
        """Milliseconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
        if attempts < 1:
            raise ConfigError(f"attempts counts failed attempts from 1, not {attempts!r}")
        # the exponent is bounded so a huge attempt count cannot overflow before the cap applies
        exponent = min(attempts - 1, 1024)
        try:
            delay = self.backoff_ms * self.multiplier ** exponent
        except OverflowError:
            delay = math.inf
        delay = min(delay, self.max_backoff_ms)
        if self.jitter:
            delay *= 1.0 - self.jitter * random()
        return max(0, math.ceil(delay))
