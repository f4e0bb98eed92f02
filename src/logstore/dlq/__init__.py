"""Retries and dead letters for consumer handlers (see docs/dlq.md).

- :class:`RetryPolicy`: attempts, backoff (fixed or exponential, cap, jitter), which exceptions retry.
- :class:`RetryingProcessor`: runs a handler over a consumer with blocking retries or a retry
  topic with key parking; after the last attempt the record goes to ``<topic>.dlq``.
- :class:`DeadLetterQueue`: list, replay and discard the entries of ``<topic>.dlq``.

The header names are constants in :mod:`logstore.dlq.headers`.
"""

from logstore.dlq.admin import STATUSES, DeadLetterEntry, DeadLetterQueue, EntryFilter, ReplayResult
from logstore.dlq.policy import RetryPolicy
from logstore.dlq.processor import MODES, ProcessorStats, RetryingProcessor

__all__ = [
    "MODES",
    "STATUSES",
    "DeadLetterEntry",
    "DeadLetterQueue",
    "EntryFilter",
    "ProcessorStats",
    "ReplayResult",
    "RetryPolicy",
    "RetryingProcessor",
]
