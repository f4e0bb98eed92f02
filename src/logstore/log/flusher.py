"""One background thread that fsyncs every flush="interval" log on its interval."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

log = logging.getLogger("logstore.log")


class IntervalFlusher:
    def __init__(self) -> None:
        self._logs: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def register(self, plog: Any) -> None:
        with self._cond:
            self._logs.add(plog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="logstore-flusher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def unregister(self, plog: Any) -> None:
        with self._cond:
            self._logs.discard(plog)

    def _run(self) -> None:
        while True:
            with self._cond:
                logs = list(self._logs)
                if not logs:
                    self._cond.wait(1.0)
                    continue
            now = time.monotonic()
            wait = 1.0
            for plog in logs:
                due = plog._last_flush + plog.config.flush_interval_ms / 1000.0
                if now >= due:
                    try:
                        plog._flush_if_dirty()
                    except Exception:  # a closed or failed log must not stop the others
                        log.exception("background flush of %s failed", getattr(plog, "path", plog))
                    due = now + plog.config.flush_interval_ms / 1000.0
                wait = min(wait, max(0.001, due - now))
            del logs, plog
            with self._cond:
                self._cond.wait(wait)


FLUSHER = IntervalFlusher()
