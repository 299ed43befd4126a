"""The `skillloop` command line. Each area registers its own subcommands in its module;
this file only assembles them and turns user mistakes into a message and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, each with `register(subparsers)`.
COMMAND_MODULES = [
    "backend.commands_model",  # train, predict, evaluate
    "backend.commands_service",  # serve
    "backend.commands_rounds",  # retrain, rollback
    "backend.commands_worker",  # worker (a training host)
    "backend.commands_studio",  # studio, project
    "backend.commands_select",  # select, simulate
    "backend.commands_data",  # status, rounds, report, export, quality
    "backend.commands_link",  # link
    "backend.cold_start",  # bootstrap
    "backend.commands_link_train",  # link-train, link-versions, link-rollback
]


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillloop", description="Human-in-the-loop skill extraction from job posts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue  # an area not built yet
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


if __name__ == "__main__":
    sys.exit(main())
