"""The `skillloop` command line. Each area registers its own subcommands in its module;
this file only assembles them and turns user mistakes into a message and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import NoReturn

from backend.cli import (
    bootstrap,
    evaluate,
    export,
    link,
    link_train,
    predict,
    quality,
    report,
    retrain,
    rollback,
    rounds,
    select,
    serve,
    status,
    studio,
    train,
    worker,
)

# Modules that contribute subcommands, each with `register(subparsers)`: imported here, so a
# module that cannot be imported fails the command line instead of missing from it. In the
# order `skillloop --help` lists them.
COMMAND_MODULES = [
    train,
    predict,
    evaluate,
    serve,
    retrain,
    rollback,
    worker,  # a training host
    studio,  # studio, project
    select,  # select, simulate
    status,
    rounds,
    report,
    export,
    quality,
    link,
    bootstrap,
    link_train,  # link-train, link-versions, link-rollback
]


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2, no traceback."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2) like every other user
    mistake; the usage it would print is one `--help` away. Subcommand parsers are made of
    this class too (argparse gives them their parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"skillloop: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        # `skillloop rounds --json | head -1`: the reader left; nothing more can be written
        _detach_stdout()
        return _user_error("the output was closed before everything was written (broken pipe)")
    except (UserError, ValueError, OSError) as err:
        # ValueError carries user-facing messages throughout skillloop (bad values, files
        # that cannot be parsed); OSError is a file the user named that is missing, already
        # there, a folder, or unreadable. Other exceptions are bugs: their traceback shows.
        logging.getLogger("skillloop").debug("user error", exc_info=True)  # -v shows where
        return _user_error(_describe(err))
    except KeyboardInterrupt:
        return 130


def _describe(err: BaseException) -> str:
    """One line: an OSError as "what: file" (not "[Errno 17] File exists: 'x'")."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.strerror.lower()}: {err.filename}"
    return " ".join(str(err).split()) or type(err).__name__


def _user_error(message: str) -> int:
    with contextlib.suppress(OSError):  # stderr gone too: the exit code still says it
        print(f"skillloop: error: {message}", file=sys.stderr, flush=True)
    return 2


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of what is still
    buffered does not raise a second BrokenPipeError at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (tests capture it): nothing is flushed at exit
    finally:
        os.close(devnull)
