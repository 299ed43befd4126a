"""The benchmarks, each run from the repository root as a module:

    .venv/bin/python -m benchmarks.NAME --help

Importing the package sets the offline environment first, before any module of a
benchmark imports transformers: nothing is downloaded (the backbone is a local package).
Shared paths and helpers: benchmarks/common.py.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
