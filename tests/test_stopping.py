"""`announcer run` started while its node is stopping (ANNOUNCER_STOPPING_FILE exists) announces nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from announcer.cli import ENV_STOPPING_FILE
from lab.recording_api import RecordingApi, kubeconfig_text

CONFIG = {
    "node_name": "node-a",
    "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "peers": [{"address": "192.0.2.1", "peer_as": 64512}]},
}


def start(tmp_path: Path, api: RecordingApi, marker: Path) -> subprocess.Popen[bytes]:
    (tmp_path / "announcer.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "kubeconfig").write_text(kubeconfig_text(api.url, "token"))
    environment = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"), ENV_STOPPING_FILE: str(marker)}
    environment.pop("NODE_NAME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "announcer", "run", "--config", str(tmp_path / "announcer.yaml")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )


def test_a_run_started_during_a_stop_idles_until_exabgp_goes_and_announces_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "stopping"
    marker.touch()
    with RecordingApi() as api:
        process = start(tmp_path, api, marker)
        time.sleep(1.5)  # a normal start has listed by now (tests/test_kube_requests.py)
        still_running = process.poll() is None
        stdout, stderr = process.communicate(b"", timeout=30)  # ExaBGP goes: standard input ends
        requests = api.take()
    assert still_running, "it waits for ExaBGP's end: exiting would make ExaBGP respawn it again at once"
    assert process.returncode == 0
    assert stdout == b""
    assert requests == []
    assert f"{marker} exists: the node is stopping; announcing nothing" in stderr.decode()


def test_a_run_whose_marker_does_not_exist_starts_as_usual(tmp_path: Path) -> None:
    marker = tmp_path / "stopping"  # named in the environment, not created: the node is not stopping
    with RecordingApi() as api:
        process = start(tmp_path, api, marker)
        try:
            with api.changed:
                assert api.changed.wait_for(lambda: len(api.requests) >= 2, timeout=60), "no list request"
        finally:
            process.communicate(b"", timeout=30)
        paths = {request.path for request in api.take()}
    assert {"/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"} <= paths
