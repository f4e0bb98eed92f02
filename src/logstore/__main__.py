"""``python -m logstore`` and the ``logstore`` console script: the command line in :mod:`logstore.cli`."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``logstore`` command line (the console script's entry point; exits with its status)."""
    from logstore.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
