"""`skillloop rollback`: serve an earlier model version again."""

from __future__ import annotations

from backend.cli.options import add_project_options, project_and_state, roll_back


def register(subparsers) -> None:
    p = subparsers.add_parser("rollback", help="serve an earlier model version again")
    p.add_argument("version", help="a version id, e.g. v0002 (GET /versions)")
    add_project_options(p)
    p.add_argument("--reason", default="", help="why (recorded in the registry)")
    p.set_defaults(func=rollback_command)


def rollback_command(args) -> int:
    project, state = project_and_state(args, must_exist=True)
    reason = args.reason or "rolled back with skillloop rollback"
    version, was = roll_back(state.registry(), "model", project.name, args.version, reason)
    print(
        f"{project.name}: {version.version} is serving now (was {was}); "
        f"held-out F1 {_f1(version.heldout_f1)}. A running service switches to it within "
        "seconds (it checks the registry every SKILLLOOP_WATCH_INTERVAL, 5 s)."
    )
    return 0


def _f1(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
