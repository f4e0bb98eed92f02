"""The background log cleaner: one daemon thread that applies retention and compaction.

``LogCleaner(logs)`` takes a callable returning the current ``(PartitionLog, policy)`` pairs; a
policy is a ``CleanerPolicy``, a mapping or any object with the attributes ``cleanup_policy``
("delete", "compact" or "compact,delete"), ``retention_ms``, ``retention_bytes``,
``delete_retention_ms``, ``min_compaction_lag_ms`` and ``min_cleanable_dirty_ratio`` (missing
ones take Kafka's defaults; missing retention settings leave the log's own config in force).

Each step does bounded work:

* retention (``PartitionLog.apply_retention``: whole segments, metadata and unlinks only) for
  every log whose policy includes "delete";
* at most one compaction group (see ``logstore.log.compaction``): the next group of the pass in
  progress, or else a new pass over the compacted log with the largest dirty ratio, if that is
  at least its ``min_cleanable_dirty_ratio`` (building the pass's key map is part of its first
  step). The heavy I/O runs without the log's lock; only the swap of a group takes it, briefly.

An error in one log is logged and that log is left alone for a while (exponential backoff); the
others go on. Closed logs are skipped. ``stop()`` is prompt: waits are on events, and a pass in
progress polls the stop flag between chunks of I/O.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logstore.errors import InvalidArgumentError, LogClosedError
from logstore.log.compaction import (
    CompactionOptions,
    CompactionPass,
    CompactionStats,
    CompactionStopped,
    cleanable_range,
    now_ms as wall_clock_ms,
)
from logstore.log.partition import PartitionLog

log = logging.getLogger("logstore.log.cleaner")

POLICIES = ("delete", "compact", "compact,delete")
# A pass unthrottled takes a core (300-600 MB/s here): that costs appends ~5% while another core
# is free, but up to half when other work competes for the cores; at 100 MB/s the cost stayed
# within 3% either way (benchmarks/test_compaction.py). None lifts the limit.
DEFAULT_MAX_BYTES_PER_S = 100_000_000
_UNSET: Any = object()


@dataclass(frozen=True)
class CleanerPolicy:
    """How the cleaner treats one log (Kafka's topic configs of the same names)."""

    cleanup_policy: str = "delete"
    retention_ms: int | None = _UNSET
    """None or -1 (Kafka's "unlimited"): keep forever; unset: the log's own ``config.retention_ms``."""
    retention_bytes: int | None = _UNSET
    """None or -1: no size limit; unset: the log's own ``config.retention_bytes``."""
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    min_cleanable_dirty_ratio: float = 0.5

    def __post_init__(self) -> None:
        policy = self.cleanup_policy.replace(" ", "")
        if policy == "delete,compact":
            policy = "compact,delete"
        if policy not in POLICIES:
            raise InvalidArgumentError(f"cleanup_policy={self.cleanup_policy!r}; expected one of {', '.join(POLICIES)}")
        object.__setattr__(self, "cleanup_policy", policy)
        for name in ("retention_ms", "retention_bytes"):
            value = getattr(self, name)
            if value is _UNSET or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"{name} must be an int or None, not {value!r}")
            if value < 0:
                object.__setattr__(self, name, None)  # Kafka's -1: no limit
        ratio = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise InvalidArgumentError(f"min_cleanable_dirty_ratio must be in [0, 1], not {ratio!r}")

    @property
    def deletes(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def compacts(self) -> bool:
        return "compact" in self.cleanup_policy

    @classmethod
    def of(cls, policy: Any) -> CleanerPolicy:
        """A CleanerPolicy from a CleanerPolicy, a mapping or an object with those attributes."""
        if isinstance(policy, CleanerPolicy):
            return policy
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if isinstance(policy, Mapping):
                value = policy.get(f.name, _UNSET)
                if value is _UNSET:
                    value = policy.get(f.name.replace("_", "."), _UNSET)  # Kafka's dotted names
            else:
                value = getattr(policy, f.name, _UNSET)
            if value is not _UNSET:
                values[f.name] = value
        return cls(**values)


@dataclass
class CleanerStep:
    """What one ``run_once`` did."""

    segments_deleted: int = 0
    """Segments removed by retention."""
    compacted: str | None = None
    """Path of the log a compaction group ran on, if any."""
    compaction: CompactionStats | None = None
    """That pass's stats so far (``complete`` once its last group is done)."""
    errors: list[str] = field(default_factory=list)

    @property
    def worked(self) -> bool:
        return self.compacted is not None


@dataclass
class CleanerTotals:
    steps: int = 0
    segments_deleted: int = 0
    passes_completed: int = 0
    groups_swapped: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    bytes_removed: int = 0
    errors: int = 0
    last_error: str | None = None


class LogCleaner:
    """See the module docstring. ``interval_ms``: how long the thread sleeps when there is
    nothing to do (``wake()`` cuts it short). ``max_map_records``, ``read_chunk_bytes`` and
    ``max_bytes_per_s`` (a throttle on segment bytes read, default 100 MB/s; None: none) go to
    each pass's ``CompactionOptions``;
    ``backoff_ms`` .. ``max_backoff_ms``: how long a log that failed is left alone (doubling)."""

    def __init__(self, logs: Callable[[], Iterable[tuple[PartitionLog, Any]]], *, interval_ms: int = 1000,
                 max_map_records: int = 4_000_000, read_chunk_bytes: int = 8 << 20,
                 max_bytes_per_s: int | None = DEFAULT_MAX_BYTES_PER_S, backoff_ms: int = 1000,
                 max_backoff_ms: int = 60_000,
                 name: str = "logstore-cleaner") -> None:
        self._logs = logs
        self.interval_ms = interval_ms
        self.max_map_records = max_map_records
        self.read_chunk_bytes = read_chunk_bytes
        self.max_bytes_per_s = max_bytes_per_s
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.name = name
        self.totals = CleanerTotals()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._step_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pass: CompactionPass | None = None
        # ("retention" | "compaction", log path) -> (retry at, last delay), seconds of time.monotonic()
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}

    # -- thread --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread (a pass in progress is abandoned at its next chunk of I/O; nothing is
        left half-swapped). Returns whether it has stopped within ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
            self._thread = None
        with self._step_lock:
            self._abandon_pass()
        return True

    def wake(self) -> None:
        """Run a step now (e.g. after a segment rolled or a config changed)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LogCleaner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        last_retention = -float("inf")
        while not self._stop.is_set():
            # retention is metadata work over every log: once per interval, even while a pass
            # runs its groups step after step
            retention = time.monotonic() - last_retention >= self.interval_ms / 1000
            if retention:
                last_retention = time.monotonic()
            try:
                worked = self.run_once(retention=retention).worked
            except Exception:  # run_once handles per-log errors; this is a bug, not a bad log
                log.exception("log cleaner step failed")
                worked = False
            if self._stop.is_set():
                break
            if not worked:
                self._wake.wait(self.interval_ms / 1000)
                self._wake.clear()
        with self._step_lock:
            self._abandon_pass()

    # -- one step ------------------------------------------------------------------------------

    def run_once(self, now_ms: int | None = None, *, retention: bool = True) -> CleanerStep:
        """One bounded step (see the module docstring); ``now_ms`` overrides the wall clock;
        ``retention=False`` skips retention this time."""
        with self._step_lock:
            now = now_ms if now_ms is not None else wall_clock_ms()
            step = CleanerStep()
            self.totals.steps += 1
            try:
                listed = list(self._logs())
            except Exception as e:
                log.exception("log cleaner could not list the logs")
                self._error(step, "listing", "<logs>", e)
                return step
            entries: list[tuple[PartitionLog, CleanerPolicy]] = []
            for plog, policy in listed:
                if plog.closed or self._waiting("policy", plog.path):
                    continue
                try:
                    entries.append((plog, CleanerPolicy.of(policy)))
                except Exception as e:  # a bad policy spoils its log only
                    log.error("cleanup policy of %s is invalid: %s", plog.path, e)
                    self._error(step, "policy", plog.path, e)
            for plog, policy in entries if retention else []:
                if self._stop.is_set():
                    return step
                if self._waiting("retention", plog.path):
                    continue
                try:
                    step.segments_deleted += self._retention(plog, policy, now)
                    self._backoff.pop(("retention", plog.path), None)
                except LogClosedError:
                    continue
                except Exception as e:
                    log.exception("retention of %s failed", plog.path)
                    self._error(step, "retention", plog.path, e)
            self.totals.segments_deleted += step.segments_deleted
            if not self._stop.is_set():
                self._compact_step(step, entries, now)
            return step

    def _retention(self, plog: PartitionLog, policy: CleanerPolicy, now: int) -> int:
        cfg = plog.config
        if not policy.deletes:
            # compact only: no time or size limit, but segments wholly below the log start go
            if cfg.retention_ms is None and cfg.retention_bytes is None:
                return plog.apply_retention(now)
            return 0
        retention_ms = cfg.retention_ms if policy.retention_ms is _UNSET else policy.retention_ms
        retention_bytes = cfg.retention_bytes if policy.retention_bytes is _UNSET else policy.retention_bytes
        if (retention_ms, retention_bytes) != (cfg.retention_ms, cfg.retention_bytes):
            values = dataclasses.asdict(cfg)
            values.update(retention_ms=retention_ms, retention_bytes=retention_bytes)
            plog.reconfigure(**values)
        return plog.apply_retention(now)

    def _compact_step(self, step: CleanerStep, entries: list[tuple[PartitionLog, CleanerPolicy]], now: int) -> None:
        current = self._pass
        if current is not None:
            live = any(plog is current.log and policy.compacts for plog, policy in entries)
            if not live or current.log.closed:
                self._abandon_pass()
                current = None
        if current is None:
            current = self._start_pass(step, entries, now)
            if current is None:
                return
        plog = current.log
        step.compacted = plog.path
        try:
            if current.keymap is None:
                current.build_map()
            more = current.run_group()
            step.compaction = current.stats
            if not more:
                self._pass = None
                stats = current.finish()
                self._count(stats)
                self._backoff.pop(("compaction", plog.path), None)
        except (LogClosedError, CompactionStopped):
            self._abandon_pass()
        except Exception as e:
            log.exception("compaction of %s failed", plog.path)
            self._abandon_pass()
            self._error(step, "compaction", plog.path, e)

    def _start_pass(self, step: CleanerStep, entries: list[tuple[PartitionLog, CleanerPolicy]],
                    now: int) -> CompactionPass | None:
        best: tuple[float, PartitionLog, CleanerPolicy] | None = None
        for plog, policy in entries:
            if not policy.compacts or self._waiting("compaction", plog.path):
                continue
            try:
                rng = cleanable_range(plog, policy.min_compaction_lag_ms, now)
            except LogClosedError:
                continue
            except Exception as e:
                log.exception("could not inspect %s for compaction", plog.path)
                self._error(step, "compaction", plog.path, e)
                continue
            ratio = rng.dirty_ratio
            if rng.dirty_bytes > 0 and ratio >= policy.min_cleanable_dirty_ratio and (best is None or ratio > best[0]):
                best = (ratio, plog, policy)
        if best is None:
            return None
        _, plog, policy = best
        options = CompactionOptions(delete_retention_ms=policy.delete_retention_ms,
                                    min_compaction_lag_ms=policy.min_compaction_lag_ms,
                                    max_map_records=self.max_map_records, read_chunk_bytes=self.read_chunk_bytes,
                                    max_bytes_per_s=self.max_bytes_per_s)
        try:
            self._pass = CompactionPass(plog, options, now, self._stop.is_set)
        except LogClosedError:
            return None
        except Exception as e:
            log.exception("could not start compacting %s", plog.path)
            self._error(step, "compaction", plog.path, e)
            return None
        return self._pass

    def _abandon_pass(self) -> None:
        if self._pass is not None:
            self._pass.release()
            self._pass = None

    def _count(self, stats: CompactionStats) -> None:
        t = self.totals
        t.passes_completed += 1 if stats.complete else 0
        t.groups_swapped += stats.groups_swapped
        t.records_removed += stats.records_removed
        t.tombstones_removed += stats.tombstones_removed
        t.bytes_removed += stats.bytes_removed

    # -- errors and backoff --------------------------------------------------------------------

    def _waiting(self, kind: str, path: str) -> bool:
        entry = self._backoff.get((kind, path))
        return entry is not None and time.monotonic() < entry[0]

    def _error(self, step: CleanerStep, kind: str, path: str, error: BaseException) -> None:
        message = f"{kind} of {path}: {type(error).__name__}: {error}"
        step.errors.append(message)
        self.totals.errors += 1
        self.totals.last_error = message
        _, last = self._backoff.get((kind, path), (0.0, 0.0))
        delay = min(max(2 * last, self.backoff_ms / 1000), self.max_backoff_ms / 1000)
        self._backoff[(kind, path)] = (time.monotonic() + delay, delay)


__all__ = ["DEFAULT_MAX_BYTES_PER_S", "CleanerPolicy", "CleanerStep", "CleanerTotals", "LogCleaner"]
