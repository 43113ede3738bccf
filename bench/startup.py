"""`python3 -m bench.startup`: the announcer's start-up cost (process start -> first list request), medians of N."""

# Runs `announcer run` as ExaBGP would (a stand-in answering its commands on the pipe) against a tiny HTTP server
# (lab/recording_api.py) that plays an empty cluster: lists answer no items, watches stay open. When the first list
# request arrives, the server reads the process's CPU time (the process waits for the answer, so the figure is exact
# to the scheduler's accounting); once every resource is listed and watched and the process has idled for a moment,
# its peak RSS (VmHWM). CPU is the figure that counts on a loaded machine; the wall time is printed beside it.

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.recording_api import Recorded, RecordingApi, kubeconfig_text

CONFIG = {
    "node_name": "node-a",
    "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "peers": [{"address": "192.0.2.1", "peer_as": 64512}]},
}
TOKEN = "startup-bench-token"  # noqa: S105  (a made-up bearer token for the stand-in)


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of pid, from /proc/PID/task/*/schedstat (nanoseconds on the CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def status_kib(pid: int, field: str) -> int:
    """A 'kB' field of /proc/PID/status (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass(frozen=True)
class Run:
    wall: float  # process start -> first list request, s
    cpu: float  # CPU of the process at its first list request, s
    cpu_idle: float  # CPU once listed, watching and idle, s
    peak_rss_mb: float  # VmHWM once listed, watching and idle


def _answer_exabgp(process: subprocess.Popen[bytes]) -> None:
    """ExaBGP's side of the pipe, as short as can be: every command answered 'done'."""
    assert process.stdin is not None
    assert process.stdout is not None
    for raw in process.stdout:
        answer = b"exabgp 5.0.15\ndone\n" if raw.strip() == b"version" else b"done\n"
        try:
            process.stdin.write(answer)
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return


class _FirstRequest:
    """The time of the first request and the process's CPU then (read while the process waits for the answer)."""

    def __init__(self) -> None:
        self.pid = 0
        self.seen: tuple[float, float] | None = None

    def __call__(self, _recorded: Recorded) -> None:
        if self.seen is None:
            self.seen = (time.monotonic(), cpu_seconds(self.pid))


def one_run(directory: Path, python: str, resources: int = 2, idle: float = 1.0) -> Run:
    """One fresh `announcer run`, measured; resources: how many watches it opens (Services, EndpointSlices)."""
    first = _FirstRequest()
    with RecordingApi(hold_watches=True, on_request=first) as api:
        (directory / "kubeconfig").write_text(kubeconfig_text(api.url, TOKEN))
        (directory / "announcer.yaml").write_text(yaml.safe_dump(CONFIG))
        environment = {**os.environ, "KUBECONFIG": str(directory / "kubeconfig")}
        environment.pop("NODE_NAME", None)
        started = time.monotonic()
        process = subprocess.Popen(
            [python, "-m", "announcer", "run", "--config", str(directory / "announcer.yaml")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        first.pid = process.pid
        threading.Thread(target=_answer_exabgp, args=(process,), daemon=True).start()
        try:
            if not api.wait_for_watches(resources, timeout=60):
                raise RuntimeError(f"the announcer did not list and watch: {api.requests}")
            time.sleep(idle)
            assert first.seen is not None
            arrived, cpu = first.seen
            return Run(
                wall=arrived - started,
                cpu=cpu,
                cpu_idle=cpu_seconds(process.pid),
                peak_rss_mb=status_kib(process.pid, "VmHWM") / 1024,
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the announcer")
    parser.add_argument("--json", action="store_true", help="print each run and the medians as JSON")
    arguments = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch:
        for _ in range(arguments.runs):
            runs.append(one_run(Path(scratch), arguments.python))
    medians = {field: statistics.median(getattr(run, field) for run in runs) for field in Run.__dataclass_fields__}
    if arguments.json:
        print(json.dumps({"runs": [run.__dict__ for run in runs], "medians": medians}, indent=1))
    else:
        print(f"announcer start-up, medians of {len(runs)} fresh processes (empty cluster):")
        print(f"  process start -> first list request: {medians['wall']:.3f} s wall, {medians['cpu']:.3f} CPU s")
        print(f"  listed, watching and idle: {medians['cpu_idle']:.3f} CPU s, peak RSS {medians['peak_rss_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
