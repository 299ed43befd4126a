"""labeling/state.py is the one resolver of the state base and the one reader of
`SKILLLOOP_STATE_DIR` / `SKILLLOOP_DATABASE_URL` (issue 21): no other module of the
product names them, and the service's config takes its state base from the resolver."""

from __future__ import annotations

import re
from pathlib import Path

from backend.service.config import ENV, ServiceConfig
from labeling.state import DATABASE_URL_ENV, STATE_ENV, state_base

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "labeling", "training")
RESOLVER = Path("labeling/state.py")
NAMES = ("SKILLLOOP_STATE_DIR", "SKILLLOOP_DATABASE_URL")
# a line that reads or writes the environment with the resolver's own constants
ENV_ACCESS = re.compile(r"(environ|getenv|putenv).*\b(STATE_ENV|DATABASE_URL_ENV)\b")


def product_modules() -> list[Path]:
    found = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(found) > 100  # the tree was found, not an empty folder
    return found


def test_only_the_resolver_names_the_state_and_database_variables():
    assert (STATE_ENV, DATABASE_URL_ENV) == NAMES  # what is searched for is what is read
    named, accessed = [], []
    for path in product_modules():
        relative = path.relative_to(ROOT)
        if relative == RESOLVER:
            continue
        text = path.read_text(encoding="utf-8")
        named += [f"{relative}: {name}" for name in NAMES if name in text]
        accessed += [
            f"{relative}: {line.strip()}" for line in text.splitlines() if ENV_ACCESS.search(line)
        ]
    assert named == [], "only labeling/state.py may name these variables"
    assert accessed == [], "only labeling/state.py may read or write them"
    resolver = (ROOT / RESOLVER).read_text(encoding="utf-8")
    assert all(name in resolver for name in NAMES)


def test_the_service_config_takes_its_state_base_from_the_resolver(tmp_path, monkeypatch):
    assert "state_dir" not in ENV and not set(NAMES) & set(ENV.values())
    env = {"SKILLLOOP_PROJECT": "projects/x"}
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "from-env"))
    config = ServiceConfig.from_env(env)
    assert config.state_dir == state_base() == tmp_path / "from-env"
    flag = ServiceConfig.from_env(env, state_dir=tmp_path / "flag")
    assert flag.state_dir == tmp_path / "flag"  # --state-dir wins over the environment
    monkeypatch.delenv(STATE_ENV)
    assert ServiceConfig.from_env(env).state_dir == Path("state")
