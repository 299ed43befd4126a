"""The model registry: every trained version of a project's tagger, kept on disk, and
which one is serving.

Layout under `root` (a project's `state/<name>/models`): one checkpoint folder per
version (`v0001/`, `v0002/`, ... monotonic, never reused) and `versions.json`, the index,
rewritten atomically (temp file, fsync, `os.replace`) under an exclusive file lock, so the
service, its training worker and the `skillloop rollback` command can share it.

Statuses: "candidate" (registered, not yet judged), "serving" (exactly one or none),
"refused" (kept, never served unless rolled back to), "retired" (served before).
`LinkerRegistry` keeps a project's linker versions the same way (`state/<name>/linkers`):
a version is a linker folder (`linker.json`, its adapter), gated on validation accuracy@1.
A process that serves the model notices a promotion or rollback by another process with
`serving_changed_since(mtime)`: a stat of the index, cheap enough to call per request.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

INDEX_FILE = "versions.json"
LOCK_FILE = ".lock"
STATUSES = ("serving", "candidate", "refused", "retired")
VERSION_PATTERN = re.compile(r"^v(\d+)$")


@dataclass
class ModelVersion:
    version: str  # "v0003"
    path: Path  # the checkpoint folder, root/<version>
    parent: str | None = None  # the version it was warm-started from (None: the base)
    created_at: str = ""
    status: str = "candidate"
    metrics: dict = field(default_factory=dict)  # held-out EvalReport.to_dict()
    heldout_f1: float | None = None
    baseline_f1: float | None = None  # the serving model's F1 on the same held-out set
    baseline_version: str | None = None  # which model that was ("base" for the project base)
    snapshot: dict = field(default_factory=dict)  # annotation_ids, sha256, documents, ...
    reason: str = ""  # why it was promoted, refused or rolled back to
    timings: dict = field(default_factory=dict)  # train_s, eval_s, ...
    trigger: str = ""  # what started the round: "auto", "Start Training", "cli", ...
    labels: list[str] = field(default_factory=list)
    base: str | None = None  # what training started from (a version's path or the base)
    round_id: str = ""  # the round that trained it (state/rounds/<round_id>/)
    gate: dict = field(default_factory=dict)  # the gate's measurement (backend.loop.gate)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    MARKER = "config.json"  # the file that makes a folder a version of this kind
    KIND = "model"
    FOLDER = "checkpoint"  # what a version's folder is called in messages

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index_path = self.root / INDEX_FILE

    # ------------------------------------------------------------------ reads

    def versions(self) -> list[ModelVersion]:
        return [self._version(entry) for entry in self._read()["versions"]]

    def get(self, version: str) -> ModelVersion:
        for entry in self._read()["versions"]:
            if entry["version"] == version:
                return self._version(entry)
        known = ", ".join(v.version for v in self.versions()) or "none yet"
        raise ValueError(f"unknown {self.KIND} version {version!r} (known: {known})")

    def serving(self) -> ModelVersion | None:
        current = self._read().get("serving")
        return None if current is None else self.get(current)

    def events(self) -> list[dict]:
        """Every promotion, refusal and rollback, oldest first."""
        return list(self._read()["events"])

    def index_mtime(self) -> float:
        """When the index last changed (0.0 before the first version)."""
        try:
            return self.index_path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def serving_changed_since(self, mtime: float) -> bool:
        """Whether the index changed after `mtime` (from `index_mtime()`): the serving
        process then re-reads `serving()` and swaps models if it differs."""
        return self.index_mtime() != mtime

    # ------------------------------------------------------------------ writes

    def add(self, checkpoint: str | Path, **details) -> ModelVersion:
        """Register a trained checkpoint folder as the next version (status "candidate").

        The folder is moved into the registry (root/<version>/); put it under `root` first
        (e.g. root/.incoming/) so that the move is one rename. `details` are ModelVersion
        fields (parent, metrics, heldout_f1, snapshot, timings, trigger, labels, ...).
        """
        checkpoint = Path(checkpoint)
        if not (checkpoint / self.MARKER).is_file():
            raise ValueError(f"{checkpoint} is not a {self.FOLDER} folder (no {self.MARKER})")
        allowed = {f.name for f in fields(ModelVersion)} - {"version", "path", "status"}
        unknown = sorted(set(details) - allowed)
        if unknown:
            raise ValueError(f"unknown version details {unknown}")
        with self._locked() as index:
            version = f"v{self._next_number(index):04d}"
            target = self.root / version
            shutil.move(str(checkpoint), str(target))
            entry = ModelVersion(version, target, created_at=_now(), **details).to_dict()
            entry["path"] = version  # stored relative: the state folder may move
            index["versions"].append(entry)
            self._event(index, "add", version, details.get("reason", ""))
        return self.get(version)

    def promote(self, version: str, reason: str = "") -> ModelVersion:
        """Serve `version`; the version serving before it is retired."""
        return self._serve(version, reason, "promote")

    def rollback(self, version: str, reason: str = "") -> ModelVersion:
        """Serve an earlier `version` again (any status, as long as its checkpoint exists)."""
        return self._serve(version, reason or "rolled back by hand", "rollback")

    def refuse(self, version: str, reason: str) -> ModelVersion:
        """Keep `version` but never serve it (unless rolled back to); records why."""
        with self._locked() as index:
            entry = self._entry(index, version)
            if entry["status"] == "serving":
                raise ValueError(f"{version} is serving: roll back to another version first")
            entry["status"], entry["reason"] = "refused", reason
            self._event(index, "refuse", version, reason)
        return self.get(version)

    def set_gate(self, version: str, details: dict) -> ModelVersion:
        """Record how the gate measured `version` (before promoting or refusing it)."""
        with self._locked() as index:
            self._entry(index, version)["gate"] = details
        return self.get(version)

    # ------------------------------------------------------------------ internals

    def _serve(self, version: str, reason: str, action: str) -> ModelVersion:
        with self._locked() as index:
            entry = self._entry(index, version)
            previous = index.get("serving")
            if action == "rollback" and previous == version:
                raise ValueError(f"{version} is already serving")
            if not (self.root / version / self.MARKER).is_file():
                raise FileNotFoundError(f"the {self.FOLDER} of {version} is missing: {self.root}")
            if previous is not None and previous != version:
                self._entry(index, previous)["status"] = "retired"
            entry["status"], entry["reason"] = "serving", reason
            index["serving"] = version
            self._event(index, action, version, reason, previous=previous)
        return self.get(version)

    def _version(self, entry: dict) -> ModelVersion:
        known = {f.name for f in fields(ModelVersion)}
        values = {k: v for k, v in entry.items() if k in known}
        values["path"] = self.root / entry["version"]
        return ModelVersion(**values)

    def _entry(self, index: dict, version: str) -> dict:
        for entry in index["versions"]:
            if entry["version"] == version:
                return entry
        known = ", ".join(e["version"] for e in index["versions"]) or "none yet"
        raise ValueError(f"unknown {self.KIND} version {version!r} (known: {known})")

    @staticmethod
    def _event(index: dict, action: str, version: str, reason: str, **extra) -> None:
        index["events"].append(
            {"at": _now(), "action": action, "version": version, "reason": reason, **extra}
        )

    def _next_number(self, index: dict) -> int:
        names = [e["version"] for e in index["versions"]]
        if self.root.is_dir():
            names += [p.name for p in self.root.iterdir()]
        numbers = [int(m.group(1)) for n in names if (m := VERSION_PATTERN.match(n))]
        return max(numbers, default=0) + 1

    def _read(self) -> dict:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"serving": None, "versions": [], "events": []}
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.index_path} is corrupt: {err}") from err
        data.setdefault("events", [])
        return data

    @contextmanager
    def _locked(self):
        """Read-modify-write the index under an exclusive lock; written only on success."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self._read()
                yield index
                self._write(index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, index: dict) -> None:
        index["kind"] = self.KIND
        temp = self.index_path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        with open(temp, "w", encoding="utf-8") as out:
            json.dump(index, out, indent=2, ensure_ascii=False, default=str)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.index_path)
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)


class LinkerRegistry(Registry):
    """A project's linker versions: each a linker folder (`linker.json`, the adapter), its
    validation figures in `metrics`, the gate's comparison in `gate`."""

    MARKER = "linker.json"  # training.linker.LINKER_FILE
    KIND = "linker"
    FOLDER = "linker"
