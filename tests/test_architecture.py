"""The layers hold by contract: import-linter checks the pure core, and the check bites when the core imports I/O."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CORE = ("model", "policy", "shapes", "fields", "convert", "desired", "reconcile", "sessions", "handover")


def lint_imports(checkout: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the `announcer` package of a checkout (found first on the path), without a cache."""
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(checkout / "pyproject.toml")],
        cwd=checkout, capture_output=True, text=True, check=False, env=environment,
    )  # fmt: skip


def test_the_pure_core_imports_no_io_and_no_shell_module() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The pure core imports no I/O library and no shell module KEPT" in result.stdout
    assert "The modules form a one-way stack KEPT" in result.stdout


def test_the_contract_lists_every_core_module() -> None:
    """A core module added without its line in the contract would be unchecked."""
    text = (ROOT / "pyproject.toml").read_text()
    for name in CORE:
        assert f'"announcer.{name}",' in text


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the package and its contract, to break on purpose."""
    shutil.copytree(ROOT / "announcer", tmp_path / "announcer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "statement", "imported"),
    [
        ("desired", "import pydantic", "pydantic"),
        ("reconcile", "import threading", "threading"),
        ("convert", "from kubernetes import client", "kubernetes"),
        ("model", "import yaml", "yaml"),
        ("desired", "from announcer.config import Config", "announcer.config"),
        ("reconcile", "import logging.handlers", "logging"),
    ],
)
def test_the_contract_fails_naming_a_core_module_that_imports_io(
    checkout: Path, module: str, statement: str, imported: str
) -> None:
    assert lint_imports(checkout).returncode == 0, "the unchanged copy must pass first"
    path = checkout / "announcer" / f"{module}.py"
    path.write_text(path.read_text() + f"\n{statement}  # noqa\n")
    result = lint_imports(checkout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"announcer.{module} is not allowed to import {imported}" in result.stdout
    assert "The pure core imports no I/O library and no shell module BROKEN" in result.stdout


def test_an_indirect_import_through_a_shell_module_is_caught(checkout: Path) -> None:
    """The core reaching I/O through a module of its own package is as forbidden as importing it directly."""
    (checkout / "announcer" / "helper.py").write_text('"""A helper that does I/O."""\n\nimport socket  # noqa\n')
    path = checkout / "announcer" / "reconcile.py"
    path.write_text(path.read_text() + "\nimport announcer.helper  # noqa\n")
    result = lint_imports(checkout)
    assert result.returncode == 1
    assert "announcer.reconcile -> announcer.helper" in result.stdout


def test_an_upward_import_in_the_shell_breaks_the_stack(checkout: Path) -> None:
    """The watcher reaching up into the state machine (a cycle in the making) is refused."""
    path = checkout / "announcer" / "kube.py"
    path.write_text(path.read_text() + "\nimport announcer.state  # noqa\n")
    result = lint_imports(checkout)
    assert result.returncode == 1
    assert "The modules form a one-way stack BROKEN" in result.stdout
    assert "announcer.kube -> announcer.state" in result.stdout
