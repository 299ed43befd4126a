"""Shared fixtures: tiny randomly initialised models saved to a temp folder and loaded back
through the same code as real checkpoints. Nothing here downloads anything."""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE_TAGS = [
    "O",
    "B-BUS",
    "I-BUS",
    "B-TECHNOLOGY",
    "I-TECHNOLOGY",
    "B-TECHNICAL",
    "I-TECHNICAL",
    "B-SOFT",
    "I-SOFT",
]
WORDS = [
    "we",
    "need",
    "python",
    "sql",
    "aws",
    "spark",
    "data",
    "engineer",
    "team",
    "work",
    "communication",
    "skills",
    "with",
    "experience",
    "in",
    "and",
    "or",
    "the",
    "a",
    "of",
    "to",
    "for",
    "on",
    "machine",
    "learning",
    "docker",
    "kubernetes",
    "excel",
    "analysis",
    "analyst",
    "scientist",
    "senior",
    "junior",
    "java",
    "scala",
    "c",
    "node",
    "js",
    "react",
    "cloud",
]


def tiny_vocab() -> dict[str, int]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(chars) + [f"##{c}" for c in chars] + WORDS
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def save_tiny_model(folder: Path, tags: list[str] | None, arch: str = "bert") -> Path:
    """A 2-layer random model with a WordPiece tokenizer; `tags=None` saves a bare encoder."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForTokenClassification,
        BertConfig,
        BertTokenizer,
        DistilBertConfig,
    )

    torch.manual_seed(0)
    vocab = tiny_vocab()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.model_max_length = 64
    common = {"vocab_size": len(vocab), "max_position_embeddings": 64}
    if arch == "distilbert":
        config = DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2, **common)
    else:
        config = BertConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            **common,
        )
    if tags is None:
        model = AutoModel.from_config(config)
    else:
        config.id2label = dict(enumerate(tags))
        config.label2id = {t: i for i, t in enumerate(tags)}
        model = AutoModelForTokenClassification.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A bare tiny BERT encoder (no tagging head): a stand-in for the backbone."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-encoder"), None)


@pytest.fixture(scope="session")
def tiny_reference_model(tmp_path_factory) -> Path:
    """A tiny DistilBERT with the reference model's id2label (BUS/TECHNOLOGY/TECHNICAL/SOFT)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-ref"), REFERENCE_TAGS, "distilbert")


@pytest.fixture(scope="session")
def reference_label_map() -> dict[str, str]:
    return {"BUS": "Business", "TECHNOLOGY": "Technology", "TECHNICAL": "Technical", "SOFT": "Soft"}


@pytest.fixture
def skillspan_dir() -> Path:
    """The real SkillSpan data beside the project; tests needing it skip when it is absent."""
    folder = SHARED_DATA / "skillspan"
    if not (folder / "train.json").is_file():
        pytest.skip(f"SkillSpan data not found at {folder} (see ../shared/data/README.md)")
    return folder


@pytest.fixture(scope="session")
def spanful_model(tmp_path_factory) -> Path:
    """A tiny reference-tagged model that tags every word B-TECHNOLOGY: one region a word."""
    from service_helpers import biased_model

    return biased_model(tmp_path_factory.mktemp("spanful"), "B-TECHNOLOGY")


@pytest.fixture
def app(request, tmp_path, spanful_model):
    """The ML backend for a temp project and state folder, serving `spanful_model`; on the
    SQLite store, or on both stores for a test that also uses the `database_url` fixture."""
    from service_helpers import make_app

    if "database_url" in request.fixturenames:
        request.getfixturevalue("database_url")  # sets SKILLLOOP_DATABASE_URL first

    app = make_app(tmp_path, spanful_model)
    yield app
    app.extensions["skillloop"].close()


@pytest.fixture
def client(app):
    return app.test_client()


STUDIO_LOCK_TTL_S = 20  # Label Studio's TASK_LOCK_TTL in the `studio` fixture


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    """A real Label Studio (from .venv-studio) on a free port with a temp data dir, shared
    by the `studio` tests of a run; stopped afterwards."""
    from labeling.studio.server import StudioSettings, free_port, is_up, start, status, stop

    settings = StudioSettings.from_env(tmp_path_factory.mktemp("studio-state"), free_port())
    settings.task_lock_ttl = STUDIO_LOCK_TTL_S  # a left task's lock ends within a test
    if not settings.executable.is_file():
        pytest.skip(f"Label Studio not installed at {settings.executable}: run make studio-install")
    try:
        info = start(settings, timeout=600, quiet=True)
        assert info["running"] and info["up"] and settings.pid_file.is_file()
        yield settings
    finally:
        stopped = stop(settings)
    assert stopped and not is_up(settings.url) and not status(settings)["running"]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (tests/postgres.py) on a free loopback port with a temp data
    folder, shared by the tests of a run; stopped and removed afterwards."""
    from postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): make postgres")
    server = PostgresServer()
    try:
        server.start()
    except Exception:
        print(server.tail())
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, which it may stop (halt/resume) or freeze
    (freeze/thaw): the session's shared one must keep running."""
    from postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): make postgres")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server (dropped after the test)."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, monkeypatch) -> str | None:
    """Runs a test on both stores: None (the default SQLite file in the state folder) or a
    fresh PostgreSQL database, also set as SKILLLOOP_DATABASE_URL for the code under test."""
    if request.param == "sqlite":
        monkeypatch.delenv("SKILLLOOP_DATABASE_URL", raising=False)
        return None
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", url)
    return url
