"""The daemons the benchmark starts, watched: one that exits fails the run at once with its own last words."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.netns import ProcessRecord

TAIL_LINES = 12


class DaemonFailed(RuntimeError):
    """A daemon the benchmark started (FRR, ExaBGP, BIRD) exited; the message ends with its own output."""


def log_tail(path: Path, offset: int = 0, lines: int = TAIL_LINES) -> str:
    """The last lines a daemon wrote to path after offset (bytes), or a note that there are none."""
    try:
        with path.open("rb") as stream:
            stream.seek(offset)
            text = stream.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"(no output: {error})"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else f"(nothing in {path})"


def file_size(path: Path) -> int:
    """Bytes in path (0 when it does not exist yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _status(pid: int) -> str:
    code = netns.exit_code(pid)
    if code is None:
        return "exited"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


@dataclass(frozen=True)
class _Watched:
    record: ProcessRecord
    output: tuple[tuple[Path, int], ...]  # each file and its size when the watch began


class DaemonWatch:
    """Processes that must keep running while the benchmark waits on them; check() raises DaemonFailed."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._watched: dict[str, _Watched] = {}
        self._next_check = 0.0

    def add(self, name: str, record: ProcessRecord, *output: Path, since: Mapping[Path, int] | None = None) -> None:
        """Watch record; its failure quotes what it wrote to output after since[path] bytes (default: the size
        now; give the size from before the start, as a daemon may have written and exited already)."""
        offsets = since or {}
        sized = tuple((path, offsets.get(path, file_size(path))) for path in output)
        self._watched[name] = _Watched(record, sized)

    def remove(self, name: str) -> None:
        """Stop watching (before stopping it on purpose)."""
        self._watched.pop(name, None)

    def check(self) -> None:
        """Raise DaemonFailed if a watched daemon has exited (at most every `interval` seconds)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.interval
        for name, watched in list(self._watched.items()):
            if netns.is_same_process(watched.record):
                continue
            self._watched.pop(name)
            said = "\n".join(f"--- {path}:\n{log_tail(path, offset)}" for path, offset in watched.output)
            raise DaemonFailed(f"{name} (PID {watched.record.pid}) {_status(watched.record.pid)}:\n{said}")
