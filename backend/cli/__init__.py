"""The `skillloop` command line: one module per verb (or a few verbs of one area)."""

from backend.cli.main import UserError, build_parser, main

__all__ = ["UserError", "build_parser", "main"]
