"""The benchmark fails fast when a daemon it starts dies, and leaves nothing behind on any way out."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from bench import bird as bench_bird
from bench.bird import Bird, ensure_bird
from bench.daemons import DaemonFailed, DaemonWatch
from bench.lab_env import PREFIX, BenchLab
from bench.scenarios import BirdReference
from lab import netns
from tests.lab_support import processes_mentioning, require_lab_prerequisites

pytestmark = pytest.mark.lab

BROKEN_CONFIG = "router id 192.0.2.11;\nprotocol bgp broken {\n    neighbour 192.0.2.1 as 64512;\n}\n"
FAIL_WITHIN = 10.0  # seconds from a daemon's death to DaemonFailed, start-up and teardown included


def broken_bird_config(*_arguments: object) -> str:
    """What a typo makes of a BIRD configuration: BIRD refuses it and exits."""
    return BROKEN_CONFIG


@pytest.fixture
def world_searchable_dir() -> Iterator[Path]:
    """A run directory FRR (user frr) can enter, unlike pytest's own temporary folders."""
    path = Path(tempfile.mkdtemp(prefix="announcer-bench-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def require_bird() -> None:
    """BIRD 1.6 (Debian's `bird`) is installed here when missing; fail (never skip) if that cannot be done."""
    reason = ensure_bird()
    if reason is not None:
        pytest.fail(reason, pytrace=False)


def leftovers(workdir: Path) -> dict[str, list[str]]:
    """What of the benchmark's lab still exists: namespaces, links, its state file, processes."""
    state = netns.STATE_DIR / f"{PREFIX.rstrip('-')}.json"
    found = {
        "namespaces": [name for name in netns.list_namespaces() if name.startswith(PREFIX)],
        "links": netns.links_with_prefix(PREFIX),
        "state file": [str(state)] if state.exists() else [],
        "processes": processes_mentioning(str(workdir)),
    }
    return {kind: items for kind, items in found.items() if items}


def check_until(watch: DaemonWatch, deadline: float) -> None:
    while time.monotonic() < deadline:
        watch.check()
        time.sleep(0.05)


def test_bird_refusing_its_configuration_fails_the_watch_with_bird_s_own_error(world_searchable_dir: Path) -> None:
    """BIRD and BIRD6 exit at once on a broken configuration; the watch reports it with their own message."""
    require_lab_prerequisites()
    require_bird()
    namespace = "bt-bird"
    netns.create_namespace(namespace)
    bird = Bird(namespace, world_searchable_dir / "bird")
    watch = DaemonWatch(interval=0.0)
    try:
        bird.directory.mkdir(parents=True)
        for config in bird.configs.values():
            config.write_text(BROKEN_CONFIG, encoding="utf-8")
        started = time.monotonic()
        for family, record in bird.start().items():
            watch.add(record.name, record, bird.outputs[family], since={bird.outputs[family]: 0})
        with pytest.raises(DaemonFailed) as failure:
            check_until(watch, started + FAIL_WITHIN)
        assert time.monotonic() - started < FAIL_WITHIN
    finally:
        bird.stop()
        netns.delete_namespace(namespace)
    message = str(failure.value)
    assert "exited with status 1" in message
    assert f"{bird.configs['ipv4']}:3" in message or f"{bird.configs['ipv6']}:3" in message
    assert "syntax error" in message


def test_the_bird_reference_with_a_broken_configuration_fails_in_seconds_and_the_lab_is_torn_down(
    world_searchable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C of the benchmark with BIRD refusing its configuration: DaemonFailed carrying BIRD's error within
    seconds (not FRR's full-table timeout), and leaving the `with` block leaves no namespace, process or state."""
    require_lab_prerequisites()
    require_bird()
    monkeypatch.setattr(bench_bird, "bird_config", broken_bird_config)
    with BenchLab(world_searchable_dir) as bench:
        reference = BirdReference(bench)
        assert reference.reason is None
        bench.set_services(10)
        started = time.monotonic()
        with pytest.raises(DaemonFailed, match="syntax error"):
            reference.run(10)
        failed_after = time.monotonic() - started
    assert failed_after < FAIL_WITHIN
    assert leftovers(world_searchable_dir) == {}


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_an_interrupted_benchmark_tears_down_its_namespaces_and_daemons(
    world_searchable_dir: Path, signum: signal.Signals
) -> None:
    """`python3 -m bench` stopped mid-run by SIGTERM or Ctrl-C (SIGINT) stops FRR, ExaBGP and its API process,
    deletes its namespaces and state file, and exits 130 within seconds."""
    require_lab_prerequisites()
    command = [sys.executable, "-m", "bench", "--quick", "--no-bird", "--no-renice", "--workdir",
               str(world_searchable_dir)]  # fmt: skip
    bench = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert bench.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(bench.stderr, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120.0
        while not any("Services in the API server" in line for line in lines):  # the lab is up, runs begin
            assert bench.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(1.0)  # into the first run: ExaBGP and its API process are starting
        assert processes_mentioning(str(world_searchable_dir)) != []
        bench.send_signal(signum)
        signalled = time.monotonic()
        status = bench.wait(timeout=60.0)
        exited_after = time.monotonic() - signalled
        left = leftovers(world_searchable_dir)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        reader.join(5.0)
        bench.stderr.close()
        subprocess.run([sys.executable, "-m", "lab", "down", "--prefix", PREFIX], capture_output=True, check=False)
    assert left == {}
    assert status == 130, "".join(lines)
    assert exited_after < 30.0
    assert any("interrupted" in line for line in lines), "".join(lines)
