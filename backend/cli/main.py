"""The `skillloop` command line. Each area registers its own subcommands in its module;
this file only assembles them and turns user mistakes into a message and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys

from backend.cli import (
    bootstrap,
    data,
    link,
    link_train,
    model,
    rounds,
    select,
    serve,
    studio,
    worker,
)

# Modules that contribute subcommands, each with `register(subparsers)`: imported here, so a
# module that cannot be imported fails the command line instead of missing from it.
COMMAND_MODULES = [
    model,  # train, predict, evaluate
    serve,  # serve
    rounds,  # retrain, rollback
    worker,  # worker (a training host)
    studio,  # studio, project
    select,  # select, simulate
    data,  # status, rounds, report, export, quality
    link,  # link
    bootstrap,  # bootstrap
    link_train,  # link-train, link-versions, link-rollback
]


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillloop", description="Human-in-the-loop skill extraction from job posts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as err:
        # ValueError and FileNotFoundError carry user-facing messages throughout skillloop
        print(f"skillloop: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
