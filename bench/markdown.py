"""Put the latest table (or soak) into BENCHMARKS.md between its own markers, keeping the prose around it."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench results begin -->"
END = "<!-- bench results end -->"


def replace_results(path: Path, table: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the markers (appending both markers and the table when they are missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{table.rstrip()}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
