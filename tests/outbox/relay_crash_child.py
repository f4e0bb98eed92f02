"""Child process of test_crash: a relay that SIGKILLs itself at an injected step.

Usage: ``python relay_crash_child.py <data dir> <database> <table> <step> <nth> <batch size>``, where
``<database>`` is ``sqlite:<path>`` or ``postgresql:<dsn>``. The relay (lease 0.5 s) claims batches
of ``<batch size>`` rows; on the ``<nth>`` time ``on_step(<step>)`` is called (steps:
logstore.outbox.relay.STEPS) the process kills itself with SIGKILL, mid-cycle. If no row is left to
reach that point, it exits 3 after the relay ran out of due rows.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from typing import Any

import logstore
from logstore import outbox


def connect_to(database: str) -> Any:
    kind, _, where = database.partition(":")
    if kind == "sqlite":
        return sqlite3.connect(where)
    import psycopg

    return psycopg.connect(where)


def main() -> None:
    data_dir, database, table, step, nth, batch_size = sys.argv[1:7]
    seen = 0

    def on_step(name: str) -> None:
        nonlocal seen
        if name == step:
            seen += 1
            if seen == int(nth):
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    store = logstore.open(data_dir, cleaner=False)
    relay = outbox.Relay(store, connect=lambda: connect_to(database), table=table, batch_size=int(batch_size),
                         lease_seconds=0.5, on_step=on_step)
    relay.run_until_idle()
    relay.close()
    store.close()
    sys.exit(3)


if __name__ == "__main__":
    main()
