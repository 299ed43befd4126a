"""Helpers for the service tests: a temporary project folder served by a tiny model,
tiny models with a fixed answer, and the recorded Label Studio payloads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import REFERENCE_TAGS, save_tiny_model, tiny_vocab
from sample_project import PLAIN_CONFIG

from backend.service.app import create_app
from backend.service.config import ServiceConfig
from backend.service.serving_process import gunicorn_path

PAYLOADS = Path(__file__).parent / "payloads"
LABELS = ["Technology", "Technical", "Business", "Soft"]


def require_server(server: str) -> None:
    """Skip the test when `server` (backend.service.serving_process.SERVERS) is gunicorn and
    gunicorn is not installed."""
    if server == "gunicorn" and gunicorn_path() is None:
        pytest.skip("gunicorn is not installed")


def payload(name: str) -> dict:
    """A recorded Label Studio request body (a fresh copy each time)."""
    return copy.deepcopy(json.loads((PAYLOADS / f"{name}.json").read_text()))


def biased_model(folder: Path, tag: str) -> Path:
    """A tiny reference-tagged model that tags every word `tag` (e.g. "B-TECHNOLOGY" or
    "O"), so tests can assert exact regions."""
    import torch
    from transformers import AutoModelForTokenClassification

    save_tiny_model(folder, REFERENCE_TAGS, "distilbert")
    model = AutoModelForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[REFERENCE_TAGS.index(tag)] = 10.0
    model.save_pretrained(folder)
    return folder


def keyword_model(
    folder: Path, tags: dict[str, str], strength: dict[str, float] | None = None
) -> Path:
    """A tiny reference-tagged DistilBERT that tags each word by its token alone: a word in
    `tags` (its own vocabulary entry, added when missing) gets that tag, every other word O.

    The transformer layers are made the identity (their output projections zeroed, so the
    residuals carry the embeddings through) and positions are zeroed, so a token's hidden
    state is its word embedding, which points at its tag's classifier row. Predictions are
    exact and real: they go through the same checkpoint loading, windows and decoding as
    any model. `strength` (default 1 for every word) is how far a word points at its tag
    rather than at O: below 1 its tag is still the likeliest but with less confidence
    (0.05: about 0.9, 0.01: about 0.6), so its post ranks as uncertain."""
    import torch
    from transformers import AutoModelForTokenClassification, BertTokenizer, DistilBertConfig

    vocab = {t: i for i, t in enumerate(dict.fromkeys([*tiny_vocab(), *tags]))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.model_max_length = 64
    config = DistilBertConfig(
        vocab_size=len(vocab),
        max_position_embeddings=64,
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        id2label=dict(enumerate(REFERENCE_TAGS)),
        label2id={t: i for i, t in enumerate(REFERENCE_TAGS)},
    )
    model = AutoModelForTokenClassification.from_config(config)
    with torch.no_grad():
        for layer in model.distilbert.transformer.layer:
            for projection in (layer.attention.out_lin, layer.ffn.lin2):
                projection.weight.zero_()
                projection.bias.zero_()
        model.distilbert.embeddings.position_embeddings.weight.zero_()
        embeddings = model.distilbert.embeddings.word_embeddings.weight
        embeddings.zero_()
        embeddings[:, REFERENCE_TAGS.index("O")] = 1.0
        for word, tag in tags.items():
            embeddings[vocab[word]] = 0.0
            embeddings[vocab[word], REFERENCE_TAGS.index(tag)] = 1.0
            # the embeddings' LayerNorm undoes a scale: a weaker word leans towards O too
            embeddings[vocab[word], REFERENCE_TAGS.index("O")] = 1.0 - (strength or {}).get(
                word, 1.0
            )
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for k in range(len(REFERENCE_TAGS)):
            model.classifier.weight[k, k] = 10.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_project(folder: Path, base: Path | str, every_n: int = 0, name: str = "svc") -> Path:
    """A project like linkedin-skills (no links) whose base model is `base` (auto-retraining
    off)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labeling_config.xml").write_text(PLAIN_CONFIG)
    labels = "\n".join(
        f'[[labels]]\nvalue = "{label}"\npredicted_values = ["{tag}"]\n'
        for label, tag in zip(LABELS, ["TECHNOLOGY", "TECHNICAL", "BUS", "SOFT"], strict=True)
    )
    (folder / "project.toml").write_text(
        f'[project]\nname = "{name}"\ntitle = "service test"\n\n{labels}\n'
        f'[model]\nbase = "{base}"\n'
        'label_map = { TECHNOLOGY = "Technology", TECHNICAL = "Technical", BUS = "Business", '
        'SOFT = "Soft" }\nmax_tokens = 48\nstride = 8\n\n'
        "[training]\nepochs = 1\nbatch_size = 4\nseed = 1\n\n"
        f"[retrain]\nevery_n_annotations = {every_n}\ndebounce_seconds = 0\n"
        "heldout_share = 0.2\ntolerance = 0.5\n\n"
        '[selection]\nstrategy = "mnlp"\nbatch_size = 5\n'
    )
    return folder


def annotation_event(
    annotation_id: int,
    task_id: int,
    text: str,
    regions: list[tuple[int, int, str]],
    action: str = "ANNOTATION_CREATED",
    **annotation_fields,
) -> dict:
    """The recorded ANNOTATION_CREATED body with another annotation, task and result."""
    body = payload("annotation_created")
    body["action"] = action
    body["task"]["id"] = task_id
    body["task"]["data"]["text"] = text
    annotation = body["annotation"]
    annotation.update(id=annotation_id, task=task_id, **annotation_fields)
    annotation["result"] = [
        {
            "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]},
            "id": f"r{annotation_id}-{i}",
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "origin": "manual",
        }
        for i, (s, e, label) in enumerate(regions)
    ]
    return body


def make_app(tmp_path, base, every_n=0, **overrides):
    """The real application (real store, registry, worker) for a temp project."""
    project = write_project(tmp_path / "project", base, every_n=every_n)
    config = ServiceConfig(
        project=str(project),
        state_dir=tmp_path / "state",
        background_load=False,
        watch_interval=0.1,
        **overrides,
    )
    app = create_app(config)
    app.testing = True
    return app


def predict_body(texts, **extra):
    body = payload("predict")
    template = body["tasks"][0]
    body["tasks"] = [
        {**template, "id": 100 + i, "data": {**template["data"], "text": text}}
        for i, text in enumerate(texts)
    ]
    body.update(extra)
    return body
