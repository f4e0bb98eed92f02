"""``logstore groups``: list, describe, reset the offsets of, and delete consumer groups.

The tables follow kafka-consumer-groups (TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG
CONSUMER-ID CLIENT-ID). The CLI opens the data directory itself, so no application has it open
meanwhile: a group has members here only if static members (``group_instance_id``) were restored
from ``__consumer_offsets`` and are still within their session.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

import logstore
from logstore.broker.topics import CONSUMER_OFFSETS_TOPIC
from logstore.cli.output import CliContext, parse_timestamp, stdout_console
from logstore.cli.store import open_store
from logstore.errors import UnknownGroupError
from logstore.groups.types import GroupDescription, GroupListing

RESET_TARGETS = ("--to-earliest", "--to-latest", "--to-offset", "--to-datetime")


def has_groups(store: logstore.Store) -> bool:
    """Whether the store ever had a consumer group: asking the coordinator would otherwise create
    ``__consumer_offsets``, and commands that only read must not change the store."""
    return CONSUMER_OFFSETS_TOPIC in store.list_topics(internal=True)


def describe_group(store: logstore.Store, group_id: str) -> GroupDescription:
    if not has_groups(store):
        raise UnknownGroupError(f"group {group_id!r} does not exist")
    return store.describe_group(group_id)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def listing_json(listing: GroupListing) -> dict[str, Any]:
    return {"group_id": listing.group_id, "state": listing.state, "members": listing.members}


def description_json(d: GroupDescription) -> dict[str, Any]:
    return {
        "group_id": d.group_id,
        "state": d.state,
        "generation": d.generation,
        "protocol": d.protocol,
        "leader": d.leader,
        "total_lag": d.total_lag,
        "members": [{
            "member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
            "assignment": [{"topic": tp.topic, "partition": tp.partition} for tp in m.assignment],
        } for m in d.members],
        "partitions": [{
            "topic": p.topic, "partition": p.partition, "committed": p.committed,
            "log_end_offset": p.log_end_offset if p.log_end_offset >= 0 else None, "lag": p.lag,
            "member_id": p.member_id, "metadata": p.metadata,
        } for p in d.partitions],
    }


def headline(d: GroupDescription) -> str:
    # a line of its own, not a table title: rich would wrap a title to the table's width
    return (f"Group {d.group_id}: {d.state}, generation {d.generation}, assignor {d.protocol or '-'}, "
            f"{len(d.members)} member{'' if len(d.members) == 1 else 's'}, total lag {d.total_lag}")


def offsets_table(d: GroupDescription) -> Table:
    members = {m.member_id: m for m in d.members}
    table = Table()
    for name in ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "CLIENT-ID"):
        table.add_column(name, justify="right" if name in ("PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG")
                         else "left")
    for p in d.partitions:
        member = members.get(p.member_id) if p.member_id is not None else None
        table.add_row(p.topic, str(p.partition), _dash(p.committed),
                      str(p.log_end_offset) if p.log_end_offset >= 0 else "-", _dash(p.lag), _dash(p.member_id),
                      _dash(member.client_id if member is not None else None))
    return table


def members_table(d: GroupDescription) -> Table:
    table = Table()
    for name in ("CONSUMER-ID", "GROUP-INSTANCE-ID", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"):
        table.add_column(name, justify="right" if name == "#PARTITIONS" else "left")
    for m in d.members:
        assignment = ", ".join(f"{tp.topic}-{tp.partition}" for tp in m.assignment)
        table.add_row(m.member_id, _dash(m.group_instance_id), _dash(m.client_id), str(len(m.assignment)),
                      assignment or "-")
    return table


@click.group()
def groups() -> None:
    """List, describe, reset the offsets of and delete consumer groups."""


@groups.command("list")
@click.option("--long", "-l", "long_format", is_flag=True, help="A table with each group's state and members.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {group_id, state, members}.")
@click.pass_obj
def list_groups(ctx: CliContext, long_format: bool, as_json: bool) -> None:
    """List the consumer groups (with members or committed offsets), one id per line."""
    with open_store(ctx) as store:
        listings = store.list_groups() if has_groups(store) else []
    if as_json:
        click.echo(json.dumps([listing_json(g) for g in listings], indent=2))
    elif long_format:
        table = Table()
        table.add_column("GROUP")
        table.add_column("STATE")
        table.add_column("MEMBERS", justify="right")
        for g in listings:
            table.add_row(g.group_id, g.state, str(g.members))
        stdout_console().print(table)
    else:
        for g in listings:
            click.echo(g.group_id)


@groups.command("describe")
@click.argument("group")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
@click.pass_obj
def describe(ctx: CliContext, group: str, as_json: bool) -> None:
    """Committed offsets, log end offsets, lag and owners of GROUP's partitions, and its members."""
    with open_store(ctx) as store:
        description = describe_group(store, group)
    if as_json:
        click.echo(json.dumps(description_json(description), indent=2))
        return
    console = stdout_console()
    click.echo(headline(description))
    console.print(offsets_table(description))
    if description.members:
        click.echo("Members:")
        console.print(members_table(description))


