"""`skillloop select` (the next batch to label, with reasons) and `skillloop simulate`
(replay labelling on gold data to compare query strategies)."""

from __future__ import annotations

import sys
from pathlib import Path

from backend.cli.options import add_project_options, project_and_state
from backend.cli.select_pool import add_pool_options, select_pool
from backend.cli.select_rows import batch_row, print_batch
from labeling.active.strategies import (
    StrategyName,
    build_strategy,
    item_from_prediction,
    strategy_names,
)
from labeling.state import STATE_BASE_DEFAULT, ProjectState
from training.text import Document, post_key


def register(sub) -> None:
    p = sub.add_parser("select", help="the next posts to label, most useful first, with reasons")
    add_project_options(p, state_dir=False)
    p.add_argument("-n", type=int, default=None, help="batch size (default: [selection])")
    p.add_argument(
        "--strategy",
        help=f"one of {', '.join(strategy_names())}, or one of "
        "them +diverse or +balanced; default: the project's [selection] "
        "strategy",
    )
    p.add_argument("--budget-tokens", type=int, help="at most this many words in the batch")
    p.add_argument("--model", help="checkpoint folder (default: the serving model)")
    p.add_argument("--state-dir", type=Path, help=f"state folder (default {STATE_BASE_DEFAULT})")
    p.add_argument("--seed", type=int, default=0, help="for random and diverse selection")
    p.add_argument("--json", action="store_true", help="print the batch as JSON")
    add_pool_options(p)
    p.set_defaults(func=select_command)

    s = sub.add_parser("simulate", help="replay labelling on gold data: strategies vs random")
    s.add_argument("--data", required=True, help="gold pool (SkillSpan .json, .jsonl, .conll)")
    s.add_argument("--eval", required=True, help="held-out gold data")
    s.add_argument(
        "--strategy",
        action="append",
        default=None,
        help="strategy to compare with random (repeatable; default mnlp)",
    )
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--init", type=int, default=100, help="random seed set size")
    s.add_argument("--step", type=int, default=100, help="units labelled per round")
    s.add_argument(
        "--step-tokens",
        type=int,
        help="words per round instead of --step units (same cost for all)",
    )
    s.add_argument("--rounds", type=int, default=10)
    s.add_argument("--unit", choices=["sentence", "post"], default="sentence")
    s.add_argument("--mode", choices=["fast", "full"], default="fast")
    s.add_argument("--base", help="encoder / base checkpoint (default: the backbone)")
    s.add_argument("--full-epochs", type=int, default=4, help="epochs per round in full mode")
    s.add_argument("--pool-limit", type=int, help="use only the first N pool units")
    s.add_argument("--eval-limit", type=int, help="use only the first N held-out units")
    s.add_argument(
        "--random-extra",
        default="",
        help="comma-separated pool sizes where random is also measured",
    )
    s.add_argument("--cache-dir", help="where fast mode caches encoder vectors")
    s.add_argument("--out", required=True, type=Path, help="folder for curves.json and .png")
    s.set_defaults(func=simulate_command)


def _labelled_documents(project, state: ProjectState) -> list[Document]:
    """What training reads (`backend.loop.rounds.annotated_documents`); a project without an
    annotation store yet is read with an empty one, and `select` creates no file."""
    from backend.loop.heldout import annotated_documents
    from labeling.store import Store

    with state.store() if state.has_store() else Store(":memory:") as store:
        return annotated_documents(project, store.annotations)


def _unlabelled_posts(posts, labelled):
    done_texts = {post_key(doc.text) for doc in labelled}
    done_ids = {doc.id for doc in labelled if doc.id}
    return [p for p in posts if post_key(p.text) not in done_texts and p.id not in done_ids]


def _serving_model(project, state: ProjectState, model: str | None) -> str:
    if model:
        return model

    serving = state.registry().serving()
    if serving is None:
        raise ValueError(
            f"project {project.name} has no serving model in {state.models}: "
            "train a round first or pass --model DIR"
        )
    return str(serving.path)


def select_command(args) -> int:

    project, state = project_and_state(args, must_exist=True)
    n = project.selection.batch_size if args.n is None else args.n
    name = args.strategy or project.selection.strategy
    parsed = StrategyName.parse(name)  # an unknown name fails before any work
    labelled = _labelled_documents(project, state)
    if args.pool:
        source = _serving_model(project, state, args.model)
        return select_pool(args, project, labelled, source, n, name)
    if args.import_to_studio:
        raise ValueError("--import-to-studio imports a batch picked from a --pool")
    posts = _unlabelled_posts(project.posts(), labelled)
    if not posts:
        print(f"{project.name}: every post is labelled; nothing to select", file=sys.stderr)
        return 0
    source = _serving_model(project, state, args.model)
    tagger = project.tagger_spec(source).load()
    labels = [span.label for doc in labelled for span in doc.spans]
    strategy = build_strategy(name, tagger.classifier_head, labels)
    print(f"scoring {len(posts)} unlabelled posts with {tagger.version} ...", file=sys.stderr)
    predictions = tagger.predict([p.text for p in posts], hidden=parsed.needs_head)
    items = [
        item_from_prediction(pr, p.id or str(i))
        for i, (p, pr) in enumerate(zip(posts, predictions, strict=True))
    ]
    for item in items:  # the tagger gives no post vector: diversity uses the tag profile
        item.embedding = item.probs.mean(axis=0) if item.cost else None
    picks = strategy.query(items, n, budget_tokens=args.budget_tokens, rng=args.seed)
    rows = [
        batch_row(rank, pick, items[pick.index], posts[pick.index].meta.get("title", ""), strategy)
        for rank, pick in enumerate(picks, 1)
    ]
    print_batch(rows, tagger.version, strategy, args.json, f"{len(posts)} unlabelled posts")
    return 0


def simulate_command(args) -> int:
    import torch

    from labeling.active.simulate import SimConfig, simulate

    torch.set_num_threads(2)
    config = SimConfig(
        strategies=args.strategy or ["mnlp"],
        seeds=args.seeds,
        init=args.init,
        step=args.step,
        step_tokens=args.step_tokens,
        rounds=args.rounds,
        unit=args.unit,
        mode=args.mode,
        base=args.base,
        full_epochs=args.full_epochs,
        pool_limit=args.pool_limit,
        eval_limit=args.eval_limit,
        cache_dir=args.cache_dir,
        random_extra=_sizes(args.random_extra),
    )
    for path in (args.data, args.eval):
        if not Path(path).is_file():
            raise FileNotFoundError(f"data file not found: {path}")
    result = simulate(args.data, args.eval, config, progress=lambda m: print(m, file=sys.stderr))
    from labeling.active.curves import write_outputs

    write_outputs(result, args.out)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"--random-extra takes comma-separated numbers, got {text!r}") from err
