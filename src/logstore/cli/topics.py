"""``logstore topics``: create, list, describe, alter, add partitions to and delete topics."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

import logstore
from logstore.cli.output import CliContext, human_bytes, parse_key_values, stdout_console
from logstore.cli.store import open_store


def config_from_options(items: tuple[str, ...]) -> dict[str, Any]:
    """``--config k=v`` values as given: the store validates and converts them (it takes Kafka's strings)."""
    config: dict[str, Any] = {}
    for key, value in parse_key_values(items, "--config"):
        if key in config:
            raise click.BadParameter(f"{key} is given twice", param_hint="--config")
        config[key] = value
    return config


def config_table(description: logstore.TopicDescription, title: str = "Config") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Key")
    table.add_column("Value")
    table.add_column("Source")
    for key in sorted(description.config):
        value = description.config[key]
        source = "topic" if key in description.overrides else "default"
        table.add_row(key, "null" if value is None else str(value), source)
    return table


def describe_json(description: logstore.TopicDescription) -> dict[str, Any]:
    return {
        "name": description.name,
        "topic_id": description.topic_id,
        "partitions": [{
            "partition": p.partition, "log_start_offset": p.log_start_offset, "log_end_offset": p.log_end_offset,
            "high_watermark": p.high_watermark, "size_bytes": p.size_bytes, "segments": p.segment_count,
        } for p in description.partitions],
        "config": description.config,
        "overrides": description.overrides,
    }


def partition_table(description: logstore.TopicDescription) -> Table:
    table = Table(title=f"Topic {description.name} (id {description.topic_id}, "
                        f"{len(description.partitions)} partitions)", title_justify="left")
    for name in ("Partition", "Log start", "Log end", "High watermark", "Records", "Size", "Segments"):
        table.add_column(name, justify="right")
    for p in description.partitions:
        table.add_row(str(p.partition), str(p.log_start_offset), str(p.log_end_offset), str(p.high_watermark),
                      str(p.high_watermark - p.log_start_offset), human_bytes(p.size_bytes), str(p.segment_count))
    return table


@click.group()
def topics() -> None:
    """Create, list, describe, alter and delete topics."""


@topics.command("create")
@click.argument("name")
@click.option("--partitions", "-p", type=int, default=1, show_default=True, help="Number of partitions.")
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config (repeatable), e.g. retention_ms=86400000 or retention.ms=86400000.")
@click.option("--if-not-exists", is_flag=True, help="Succeed quietly when the topic already exists.")
@click.pass_obj
def create(ctx: CliContext, name: str, partitions: int, configs: tuple[str, ...], if_not_exists: bool) -> None:
    """Create topic NAME."""
    config = config_from_options(configs)
    with open_store(ctx, create=True) as store:
        try:
            description = store.create_topic(name, partitions=partitions, config=config or None)
        except logstore.errors.TopicExistsError:
            if not if_not_exists:
                raise
            click.echo(f"Topic {name} already exists.")
            return
    click.echo(f"Created topic {description.name} with {len(description.partitions)} partition(s).")


@topics.command("list")
@click.option("--long", "-l", "long_format", is_flag=True, help="A table with partitions, records and size.")
@click.pass_obj
def list_topics(ctx: CliContext, long_format: bool) -> None:
    """List the topics, one name per line."""
    with open_store(ctx) as store:
        names = store.list_topics()
        if not long_format:
            for name in names:
                click.echo(name)
            return
        table = Table()
        for column in ("Topic", "Partitions", "Records", "Size"):
            table.add_column(column, justify="left" if column == "Topic" else "right")
        for name in names:
            d = store.describe_topic(name)
            records = sum(p.high_watermark - p.log_start_offset for p in d.partitions)
            size = sum(p.size_bytes for p in d.partitions)
            table.add_row(name, str(len(d.partitions)), str(records), human_bytes(size))
    stdout_console().print(table)


@topics.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
@click.pass_obj
def describe(ctx: CliContext, name: str, as_json: bool) -> None:
    """Partitions (offsets, high watermark, size, segments) and config of topic NAME."""
    with open_store(ctx) as store:
        description = store.describe_topic(name)
    if as_json:
        click.echo(json.dumps(describe_json(description), indent=2, default=str))
        return
    console = stdout_console()
    console.print(partition_table(description))
    console.print(config_table(description))


@topics.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete(ctx: CliContext, name: str, yes: bool) -> None:
    """Delete topic NAME and all its data."""
    with open_store(ctx) as store:
        store.describe_topic(name)  # an unknown topic is an error before the question, not after
        if not yes:
            click.confirm(f"Delete topic {name} and all its data?", abort=True, err=True)
        store.delete_topic(name)
    click.echo(f"Deleted topic {name}.")


@topics.command("alter")
@click.argument("name")
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE", help="Set a config (repeatable).")
@click.option("--reset", "resets", multiple=True, metavar="KEY", help="Reset a config to its default (repeatable).")
@click.pass_obj
def alter(ctx: CliContext, name: str, configs: tuple[str, ...], resets: tuple[str, ...]) -> None:
    """Change the config of topic NAME; prints the effective config."""
    changes: dict[str, Any] = config_from_options(configs)
    for key in resets:
        if key in changes:
            raise click.BadParameter(f"{key} is both set and reset", param_hint="--reset")
        changes[key] = None
    if not changes:
        raise click.UsageError("nothing to change: give --config KEY=VALUE or --reset KEY")
    with open_store(ctx) as store:
        store.alter_topic_config(name, changes)
        description = store.describe_topic(name)
    stdout_console().print(config_table(description, title=f"Config of {name}"))


@topics.command("add-partitions")
@click.argument("name")
@click.option("--total", type=int, required=True, help="The new total number of partitions (more than now).")
@click.pass_obj
def add_partitions(ctx: CliContext, name: str, total: int) -> None:
    """Grow topic NAME to --total partitions (partitions are never removed)."""
    with open_store(ctx) as store:
        store.create_partitions(name, total)
        now = store.partitions_for(name)
    click.echo(f"Topic {name} now has {now} partitions.")
