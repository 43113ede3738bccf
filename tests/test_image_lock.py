"""The image installs pinned, hashed dependencies: requirements/image.txt locks every pyproject.toml dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "image.txt"
# One locked requirement: `name==version \` then its `--hash=sha256:...` lines.
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.MULTILINE)


def locked() -> dict[str, tuple[Version, int]]:
    """{canonical name: (version, number of hashes)} from the lock."""
    return {
        canonicalize_name(name): (Version(version), hashes.count("--hash="))
        for name, version, hashes in ENTRY.findall(LOCK.read_text(encoding="utf-8"))
    }


def test_every_dependency_of_the_product_is_pinned_in_the_lock_within_its_range() -> None:
    pins = locked()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    for text in dependencies:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {LOCK.name}: run pip-compile again (see its header)"
        assert requirement.specifier.contains(pins[name][0]), f"{name}=={pins[name][0]} is outside {text!r}"


def test_every_locked_requirement_carries_hashes_and_nothing_else_is_installed_unpinned() -> None:
    text = LOCK.read_text(encoding="utf-8")
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    pins = locked()
    assert len(requirement_lines) == len(pins) > 20, "every requirement line is name==version with hashes"
    assert all(count >= 1 for _, count in pins.values())
    assert "--find-links" not in text and "--index-url" not in text, "the lock names no host"


def test_the_image_installs_the_lock_with_hashes_required_and_no_resolution() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY requirements/image.txt ./requirements.txt" in dockerfile
    assert "pip install --require-hashes --no-deps -r requirements.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile, "the announcer itself adds no dependency"
