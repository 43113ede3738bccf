"""A Docker engine for image builds: the running one, or dockerd started with network-safe flags, one user at a time."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# dockerd as the lab starts it: no default bridge (docker0 would take an address and a route of its own), the
# host's firewall and forwarding sysctls left alone (the lab networks are internal and need neither), and any network
# Docker picks itself from documentation space. Builds use the host's network (build: network: host).
DOCKERD_FLAGS = (
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--default-address-pool",
    "base=203.0.113.64/27,size=28",
)
LOCK = Path("/run/lock/service-announcer-compose-lab.lock")
# Builds like Compose v1 does them through the engine API (the classic builder): no buildx plugin needed.
BUILD_ENVIRONMENT = {"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}
START_TIMEOUT = 60.0


def tool(name: str) -> str:
    """A system tool from Debian (docker.io, docker-compose, containerd), installed by scripts/setup and .ci/run."""
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
                                         if p.exists()), None)  # fmt: skip
    if found is None:
        raise FileNotFoundError(f"{name} is missing: scripts/setup installs docker.io, docker-compose and containerd")
    return found


def engine_answers() -> bool:
    """Whether a Docker engine answers the docker client."""
    completed = subprocess.run(
        [tool("docker"), "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=30, check=False
    )
    return completed.returncode == 0


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One user of the engine at a time on this machine (the compose lab's ranges are fixed; an engine started
    here is stopped when its user is done)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def docker_engine(log: Path) -> Iterator[None]:
    """Uses the running engine; else starts dockerd with DOCKERD_FLAGS and stops it afterwards."""
    if engine_answers():
        yield
        return
    with log.open("w") as output:
        daemon = subprocess.Popen(
            [tool("dockerd"), *DOCKERD_FLAGS], stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not engine_answers():
            if daemon.poll() is not None:
                raise RuntimeError(f"dockerd exited ({daemon.returncode}):\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
