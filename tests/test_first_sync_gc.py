"""The collector during the first sync: thresholds raised from start-up, restored and the survivors frozen after."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from announcer.daemon import FIRST_SYNC_GC_THRESHOLDS, FirstSyncGc
from lab.fakeapi import FakeApiServer
from lab.recording_api import kubeconfig_text
from tests.factories import service


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
def test_thresholds_are_raised_until_synced_then_restored_and_the_survivors_frozen() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    first_sync = FirstSyncGc()
    assert gc.get_threshold() == FIRST_SYNC_GC_THRESHOLDS
    assert gc.get_freeze_count() == 0
    survivor = [object() for _ in range(10)]
    first_sync.synced()
    assert gc.get_threshold() == (700, 10, 10)
    frozen = gc.get_freeze_count()
    assert frozen > len(survivor)
    later = [[index] for index in range(1000)]  # tracked objects made after the first sync
    first_sync.synced()  # once only: they stay out of the permanent generation
    first_sync.restore()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() < frozen + len(later)  # frozen objects may be freed meanwhile, none are added


@pytest.mark.usefixtures("collector")
def test_an_end_before_the_first_sync_restores_the_thresholds_and_freezes_nothing() -> None:
    gc.set_threshold(900, 12, 14)
    gc.unfreeze()
    first_sync = FirstSyncGc()
    first_sync.restore()
    assert gc.get_threshold() == (900, 12, 14)
    first_sync.synced()  # after restore: nothing left to do
    assert gc.get_freeze_count() == 0


# `announcer run` with a hook that writes the collector's state at the interpreter's exit (argv[1]: the file).
RUN_RECORDING_GC = """
import atexit, gc, json, sys
from pathlib import Path
out = Path(sys.argv.pop(1))
atexit.register(lambda: out.write_text(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()})))
from announcer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def play_exabgp(process: subprocess.Popen[bytes], prefixes: set[str], all_written: threading.Event) -> None:
    """Every command answered 'done'; the prefixes announced collected until there are 100."""
    assert process.stdin is not None
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode().strip()
        if " announce " in line:
            prefixes.update(word for word in line.split() if word.endswith(("/32", "/128")))
        try:
            process.stdin.write(b"exabgp 5.0.15\ndone\n" if line == "version" else b"done\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return
        if len(prefixes) == 100:
            all_written.set()


def test_the_daemon_freezes_after_its_first_sync(tmp_path: Path) -> None:
    """The real `announcer run`: a first sync of 50 dual-stack Services (100 prefixes written), then ExaBGP goes;
    the collector has its default thresholds back and the long-lived objects frozen."""
    config = {
        "node_name": "node-a",
        "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "peers": [{"address": "192.0.2.1", "peer_as": 64512},
                                                                          {"address": "2001:db8::1", "peer_as": 64512}]},
    }  # fmt: skip
    (tmp_path / "announcer.yaml").write_text(yaml.safe_dump(config))
    with FakeApiServer(bookmark_interval=5).start() as api:
        for index in range(50):
            api.apply(service(f"web-{index}", [f"198.51.100.{index + 1}", f"2001:db8:96::{index + 1:x}"]))
        (tmp_path / "kubeconfig").write_text(kubeconfig_text(api.url, "token"))
        environment = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")}
        environment.pop("NODE_NAME", None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                RUN_RECORDING_GC,
                str(tmp_path / "gc.json"),
                "run",
                "--config",
                str(tmp_path / "announcer.yaml"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        prefixes: set[str] = set()
        all_written = threading.Event()
        threading.Thread(target=play_exabgp, args=(process, prefixes, all_written), daemon=True).start()
        try:
            assert all_written.wait(timeout=60), f"only {len(prefixes)} prefixes written"
            time.sleep(1.0)  # the last acks read: the first sync is out
        finally:
            assert process.stdin is not None
            process.stdin.close()  # ExaBGP goes: the announcer exits normally, so the exit hook runs
            assert process.wait(timeout=30) == 0
            assert process.stdout is not None
            process.stdout.close()
    assert len(prefixes) == 100
    state = json.loads((tmp_path / "gc.json").read_text())
    assert tuple(state["threshold"]) == (700, 10, 10)  # the interpreter's default
    assert state["frozen"] > 10_000  # the modules, the client, the tables: everything alive after the first sync
