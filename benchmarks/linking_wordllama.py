"""A second, unlike embedding (WordLlama's static token vectors) as a re-ranking score,
chosen on one validation set and reported on the other.

Usage (WordLlama is not a project dependency):
    pip install wordllama==0.4.0.post1
    nice -n 10 python -m benchmarks.linking_wordllama [--json out.json]

Ensembles of unlike encoders often rank better than either; WordLlama (MIT) is an English
text embedding whose package ships its weights (`l2_supercat`, 256
dimensions: token embeddings taken from large language models and trained for sentence
similarity, averaged over the tokens), so it runs offline. The default linker (as
`benchmarks.linking_hierarchy` runs it: both stages, the exact-label rule) ranks each
validation pair's top 20 entries; each entry then gains t x the best WordLlama cosine of
one text with the entry's labels: the span, or the span's sentence. t is chosen by
accuracy@1 on one set (ties to the smaller t) and reported on the other
(`linking_hierarchy.cross_set`); WordLlama alone over the same top 20 is printed too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DataError,
    finish_run,
    plain_esco_linker,
    run_benchmark,
)
from benchmarks.linking_hierarchy import TOP, accuracy, cross_set, linking_args, top_rows
from training.cpu import cpu_info
from training.linker_eval import read_linking_csv


def wordllama():
    """WordLlama's l2_supercat model from the package's own files (no download)."""
    try:
        import wordllama as package
        from wordllama import WordLlama
    except ImportError:
        raise DataError("needs WordLlama: pip install wordllama==0.4.0.post1") from None
    # 0.4.0 looks for its tokenizer in wordllama/tokenizer/ but ships it in tokenizers/,
    # which is where it looks in a cache folder: the package folder is one
    return WordLlama.load(cache_dir=Path(package.__file__).parent, disable_download=True)


def features(linker, taxonomy, gold, model) -> list[tuple]:
    """Each pair's top entries (`linking_hierarchy.top_rows`) with the two WordLlama scores."""
    labels = {entry.id: entry.labels for entry in taxonomy.entries}
    spans, sentences = [p.span for p in gold.pairs], [p.sentence for p in gold.pairs]
    texts = {
        "span": model.embed(spans, norm=True),
        "sentence": model.embed([s or x for s, x in zip(sentences, spans, strict=True)], norm=True),
    }

    def by_text(n: int, ids: list[str]) -> dict:
        vectors = [model.embed(labels[i], norm=True) for i in ids]
        return {
            name: np.array([float((v @ vec[n]).max()) for v in vectors])
            for name, vec in texts.items()
        }

    return top_rows(linker, gold, by_text)


def main() -> int:
    args, files = linking_args(__doc__)
    model = wordllama()
    print(cpu_info().line())
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    rows = {
        name: features(linker, taxonomy, read_linking_csv(name, file, taxonomy), model)
        for name, file in files.items()
    }
    results = cross_set(rows, ("span", "sentence"), "WordLlama")
    for name, set_rows in rows.items():
        alone = float(np.mean([right[np.argmax(by["span"])] for _, right, by in set_rows]))
        results[f"WordLlama alone over the top {TOP}, {name}"] = round(alone, 4)
        print(f"WordLlama alone (span x labels) over the top {TOP}, {name}: {alone:.3f}")
    print(f"(the default linker alone: {accuracy(rows['TECH'], 'span', 0.0):.3f} TECH, "
          f"{accuracy(rows['HOUSE'], 'span', 0.0):.3f} HOUSE)")  # fmt: skip
    return finish_run(results, start, args.json)


if __name__ == "__main__":
    run_benchmark(main)
