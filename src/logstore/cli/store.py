"""Opening the store a command works on: the data directory from ``--dir`` / ``LOGSTORE_DIR``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import click

import logstore
from logstore.cli.output import CliContext, stderr_console, want_progress


@contextlib.contextmanager
def open_store(ctx: CliContext, *, create: bool = False, **options: Any) -> Iterator[logstore.Store]:
    """The store at ``ctx.data_dir``, closed on the way out.

    Commands that only read refuse a missing directory rather than creating an empty store there
    (a typo in --dir should say so, not show an empty list). The background cleaner is off: a CLI
    command is too short-lived for retention or compaction to matter, and its thread costs start-up time.
    """
    path = ctx.data_dir
    if not create and not os.path.isdir(path):
        raise click.ClickException(f"no data directory at {path} "
                                   "(create a topic first, or pass --dir / set LOGSTORE_DIR)")
    options.setdefault("cleaner", False)
    if want_progress(ctx):
        # opening may recover partitions after a crash (a scan of their tails): say what is happening
        with stderr_console().status(f"opening {path}"):
            store = logstore.open(path, **options)
    else:
        store = logstore.open(path, **options)
    try:
        yield store
    finally:
        store.close()
