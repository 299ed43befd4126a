"""`skillloop quality`'s figures and their printout: agreement between annotators, edits
of the pre-annotations, likely label errors (labeling.curation.quality does the counting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from labeling.curation.export import resolve
from labeling.curation.quality import (
    EDIT_KINDS,
    OVERALL,
    agreement,
    likely_label_errors,
    preannotation_edits,
)
from training.text import Document, post_key


def quality_figures(
    project, records: list, tagger=None, threshold: float = 0.9, gold: Sequence[Document] = ()
) -> dict:
    """`gold` posts (the project's gold file) are checked for label errors too; a gold post
    also annotated in Label Studio is checked in its Label Studio version only."""
    labels = project.label_values
    figures = {
        "project": project.name,
        "annotations": sum(not r.cancelled and not r.deleted for r in records),
        "agreement": agreement(records, labels).to_dict(),
        "preannotation_edits": preannotation_edits(records, labels).to_dict(),
        "label_errors": None,
    }
    if tagger is not None:
        # the training data as training sees it: the reviewed annotation, else the latest
        posts, _ = resolve(records, "reviewed")
        docs = [Document(p.text, p.spans, id=p.id) for p in posts]
        annotated = {post_key(d.text) for d in docs}
        docs += [
            Document(d.text, d.spans, id=f"gold-{d.id}")
            for d in gold
            if post_key(d.text) not in annotated
        ]
        issues = likely_label_errors(tagger, docs, threshold)
        figures["label_errors"] = {
            "model": getattr(tagger, "version", str(getattr(tagger, "source", ""))),
            "threshold": threshold,
            "posts_checked": len(docs),
            "issues": [issue.to_dict() for issue in issues],
        }
    return figures


def print_quality(figures: dict, limit: int, out: TextIO) -> None:
    def say(line: str = "") -> None:
        print(line, file=out)

    say(f"project {figures['project']}: {figures['annotations']} annotations")
    a = figures["agreement"]
    say()
    if not a["posts"]:
        say("agreement: no post was labelled by two or more annotators")
    else:
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.3f}"
        say(
            f"agreement on {a['posts']} posts labelled more than once ({a['pairs']} annotator "
            f"pairs, {len(a['annotators'])} annotators); Cohen's kappa on word tags {kappa}"
        )
        say(f"  {'label':<16}{'exact F1':>10}{'partial F1':>12}{'kappa':>8}{'spans':>7}")
        for label, row in a["span_f1"].items():
            k = "-" if row.get("kappa") is None else f"{row['kappa']:.3f}"
            say(f"  {label:<16}{row['exact']:>10.3f}{row['partial']:>12.3f}{k:>8}{row['spans']:>7}")
    e = figures["preannotation_edits"]
    say()
    if not e["annotations"]:
        say("pre-annotation edits: no annotation started from a model's pre-annotation")
    else:
        say(
            f"pre-annotation edits in {e['annotations']} annotations (corrected/deleted are "
            "counted under the predicted label, added under the annotator's)"
        )
        say(f"  {'label':<16}" + "".join(f"{k:>10}" for k in EDIT_KINDS) + f"{'accepted %':>12}")
        for label, row in e["by_label"].items():
            rate = "-" if row["acceptance"] is None else f"{100 * row['acceptance']:.0f}%"
            counts = "".join(f"{row[k]:>10}" for k in EDIT_KINDS)
            say(f"  {label if label != OVERALL else 'overall':<16}{counts}{rate:>12}")
        for item in e["relabelled"][:5]:
            say(f"  relabelled {item['from']} -> {item['to']}: {item['count']}")
    errors = figures["label_errors"]
    say()
    if errors is None:
        say("likely label errors: no model to check with (--model)")
        return
    issues = errors["issues"]
    say(
        f"likely label errors: {len(issues)} in {errors['posts_checked']} posts "
        f"(model {errors['model']}, confidence >= {errors['threshold']})"
    )
    for issue in issues[:limit]:
        if issue["kind"] == "disputed":
            what = f"{issue['label']} span, model says {issue['model_label']}"
        else:
            what = f"no span, model says {issue['model_label']}"
        say(
            f"  post {issue['doc_id']} [{issue['start']}:{issue['end']}] {issue['text']!r}: "
            f"{what} ({issue['confidence']:.2f})  ...{issue['context']}..."
        )
    if len(issues) > limit:
        say(f"  ... {len(issues) - limit} more (--limit, or --json FILE for all)")
