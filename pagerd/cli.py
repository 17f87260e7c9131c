"""Command line: ``pagerd run | check-config | alert | ack | healthy | status | version``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pagerd import __version__

EXIT_OK = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagerd", description="Self-hosted on-call pager.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"pagerd {__version__}")
        return EXIT_OK
    return EXIT_BAD_USAGE
