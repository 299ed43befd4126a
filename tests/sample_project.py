"""The sample project (projects/linkedin-skills) as tests that are not about links use it.

The shipped project links every span to ESCO (`[linking] taxonomy = "esco"` and the link
controls in its labeling config), and ESCO's first use embeds its 96,135 labels: minutes
of both cores. Tests of linking use a tiny taxonomy (tests/test_link_*.py); the others
take the sample's labels without the link controls (`PLAIN_CONFIG`: Label Studio then
asks no `link_choices` of a task) or a copy of the project with linking off
(`unlinked_copy`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from labeling.studio.config import build_config, parse_config

SAMPLE = Path(__file__).resolve().parents[1] / "projects" / "linkedin-skills"
# the sample's labels, no link controls
PLAIN_CONFIG = build_config(parse_config((SAMPLE / "labeling_config.xml").read_text()).labels)
LINKING_SECTION = re.compile(r"^\[linking\]\n(?:(?!\[).*\n)*", re.MULTILINE)


def unlinked_copy(dest: Path) -> Path:
    """A copy of the sample project (same name, posts and gold) with linking off."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (dest / "project.toml").read_text()
    (dest / "project.toml").write_text(LINKING_SECTION.sub("", toml))
    (dest / "labeling_config.xml").write_text(PLAIN_CONFIG)
    return dest


def reference_project_toml(name: str, *, title: str | None = None, gold: str | None = None) -> str:
    """A project.toml whose four labels take the reference model's tags (BUS, TECHNOLOGY,
    TECHNICAL, SOFT) through its label map, MNLP selection of 3 posts from posts.jsonl
    (and `gold` as its gold file when given)."""
    labels = "".join(
        f'[[labels]]\nvalue = "{v}"\n' for v in ("Business", "Technology", "Technical", "Soft")
    )
    return (
        f'[project]\nname = "{name}"\n'
        + (f'title = "{title}"\n' if title else "")
        + labels
        + '[model]\nlabel_map = {BUS = "Business", TECHNOLOGY = "Technology", '
        'TECHNICAL = "Technical", SOFT = "Soft"}\n'
        '[selection]\nstrategy = "mnlp"\nbatch_size = 3\n'
        '[data]\nposts = "posts.jsonl"\n' + (f'gold = "{gold}"\n' if gold else "")
    )
