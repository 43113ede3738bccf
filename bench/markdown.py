"""Put the latest table into BENCHMARKS.md between its results markers, keeping the prose around it."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench results begin -->"
END = "<!-- bench results end -->"


def replace_results(path: Path, table: str) -> None:
    """Replace the text between the markers (appending both markers and the table when they are missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{table.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