def _partitions_of(store: logstore.Store, specs: tuple[str, ...]) -> tuple[list[str] | None,
                                                                           list[logstore.TopicPartition] | None]:
    """``--topic T`` or ``--topic T:0,2``: (topics, None), or (None, partitions) when any names partitions."""
    if not specs:
        return None, None
    parsed: list[tuple[str, list[int] | None]] = []
    for spec in specs:
        topic, sep, numbers = spec.partition(":")
        if not topic:
            raise click.BadParameter(f"{spec!r}: expected TOPIC or TOPIC:PARTITION[,PARTITION...]",
                                     param_hint="--topic")
        if not sep:
            parsed.append((topic, None))
            continue
        try:
            partitions = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise click.BadParameter(f"{spec!r}: partitions are numbers, e.g. {topic}:0,2",
                                     param_hint="--topic") from None
        parsed.append((topic, partitions))
    if all(partitions is None for _, partitions in parsed):
        return [topic for topic, _ in parsed], None
    tps: list[logstore.TopicPartition] = []
    for topic, numbers_given in parsed:
        if numbers_given is None:
            tps.extend(store.topic_partitions([topic]))
        else:
            tps.extend(logstore.TopicPartition(topic, p) for p in numbers_given)
    return None, list(dict.fromkeys(tps))


def _parse_datetime(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else parse_timestamp(value)


@groups.command("reset-offsets")
@click.argument("group")
@click.option("--to-earliest", is_flag=True, help="To the log start of each partition.")
@click.option("--to-latest", is_flag=True, help="To the log end of each partition (skip everything so far).")
@click.option("--to-offset", type=click.IntRange(min=0), metavar="N",
              help="To offset N (clamped to each partition's log start and end).")
@click.option("--to-datetime", callback=_parse_datetime, metavar="ISO8601|MS",
              help="To the first record at or after this time (UTC unless it says otherwise), else the log end.")
@click.option("--topic", "-t", "topic_specs", multiple=True, metavar="TOPIC[:P,...]",
              help="Reset only this topic, or these partitions of it (repeatable). Default: every partition "
                   "the group has offsets for.")
@click.option("--dry-run/--execute", default=True, show_default=True,
              help="Show the new offsets only (the default, as Kafka's tool), or store them.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.pass_obj
def reset_offsets(ctx: CliContext, group: str, to_earliest: bool, to_latest: bool, to_offset: int | None,
                  to_datetime: int | None, topic_specs: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Move the committed offsets of GROUP (which must have no active members)."""
    chosen = [name for name, given in zip(RESET_TARGETS, (to_earliest, to_latest, to_offset is not None,
                                                          to_datetime is not None)) if given]
    if len(chosen) != 1:
        raise click.UsageError(f"give exactly one of {', '.join(RESET_TARGETS)}"
                               + (f" (got {' and '.join(chosen)})" if chosen else ""))
    to = {"--to-earliest": "earliest", "--to-latest": "latest", "--to-offset": "offset",
          "--to-datetime": "timestamp"}[chosen[0]]
    with open_store(ctx) as store:
        topics, partitions = _partitions_of(store, topic_specs)
        before: GroupDescription | None
        if topics is None and partitions is None:
            before = describe_group(store, group)  # an unknown group is an error, not an empty plan
        else:
            try:  # naming partitions may give a new group its first offsets, as Kafka's tool does
                before = describe_group(store, group)
            except UnknownGroupError:
                before = None
        previous = {logstore.TopicPartition(p.topic, p.partition): p.committed
                    for p in (before.partitions if before is not None else [])}
        new = store.reset_offsets(group, to, topics=topics, partitions=partitions, offset=to_offset,
                                  timestamp=to_datetime, dry_run=dry_run)
    rows = sorted(new.items())
    if as_json:
        click.echo(json.dumps({
            "group_id": group, "executed": not dry_run,
            "offsets": [{"topic": tp.topic, "partition": tp.partition, "previous": previous.get(tp),
                         "offset": offset} for tp, offset in rows],
        }, indent=2))
        return
    verb = "Dry run: would reset" if dry_run else "Reset"
    click.echo(f"{verb} the offsets of group {group} ({len(rows)} partition{'' if len(rows) == 1 else 's'}):")
    table = Table()
    for name in ("TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET"):
        table.add_column(name, justify="left" if name == "TOPIC" else "right")
    for tp, offset in rows:
        table.add_row(tp.topic, str(tp.partition), _dash(previous.get(tp)), str(offset))
    stdout_console().print(table)
    if dry_run:
        click.echo("Nothing was changed: pass --execute to store these offsets.", err=True)


@groups.command("delete")
@click.argument("group")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete(ctx: CliContext, group: str, yes: bool) -> None:
    """Delete GROUP and its committed offsets (it must have no active members)."""
    with open_store(ctx) as store:
        describe_group(store, group)  # an unknown group is an error before the question, not after
        if not yes:
            click.confirm(f"Delete group {group} and its committed offsets?", abort=True, err=True)
        store.delete_group(group)
    click.echo(f"Deleted group {group}.")
