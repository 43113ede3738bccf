"""A null ExaBGP: runs one `announcer run`, acks every line, and logs each line with its CLOCK_MONOTONIC time."""

# Standard library only, one small process per announcer (`python -m bench.null_exabgp LOG -- ARGV...`), so 50 of
# them timestamp their announcers' lines in parallel rather than behind one benchmark process's GIL. The log holds one
# `<monotonic ns> <line>` per command read from the announcer, and `<monotonic ns> #first-sync` when the announcer's
# stderr says 'first sync:' (its stderr is copied to LOG.stderr). SIGTERM is passed on to the announcer, whose
# withdraw-all is acked as usual; the wrapper exits with its exit status.

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

VERSION = "exabgp 5.0.15"
FIRST_SYNC = "#first-sync"


def answers(line: str) -> list[str]:
    """What ExaBGP writes back for one command line: 'done' for everything it applies, the version first for
    'version', nothing held for 'show adj-rib out extensive' (then 'done'), nothing at all for 'reset'."""
    if line == "reset":
        return []
    if line == "version":
        return [VERSION, "done"]
    return ["done"]


class Writer(Protocol):
    def write(self, text: str, /) -> object: ...


def serve(lines: Iterable[bytes], reply: IO[bytes], log: Writer, now: Callable[[], int] = time.monotonic_ns) -> int:
    """Answer every line of `lines` on `reply`, logging each with its time (ns); returns how many were read."""
    count = 0
    for raw in lines:
        stamp = now()
        line = raw.decode("ascii", errors="replace").rstrip("\n")
        count += 1
        log.write(f"{stamp} {line}\n")
        text = "".join(answer + "\n" for answer in answers(line))
        if text:
            try:
                reply.write(text.encode("ascii"))
                reply.flush()
            except (BrokenPipeError, ValueError):
                pass
    return count


def copy_stderr(source: IO[bytes], target: IO[bytes], log: Writer) -> None:
    """Copy the announcer's stderr, noting the time of its 'first sync:' line in the command log."""
    for raw in source:
        target.write(raw)
        target.flush()
        if b"first sync:" in raw:
            log.write(f"{time.monotonic_ns()} {FIRST_SYNC}\n")


class _LockedLog:
    """The command log, written by two threads (commands, first-sync mark), flushed per line."""

    def __init__(self, handle: IO[str], lock: threading.Lock) -> None:
        self.handle = handle
        self.lock = lock

    def write(self, text: str, /) -> None:
        with self.lock:
            self.handle.write(text)
            self.handle.flush()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.null_exabgp LOG -- ARGV...", file=sys.stderr)
        return 2
    log_path, command = Path(argv[0]), argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    with log_path.open("w", encoding="ascii") as handle, log_path.with_suffix(".stderr").open("wb") as stderr:
        log = _LockedLog(handle, threading.Lock())
        copier = threading.Thread(target=copy_stderr, args=(child.stderr, stderr, log), daemon=True)
        copier.start()
        serve(child.stdout, child.stdin, log)
        status = child.wait()
        copier.join(timeout=5)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
