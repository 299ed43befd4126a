"""What the benchmarks share: the checkout's paths, the real data's folders, how a data
argument (a file, or a folder with the usual file names) is resolved and SkillSpan read,
and `run_benchmark`, which turns a missing data file or a service that did not start into
one line and exit code 2.

The offline environment is set by the package itself (benchmarks/__init__.py); the real
service as a process is `backend.service.serving_process.served`, shared with the tests.
The throwaway servers some benchmarks start are the tests' own, imported as `tests.*`
(so run benchmarks from the checkout root, `python -m benchmarks.NAME`): PostgreSQL from
tests/postgres.py (load_test, store_latency) and nginx from tests/nginx_proxy.py
(slow_clients). They stay in tests/: some 360 lines that drive system binaries for
throwaway servers, no code the installed packages should carry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from backend.service.serving_process import ServeError
from training.datasets import read_documents
from training.text import Document

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # read-only, never copied into the repo
SKILLSPAN = SHARED_DATA / "skillspan"  # train.json, dev.json: SkillSpan JSON lines
ESCO_LINKING = SHARED_DATA / "esco-linking"  # the linking validation sets (CSV)
ESCO_SETS = {"TECH": "tech_validation_annotations.csv", "HOUSE": "house_validation_annotations.csv"}
LABELS = ["Skill", "Knowledge"]  # SkillSpan's two span labels


class DataError(ValueError):
    """A data file or folder that is not there, or not what was asked for (said in one line
    by `run_benchmark`)."""


def split_file(data: Path, split: str) -> Path:
    """A SkillSpan split: `data` itself when it is a file, else `data/<split>.json`."""
    path = data if data.is_file() else data / f"{split}.json"
    if not path.is_file():
        where = f"no {split}.json in {data}" if data.is_dir() else f"{data} does not exist"
        raise DataError(f"SkillSpan {split} data not found: {where} (see ../shared/data/README.md)")
    return path


def skillspan(data: Path, *splits: str) -> list[list[Document]]:
    """SkillSpan splits as postings (their sentences regrouped), each from `split_file`: a
    file stands for one split only."""
    if data.is_file() and len(splits) > 1:
        raise DataError(f"{data} is one file: give the folder with {' and '.join(splits)}.json")
    return [read_documents(split_file(data, split)) for split in splits]


def named_files(paths: Sequence[Path], known: Mapping[str, str]) -> dict[str, Path]:
    """Data sets by name from files and folders: a folder stands for every `known` file in
    it (name -> file name), a file for itself, named as in `known` when its file name is
    one of them, else by its stem in capitals."""
    by_file = {file: name for name, file in known.items()}
    sets: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            missing = [file for file in known.values() if not (path / file).is_file()]
            if missing:
                raise DataError(f"{path} has no {', '.join(missing)}")
            sets |= {name: path / file for name, file in known.items()}
        elif path.is_file():
            sets[by_file.get(path.name, path.stem.upper())] = path
        else:
            raise DataError(f"{path} does not exist")
    if not sets:
        raise DataError("no data files given")
    return sets


def add_skillspan_data(parser: argparse.ArgumentParser, split: str) -> None:
    """`--data FILE_OR_FOLDER`: one SkillSpan split (see `split_file`)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=SKILLSPAN,
        metavar="FILE_OR_FOLDER",
        help=f"SkillSpan {split} data: a JSON-lines file, or a folder with {split}.json "
        "(default: ../shared/data/skillspan)",
    )


def add_linking_data(parser: argparse.ArgumentParser) -> None:
    """`--data FILE_OR_FOLDER...`: the ESCO linking validation sets (see `linking_sets`)."""
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[ESCO_LINKING],
        metavar="FILE_OR_FOLDER",
        help="validation CSVs, or folders holding tech_ and house_validation_annotations.csv "
        "(default: ../shared/data/esco-linking); a file is named TECH or HOUSE by those names, "
        "else by its stem",
    )


def add_linking_folder(parser: argparse.ArgumentParser) -> None:
    """`--data FOLDER` holding both validation sets and `--cache` for the label embeddings:
    what the benchmarks that score on TECH and HOUSE together take."""
    parser.add_argument("--data", type=Path, default=ESCO_LINKING, help="tech_ and house_ CSVs")
    parser.add_argument("--cache", type=Path, default=Path("state/linking-cache"))


def plain_esco_linker(cache: Path):
    """ESCO and the plain linker over it (label embeddings read from, or written to, `cache`)."""
    from training.linker import Linker
    from training.taxonomy import load_esco

    taxonomy = load_esco()
    return taxonomy, Linker.load(taxonomy, None, cache_dir=cache, progress=True)


def linking_sets(paths: Sequence[Path]) -> dict[str, Path]:
    """The linking validation CSVs named by `--data`, by set name (TECH, HOUSE, ...)."""
    return named_files(paths, ESCO_SETS)


def run_benchmark(main: Callable[[], int | None]) -> NoReturn:
    """`sys.exit(main())`; missing data, or a service that did not start, is one line on
    stderr (the service's log tail after it) and exit code 2, not a traceback."""
    try:
        code = main()
    except (DataError, ServeError) as err:
        print(f"{Path(sys.argv[0]).stem}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


def finish_run(results: dict, started: float, json_path: Path | None) -> int:
    """A run's closing lines: its wall time (from `started`, a time.time()) and the CPU line
    after it (the load then), kept in `results` too, and `results` written to `json_path`."""
    from training.cpu import cpu_info

    after = cpu_info()
    results["seconds"] = round(time.time() - started, 1)
    results["cpu_after"] = after.as_dict()
    print(f"\nwhole run {results['seconds']} s; {after.line()}")
    if json_path:
        json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print("wrote", json_path)
    return 0
