"""Embedding a taxonomy's labels (a linker's first use): batched by token count without
changing any embedding, progress in the log and beside the label cache, and what
`skillloop status` and /predict make of it while it runs."""

from __future__ import annotations

import logging
import os

import numpy as np

from training.embedding_progress import PROGRESS_FILE, describe, read_progress

TAXONOMY_CSV = """id,preferred_label,alt_labels
py,python,python programming|scripting in python for data analysis
sql,sql,structured query language
k8s,kubernetes,k8s|container orchestration with kubernetes clusters
"""


def test_labels_are_batched_by_token_count_and_embed_as_they_do_one_at_a_time(tiny_encoder):
    from training.linker import SentenceEncoder

    encoder = SentenceEncoder(tiny_encoder)
    # characters misorder tokens here: 13 characters are 3 tokens, "k8s" is 5
    texts = ["communication", "x y z w v", "k8s", "a b"]
    tokens = [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    assert tokens == [3, 7, 5, 4]
    shapes = []
    hook = encoder.model.register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    batched = encoder.encode(texts, batch_size=2)
    hook.remove()
    assert shapes == [(2, 4), (2, 7)]  # (3, 4) then (5, 7): 22 tokens; by characters 24
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # padding changes nothing


def test_embedding_a_taxonomy_logs_its_progress_and_leaves_it_beside_the_cache(
    tmp_path, tiny_encoder, caplog
):
    from training.linker import LabelIndex, SentenceEncoder
    from training.taxonomy import load_csv

    (tmp_path / "skills.csv").write_text(TAXONOMY_CSV)
    taxonomy = load_csv(tmp_path / "skills.csv")
    cache = tmp_path / "linking"
    with caplog.at_level(logging.INFO, logger="training.linker"):
        LabelIndex.build(taxonomy, SentenceEncoder(tiny_encoder), cache)
    assert "embedding skills: 8 of 8 labels (100%)" in caplog.text
    progress = read_progress(cache)
    assert progress is not None and (cache / PROGRESS_FILE).is_file()
    assert (progress["done"], progress["total"], progress["finished"]) == (8, 8, True)
    assert progress["pid"] == os.getpid()
    assert describe(progress).startswith("labels of skills embedded (8 in ")


def test_status_tells_how_far_an_embedding_has_gone():
    running = {
        "taxonomy": "esco",
        "done": 24064,
        "total": 96135,
        "seconds_left": 130.0,
        "finished": False,
        "pid": 7,
    }
    assert describe(running) == (
        "embedding esco: 24,064 of 96,135 labels (25%), about 2 min left (pid 7)"
    )


def test_the_plain_backbone_embeds_labels_in_int8_into_a_cache_of_their_own(tmp_path):
    from training.linker import Linker
    from training.taxonomy import load_csv

    (tmp_path / "skills.csv").write_text(TAXONOMY_CSV)
    linker = Linker.load(load_csv(tmp_path / "skills.csv"), None, cache_dir=tmp_path / "cache")
    assert linker.settings.label_precision == "int8"
    (cache,) = (tmp_path / "cache").glob("labels-*.npy")
    assert cache.name.endswith("-int8.npy")  # never mistaken for fp32 embeddings
    (link,) = linker.link(["structured query language"], k=1)
    assert link.candidates[0].id == "sql"
