"""``logstore dlq``: list, replay and discard the dead letters of a topic (``TOPIC.dlq``)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from logstore.cli.output import CliContext, format_timestamp, json_of_bytes, parse_timestamp, preview, stdout_console
from logstore.cli.store import open_store
from logstore.dlq import STATUSES, DeadLetterEntry, DeadLetterQueue, EntryFilter

#: characters of an exception message shown in the table (--json has it whole)
_MESSAGE_PREVIEW = 40


def _parse_timestamp_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else parse_timestamp(value)


def entry_json(entry: DeadLetterEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "status": entry.status,
        "status_detail": entry.status_detail,
        "timestamp": entry.timestamp,
        "original": {"topic": entry.original_topic, "partition": entry.original_partition,
                     "offset": entry.original_offset, "timestamp": entry.original_timestamp},
        "group": entry.group,
        "key": json_of_bytes(entry.key),
        "value": json_of_bytes(entry.value),
        "headers": [[name, json_of_bytes(value)] for name, value in entry.headers],
        "exception": {"class": entry.exception_class, "message": entry.exception_message,
                      "stacktrace": entry.stacktrace},
        "reason": entry.reason,
        "attempts": entry.attempts,
        "first_failure_ms": entry.first_failure_ms,
        "last_failure_ms": entry.last_failure_ms,
        "replay_count": entry.replay_count,
    }


def entries_table(title: str, entries: list[DeadLetterEntry]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("ID", "Status", "Original", "Key", "Exception", "Reason", "Attempts", "Failed at", "Message"):
        table.add_column(name, justify="right" if name == "Attempts" else "left")
    for e in entries:
        original = "?" if e.original_topic is None else f"{e.original_topic}-{e.original_partition}@{e.original_offset}"
        message = (e.exception_message or "").replace("\n", " ")
        if len(message) > _MESSAGE_PREVIEW:
            message = message[:_MESSAGE_PREVIEW - 3] + "..."
        table.add_row(e.id, e.status, original, preview(e.key, 24), e.exception_class or "?", e.reason or "?",
                      "?" if e.attempts is None else str(e.attempts), format_timestamp(e.failed_at), message)
    return table


@click.group()
def dlq() -> None:
    """List, replay and discard the dead letters of a topic (kept in TOPIC.dlq)."""


@dlq.command("list")
@click.argument("topic")
@click.option("--exception", help="Only entries whose exception class is this (full name or last part).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only entries of this status (repeatable; default: all but discarded).")
@click.option("--key", help="Only entries with this key (UTF-8).")
@click.option("--since", callback=_parse_timestamp_option, metavar="MS|ISO8601",
              help="Only entries that failed at or after this time.")
@click.option("--until", callback=_parse_timestamp_option, metavar="MS|ISO8601",
              help="Only entries that failed before this time.")
@click.option("--limit", "-n", type=click.IntRange(min=0), help="At most this many entries (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with values and stack traces.")
@click.pass_obj
def list_entries(ctx: CliContext, topic: str, exception: str | None, statuses: tuple[str, ...], key: str | None,
                 since: int | None, until: int | None, limit: int | None, as_json: bool) -> None:
    """List the dead letters of TOPIC, oldest failure first."""
    where = EntryFilter(exception=exception, key=key, since_ms=since, until_ms=until, statuses=statuses or None)
    with open_store(ctx) as store:
        queue = DeadLetterQueue(store, topic)
        entries = queue.list(where, limit=limit)
        name = queue.topic
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry_json(entry), ensure_ascii=False))
        return
    stdout_console().print(entries_table(f"{name}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}",
                                         entries))


@dlq.command("replay")
@click.argument("topic")
@click.argument("ids", nargs=-1, metavar="[IDS]...")
@click.option("--all", "all_pending", is_flag=True,
              help="Replay every pending entry (parked and replayed ones only by id).")
@click.option("--exception", help="With --all: only entries whose exception class is this.")
@click.option("--to", "to_topic", metavar="TOPIC", help="Write to this topic instead of each entry's original one.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="At most N records per second.")
@click.option("--dry-run", is_flag=True, help="Only print what would be replayed.")
@click.pass_obj
def replay(ctx: CliContext, topic: str, ids: tuple[str, ...], all_pending: bool, exception: str | None,
           to_topic: str | None, rate: float | None, dry_run: bool) -> None:
    """Write dead letters of TOPIC back to their topic.

    IDS are PARTITION:OFFSET in TOPIC.dlq, as `dlq list` shows them. Each replayed entry is marked
    "replayed"; a replayed record that fails again comes back "parked" and is replayed by id only.
    """
    if ids and all_pending:
        raise click.UsageError("give entry ids or --all, not both")
    if not ids and not all_pending:
        raise click.UsageError("give entry ids (e.g. 0:42) or --all")
    if exception is not None and not all_pending:
        raise click.UsageError("--exception selects entries for --all; with ids it is not needed")
    with open_store(ctx) as store:
        queue = DeadLetterQueue(store, topic)
        selection = EntryFilter(exception=exception) if all_pending else list(ids)
        results = queue.replay(selection, to=to_topic, rate=rate, dry_run=dry_run)
        name = queue.topic
    for r in results:
        where = f"{r.topic}" + ("" if r.partition is None else f"-{r.partition}")
        if dry_run:
            click.echo(f"Would replay {r.id} to {where}.")
        else:
            click.echo(f"Replayed {r.id} to {where} at offset {r.offset}.")
    verb = "Would replay" if dry_run else "Replayed"
    click.echo(f"{verb} {len(results)} entr{'y' if len(results) == 1 else 'ies'} of {name}.")


@dlq.command("discard")
@click.argument("topic")
@click.argument("ids", nargs=-1, required=True, metavar="IDS...")
@click.pass_obj
def discard(ctx: CliContext, topic: str, ids: tuple[str, ...]) -> None:
    """Discard dead letters of TOPIC.

    Discarded entries are hidden from `dlq list` (unless --status discarded) and never replayed;
    the records stay in TOPIC.dlq until its retention removes them.
    """
    with open_store(ctx) as store:
        queue = DeadLetterQueue(store, topic)
        done = queue.discard(list(ids))
        name = queue.topic
    click.echo(f"Discarded {len(done)} entr{'y' if len(done) == 1 else 'ies'} of {name}.")
