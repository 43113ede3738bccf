"""`announcer --version` names the installed distribution's version, which is pyproject.toml's."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lab.lab import project_tool

ROOT = Path(__file__).resolve().parent.parent


def pyproject_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return version


@pytest.mark.parametrize(
    "command",
    [[str(project_tool("announcer"))], [sys.executable, "-m", "announcer"]],
    ids=["console script", "python -m"],
)
def test_version_prints_the_projects_version_and_exits_0(command: list[str]) -> None:
    """The console script and `python -m announcer` alike, with no configuration and no subcommand."""
    completed = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"announcer {pyproject_version()}\n"
    assert completed.stderr == ""


def test_without_a_subcommand_it_still_refuses() -> None:
    """--version is an option of its own: a bare `announcer` is an error (exit 2), not a version."""
    completed = subprocess.run(
        [sys.executable, "-m", "announcer"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 2
    assert "required" in completed.stderr
    assert completed.stdout == ""


def test_parsing_a_runs_arguments_looks_no_version_up() -> None:
    """`announcer run` installs its signal handlers right after parsing: --version's lookup (importlib.metadata,
    tens of milliseconds) happens only when --version is given."""
    probe = (
        "import sys, announcer.cli; announcer.cli._parser().parse_args(['run', '--config', 'x']);"
        " print('importlib.metadata' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"
