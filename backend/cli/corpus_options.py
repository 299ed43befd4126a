"""What `predict` and `link` share when they run on Ray (--ray-address): the block size
option, the checks on their files, and the CorpusJob both hand to backend/corpus."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.corpus.predict import CorpusJob


def add_block_rows_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--block-rows",
        type=int,
        default=2000,
        help="with --ray-address: JSONL lines per block (a Parquet block is a row group)",
    )


def corpus_job(args: argparse.Namespace) -> CorpusJob:
    """The job a --ray-address run describes (files in, a folder out, actors, blocks), after
    the checks, so that a wrong option is refused before a model or taxonomy is loaded."""
    from backend.corpus.engine import check_address
    from backend.corpus.predict import CorpusJob

    check_address(args.ray_address)
    if args.input == "-" or args.output == "-":
        raise ValueError("--ray-address reads --input files and writes an --output folder")
    if Path(args.output).is_file():
        raise ValueError(f"--output {args.output} is a file: with --ray-address it is a folder")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.block_rows < 1:
        raise ValueError(f"--block-rows must be at least 1, got {args.block_rows}")
    return CorpusJob(
        [args.input],
        Path(args.output),
        args.ray_address,
        args.workers,
        args.block_rows,
        progress=not args.no_progress,
    )
