"""Formatting shared by the commands: consoles, progress bars, bytes for humans and for JSON, k=v options."""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

#: how a non-UTF-8 ``bytes`` value is marked in JSON output (and accepted back by ``produce --json``)
BASE64_MARKER = "base64"


@dataclass
class CliContext:
    """What the global options give every command (``click.Context.obj``)."""

    data_dir: str
    data_dir_given: bool  # --dir or LOGSTORE_DIR, not the default: `demo` uses a temp dir otherwise
    progress: bool | None  # None: only when stderr is a terminal


def stdout_console() -> Console:
    # highlight=False: no colouring of numbers, so piped output and tests see plain text. Into a pipe or
    # file, rich would assume 80 columns and wrap table headers: give it room (tables only take what they need)
    width = None if sys.stdout.isatty() else 160
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def want_progress(ctx: CliContext | None) -> bool:
    if ctx is not None and ctx.progress is not None:
        return ctx.progress
    return sys.stderr.isatty()


class ProgressReporter:
    """A rich progress bar on stderr, or nothing at all when progress is off (pipes, tests)."""

    def __init__(self, enabled: bool, description: str, total: float | None, unit: str = "items") -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not enabled:
            return
        counter = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
        # redirect_stdout only when stdout is the same kind of thing as stderr (a terminal): otherwise
        # rich would route our stdout writes through the stderr console and out of the user's file
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), counter, TimeRemainingColumn(),
                                  console=stderr_console(), transient=True,
                                  redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def describe(self, description: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def progress(enabled: bool, description: str, total: float | None, unit: str = "items") -> Iterator[ProgressReporter]:
    reporter = ProgressReporter(enabled, description, total, unit)
    try:
        yield reporter
    finally:
        reporter.close()


# -- bytes ----------------------------------------------------------------------------------


def text_of(data: bytes | None) -> str:
    """Bytes as text for a human: UTF-8 with replacement characters; None stays visible as null."""
    if data is None:
        return "null"
    return data.decode("utf-8", errors="replace")


def json_of_bytes(data: bytes | None) -> Any:
    """Bytes for a JSON document: a string if they are valid UTF-8, else {"base64": "..."}; None is null."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {BASE64_MARKER: base64.b64encode(data).decode("ascii")}


def bytes_of_json(value: Any, what: str) -> bytes | None:
    """The inverse of :func:`json_of_bytes` for ``produce --json``; other JSON values are stored as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {BASE64_MARKER} and isinstance(value[BASE64_MARKER], str):
        try:
            return base64.b64decode(value[BASE64_MARKER], validate=True)
        except ValueError:
            raise click.UsageError(f"{what}: invalid base64") from None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def preview(data: bytes | None, limit: int = 40) -> str:
    """A short, single-line, quoted preview of bytes for dump listings."""
    if data is None:
        return "null"
    text = repr(data[:limit])[1:]  # b'...' -> '...': escapes keep it on one line
    return text + ("..." if len(data) > limit else "")


def format_timestamp(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (the raw number when out of datetime's range)."""
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def parse_timestamp(text: str) -> int:
    """``--timestamp``: milliseconds since the epoch, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text  # fromisoformat takes Z only from 3.11
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither milliseconds since the epoch nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


# -- options --------------------------------------------------------------------------------


def parse_key_values(items: Sequence[str], option: str) -> list[tuple[str, str]]:
    """``k=v`` option values (repeatable options) as pairs, in order; a bad one is a usage error."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs.append((key, value))
    return pairs


def write_line(line: str, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(line + "\n")
