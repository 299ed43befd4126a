"""What a linker version's `linker.json` holds (`LinkerSettings`), and the default ranking.

The defaults were chosen on one ESCO validation set and reported on the other
(benchmarks/linking_crossval.py; docs/linking.md, "Cross-validated"); the no-match
threshold for them was tuned the same way (benchmarks/linking_defaults.py). A linker.json
written before the re-ranking existed is read as it was tuned (`BEFORE_RERANK`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.link_rerank import RERANK_TOP

LINKER_FILE = "linker.json"
# The default ranking: the span's query mixes in 0.3 of its sentence (w), an entry's first
# score 0.5 of its preferred label's cosine (p); the top 20 are re-scored with the sentence
# (g 0.2) and character trigrams (l 0.1). Chosen on HOUSE (in both grids of
# benchmarks/linking_crossval.py) and reported on TECH: accuracy@1 0.692 (0.673 with the
# exact-label rule); on HOUSE it is HOUSE's own best, 0.648, not a cross-set figure (TECH's
# own choice, p 0.7 l 0.2, reports 0.629 there). docs/linking.md, "Cross-validated".
DEFAULT_CONTEXT_WEIGHT = 0.3
DEFAULT_PREFERRED_WEIGHT = 0.5
DEFAULT_SENTENCE_WEIGHT = 0.2
DEFAULT_LEXICAL_WEIGHT = 0.1
# The no-match threshold for that ranking: the median of those tuned on TECH (0.68) and on
# HOUSE (0.62), as a trained round sets its own (benchmarks/linking_defaults.py); a linker
# folder stores its own.
DEFAULT_THRESHOLD = 0.65
# A cross-encoder stage (`skillloop link-train --cross-minutes`): its score's weight (the
# logit placed in 0-1: training/link_cross.squash), and the ranking it is served with (no
# adapter, no sentence in the query, no exact-label rule: with the stage that rule cost
# TECH 2 pairs, "SaaS"). Chosen together on HOUSE, on the mean of two trainings, in
# benchmarks/linking_crossval_cross.py's grid and reported on TECH: accuracy@1 0.720 with
# each training (docs/linking.md, "The cross-encoder served"); TECH's own choice reports
# 0.614 on HOUSE (0.629 and 0.600).
DEFAULT_CROSS_WEIGHT = 0.3
CROSS_RANKING = {
    "context_weight": 0.0,
    "preferred_weight": 0.5,
    "sentence_weight": 0.3,
    "lexical_weight": 0.2,
    "exact_rule": False,
}
# What a linker.json written before the re-ranking meant by the keys it leaves out: the
# first stage alone, as its threshold was tuned (a file with either re-ranking weight is
# read with the dataclass's defaults).
BEFORE_RERANK = {
    "threshold": 0.77,
    "context_weight": 0.0,
    "preferred_weight": 0.0,
    "sentence_weight": 0.0,
    "lexical_weight": 0.0,
}


@dataclass(slots=True)
class LinkerSettings:
    """What `linker.json` holds: everything a linker version needs besides the taxonomy."""

    encoder: str = "backbone"  # "backbone", or "." for weights in the linker's own folder
    threshold: float = DEFAULT_THRESHOLD
    # share of the sentence's embedding mixed into the span's (w)
    context_weight: float = DEFAULT_CONTEXT_WEIGHT
    # share of the preferred label's cosine in an entry's first score (p)
    preferred_weight: float = DEFAULT_PREFERRED_WEIGHT
    # re-ranking the first stage's top `rerank_top` entries (training/link_rerank.py): the
    # sentence's cosine with the entry's best label (g), the span's trigram cosine (l)
    sentence_weight: float = DEFAULT_SENTENCE_WEIGHT
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    rerank_top: int = RERANK_TOP
    # a cross-encoder (training/link_cross.py) in this subfolder re-scores those top
    # entries too, its squashed score weighted `cross_weight` ("" = none)
    cross: str = ""
    cross_weight: float = 0.0
    # an entry with a label written exactly like the span scores at least 1 (`Linker.rank`)
    exact_rule: bool = True
    adapter: str = ""  # the adapter matrix's file in the linker folder ("" = none)
    # the taxonomy's labels embedded in "fp32" or "int8" (SentenceEncoder.encode)
    label_precision: str = "fp32"
    details: dict = field(default_factory=dict)  # how it was trained / tuned, figures

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LINKER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> LinkerSettings:
        path = Path(folder) / LINKER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"not a linker folder (no {LINKER_FILE}): {folder}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not {"sentence_weight", "lexical_weight"} & set(data):
            data = BEFORE_RERANK | data  # written before the re-ranking: ranks as it did
        return cls(**data)

    @property
    def crosses(self) -> bool:
        return bool(self.cross and self.cross_weight)

    @property
    def reranks(self) -> bool:
        return bool(self.sentence_weight or self.lexical_weight or self.crosses)


def cross_ranking(folder: str, weight: float) -> dict:
    """The LinkerSettings fields of a version served with a cross-encoder stage in `folder`."""
    return CROSS_RANKING | {"cross": folder, "cross_weight": weight}
