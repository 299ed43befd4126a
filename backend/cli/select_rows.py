"""How `skillloop select` shows a batch, from the project's posts or a corpus (--pool)."""

from __future__ import annotations

import json

from labeling.active.strategies import candidate_spans, task_score


def batch_row(rank: int, pick, item, title: str, strategy) -> dict:
    """One picked post with its scores and its most doubtful spans, as --json gives it."""
    doubts = sorted(candidate_spans(item), key=lambda s: -s.doubt)[:3]
    return {
        "rank": rank,
        "id": pick.id,
        "title": title,
        "score": pick.score,
        "task_score": task_score(item, strategy),
        "words": pick.cost,
        "reasons": pick.reasons,
        "uncertain_spans": [
            {
                "text": item.text[item.words[s.first][0] : item.words[s.last][1]],
                "label": s.label if s.predicted else None,
                "doubt": round(s.doubt, 4),
            }
            for s in doubts
        ],
    }


def print_batch(rows: list[dict], model: str, strategy, as_json: bool, of: str) -> None:
    """The batch as JSON or lines; `of` says what it was picked from."""
    if as_json:
        print(json.dumps({"model": model, "strategy": strategy.name, "batch": rows}, indent=2))
        return
    print(
        f"next {len(rows)} of {of} by {strategy.name} "
        f"(model {model}; task score: lower is served first)"
    )
    for row in rows:
        title = f" {row['title']!r}" if row["title"] else ""
        print(
            f"{row['rank']:>3}. {row['id']}{title}  score {row['score']:.4f}  "
            f"task score {row['task_score']:.4f}  {row['words']} words"
        )
        for span in row["uncertain_spans"]:
            kind = span["label"] or "near miss"
            print(f"       {kind}: {span['text']!r} (doubt {span['doubt']:.2f})")
