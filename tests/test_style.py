"""The code base stays typed (mypy --strict) and lint-clean (ruff), checked by the test command itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's own tools (console scripts of its dependencies) run from its environment, never from PATH: on a fresh
# machine they exist only in .venv. System tools (ip, vtysh, bird) are Debian's and found on PATH on purpose.
PROJECT_TOOLS = ("exabgp", "announcer", "mypy", "ruff", "pytest")
BARE_TOOL = re.compile(
    r"""(?:Popen|run|check_output|check_call|call)\(\s*\[\s*["']({})["']""".format("|".join(PROJECT_TOOLS))
)


def test_mypy_strict_finds_no_error() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_no_lint_and_no_unformatted_file() -> None:
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def test_no_test_or_lab_runs_a_project_tool_from_path() -> None:
    """Subprocesses name the project's tools by their path in sys.executable's directory (or `-m`), not bare."""
    offenders = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(1)}"
        for folder in ("tests", "lab", "bench", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for text in [path.read_text(encoding="utf-8")]
        for match in BARE_TOOL.finditer(text)
    ]
    assert offenders == []
