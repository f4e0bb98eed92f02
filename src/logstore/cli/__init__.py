"""The ``logstore`` command line (also ``python -m logstore``), built on click and rich.

Exit status: 0 success; 1 a logstore error (unknown topic, bad config, locked data directory,
damage found by ``dump --verify``, ...), printed as one ``Error:`` line on stderr; 2 a usage error
(unknown option, bad value), also one line; 130 interrupted. See docs/cli.md.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from logstore import __version__
from logstore.cli.consume import consume
from logstore.cli.demo import demo
from logstore.cli.dlq import dlq
from logstore.cli.dump import dump
from logstore.cli.groups import groups
from logstore.cli.output import CliContext
from logstore.cli.produce import produce
from logstore.cli.topics import topics
from logstore.errors import LogstoreError

__all__ = ["cli", "main"]

EXIT_LOGSTORE_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# click >= 8.2 raises this for a group called without a command (8.1 prints the help and exits 0 itself)
_NoArgsIsHelpError: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", type("_Never", (Exception,), {}))


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _error(message: str, code: int) -> int:
    click.echo(f"Error: {_one_line(message)}", err=True)
    return code


class LogstoreGroup(click.Group):
    """A group whose errors are one line on stderr and an exit status, never a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        code = self._run(args, prog_name, complete_var, windows_expand_args, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: Sequence[str] | None, prog_name: str | None, complete_var: str | None,
             windows_expand_args: bool, **extra: Any) -> int:
        try:
            result = super().main(args, prog_name or "logstore", complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
        except _NoArgsIsHelpError as exc:
            assert isinstance(exc, click.ClickException)
            exc.show()  # `logstore topics` alone: the help text, not an error line
            return EXIT_USAGE
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            return _error(exc.format_message().rstrip(".") + hint, EXIT_USAGE)
        except click.ClickException as exc:
            return _error(exc.format_message(), exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                return EXIT_INTERRUPTED
            return _error("aborted", EXIT_LOGSTORE_ERROR)
        except LogstoreError as exc:
            return _error(str(exc) or type(exc).__name__, EXIT_LOGSTORE_ERROR)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `logstore consume t | head`: the reader went away, not an error of ours
                _silence_broken_pipe()
                return EXIT_LOGSTORE_ERROR
            # a file the user named could not be read or written: say which and why
            where = f"{exc.filename}: " if exc.filename else ""
            return _error(f"{where}{exc.strerror or exc}", EXIT_LOGSTORE_ERROR)
        return result if isinstance(result, int) else 0


def _silence_broken_pipe() -> None:
    # Python flushes stdout at exit and would print a second BrokenPipeError: point it at devnull
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group("logstore", cls=LogstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dir", "data_dir", envvar="LOGSTORE_DIR", default="./logstore-data", show_default=True,
              type=click.Path(file_okay=False), help="Data directory of the store (env LOGSTORE_DIR).")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars on stderr (default: only when stderr is a terminal).")
@click.version_option(__version__, "-V", "--version", prog_name="logstore")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, progress: bool | None) -> None:
    """logstore: an embedded, Kafka-format event log.

    Exit status: 0 ok, 1 logstore error (one "Error:" line on stderr), 2 usage error, 130 interrupted.
    """
    source = ctx.get_parameter_source("data_dir")
    ctx.obj = CliContext(data_dir=data_dir, data_dir_given=source is not click.core.ParameterSource.DEFAULT,
                         progress=progress)


cli.add_command(topics)
cli.add_command(produce)
cli.add_command(consume)
cli.add_command(dump)
cli.add_command(demo)
cli.add_command(groups)
cli.add_command(dlq)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the command line and exit with its status."""
    cli.main(args=argv, prog_name="logstore")
