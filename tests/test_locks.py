"""Installs come from the committed locks: every dependency pinned exactly and hash-checked,
the project's own ranges still ranges, and the environments the Makefile built hold exactly
what the locks say (so a new release of anything cannot change what `make test` runs)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
STUDIO_PYTHON = ROOT / ".venv-studio" / "bin" / "python"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)")


def pinned(lock: Path) -> dict[str, Version]:
    """Name -> version of every requirement in a uv/pip-compile lock; each must carry hashes."""
    pins: dict[str, Version] = {}
    entries = re.split(r"\n(?=\S)", lock.read_text())
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        match = PIN.match(entry)
        assert match, f"{lock.name}: not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{lock.name}: {match[1]} has no hash"
        pins[canonicalize_name(match[1])] = Version(match[3])
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    deps = project["dependencies"] + extras["dev"] + extras["ray"]  # both locked, both installed
    return [Requirement(d) for d in deps]


def test_every_project_dependency_is_pinned_in_the_lock_within_its_range():
    pins = pinned(LOCKS / "project-lock.txt")
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":  # installed on its own, before the lock (a CUDA build otherwise)
            assert "torch" not in pins and str(req.specifier) == "==2.13.0"
            continue
        assert name in pins, f"{req.name} is not in locks/project-lock.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_the_lock_tools_are_locked_too():
    pins = pinned(LOCKS / "project-lock.txt")
    assert "uv" in pins and "setuptools" in pins  # `make lock` and the editable build


def test_the_ray_extra_is_locked_so_make_install_installs_it():
    pins = pinned(LOCKS / "project-lock.txt")
    assert pins["ray"] == Version("2.58.0") and "duckdb" in pins and "pyarrow" in pins
    dry = subprocess.run(
        ["make", "-n", "-B", "lock"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "--extra dev --extra ray" in dry


def test_label_studio_is_locked_with_a_sentry_sdk_it_can_start_with():
    pins = pinned(LOCKS / "studio-lock.txt")
    assert pins["label-studio"] == Version("1.23.2")
    # sentry-sdk 3.0 dropped `send_default_pii`, which Label Studio 1.23.2 passes at start
    assert pins["sentry-sdk"] < Version("3")
    assert pins["label-studio-sdk"] == pinned(LOCKS / "project-lock.txt")["label-studio-sdk"]


def test_this_environment_holds_exactly_what_the_project_lock_says():
    pins = pinned(LOCKS / "project-lock.txt")
    wrong = {
        name: (str(version), metadata.version(name))
        for name, version in pins.items()
        if Version(metadata.version(name)) != version
    }
    assert not wrong, f"installed versions differ from locks/project-lock.txt: {wrong}"


@pytest.mark.skipif(not STUDIO_PYTHON.exists(), reason="no .venv-studio (make studio-install)")
def test_label_studios_environment_holds_exactly_what_its_lock_says():
    listed = subprocess.run(
        [str(STUDIO_PYTHON), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        canonicalize_name(name): Version(version)
        for name, version in (line.split("==") for line in listed.splitlines() if "==" in line)
    }
    pins = pinned(LOCKS / "studio-lock.txt")
    wrong = {n: (str(v), str(installed.get(n))) for n, v in pins.items() if installed.get(n) != v}
    assert not wrong, f".venv-studio differs from locks/studio-lock.txt: {wrong}"


def test_the_makefile_installs_from_the_locks_and_make_lock_refreshes_them():
    dry = subprocess.run(
        ["make", "-n", "-B", "install", "studio-install", "lock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--require-hashes -r locks/project-lock.txt" in dry
    assert "--require-hashes -r locks/studio-lock.txt" in dry
    assert (
        "uv pip compile" in dry
        and "-o locks/project-lock.txt" in dry
        and "-o locks/studio-lock.txt" in dry
    )


def test_the_licence_is_an_spdx_expression_setuptools_keeps_building():
    # a `{ text = "MIT" }` table makes setuptools warn four times per install that it stops
    # building on 2027-02-18
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_each_install_step_says_what_it_does_and_when():
    dry = subprocess.run(
        ["make", "-n", "-B", "install", "studio-install"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    steps = [line for line in dry.splitlines() if "[skillloop +" in line]
    assert len(steps) >= 6  # venv, torch, the lock, the project, ready; Label Studio's too
    assert not [line for line in dry.splitlines() if "pip install" in line and " -q" in line]
