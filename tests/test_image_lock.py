"""The image: pinned, hashed dependencies (requirements/image.txt locks pyproject.toml's), and nothing it leaves out needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lab.fakeapi import FakeApiServer
from lab.lab import kubeconfig_text
from tests.conftest import BASE_CONFIG
from tests.factories import service

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


# Run with kubernetes.aio made unimportable, as the image has it (the Dockerfile removes it): every module of the
# package imports, and `render` lists a real (stand-in) API server through the client.
WITHOUT_AIO = """
import importlib, pkgutil, sys
class NoAio:
    def find_spec(self, name, path=None, target=None):
        if name == "kubernetes.aio" or name.startswith("kubernetes.aio."):
            raise ImportError("removed from the image: " + name)
        return None
sys.meta_path.insert(0, NoAio())
import announcer
for module in pkgutil.walk_packages(announcer.__path__, "announcer."):
    importlib.import_module(module.name)
from announcer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_announcer_runs_without_the_kubernetes_asyncio_client_the_image_leaves_out(tmp_path: Path) -> None:
    config = tmp_path / "announcer.yaml"
    with FakeApiServer().start() as api:
        api.apply(service("web", ["198.51.100.10"]))
        (tmp_path / "kubeconfig").write_text(kubeconfig_text(api.url))
        config.write_text(yaml.safe_dump({**BASE_CONFIG, "watch": {"kubeconfig": str(tmp_path / "kubeconfig")}}))
        done = subprocess.run(
            [sys.executable, "-c", WITHOUT_AIO, "render", "--config", str(config), "--output", "json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [row["address"] for row in json.loads(done.stdout)["rows"]] == ["198.51.100.10/32"]
    assert "rm -rf /opt/announcer/lib/python3*/site-packages/kubernetes/aio" in (ROOT / "Dockerfile").read_text(
        encoding="utf-8"
    )
