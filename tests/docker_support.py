"""A Docker engine for the compose lab test: the running one, or dockerd started with network-safe flags and stopped."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.compose_support import COMPOSE, LAB_IPV4, LAB_IPV6, REPOSITORY

# dockerd as the test starts it: no default bridge (docker0 would take an address and a route of its own), the
# host's firewall and forwarding sysctls left alone (the lab network is internal and needs neither), and any network
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


def tool(name: str) -> str:
    """A system tool from Debian (docker.io, docker-compose), installed by scripts/setup and .ci/run."""
    found = shutil.which(name)
    assert found is not None, f"{name} is missing: scripts/setup installs docker.io, docker-compose and debootstrap"
    return found


def run(command: Sequence[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs a command with the classic-builder environment, raising with its output when it fails."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **BUILD_ENVIRONMENT},
        cwd=REPOSITORY,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def engine_answers() -> bool:
    return run([tool("docker"), "version", "--format", "{{.Server.Version}}"], timeout=30, check=False).returncode == 0


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One compose lab test at a time on this machine (the lab's ranges are fixed)."""
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
        deadline = time.monotonic() + 60
        while not engine_answers():
            assert daemon.poll() is None, f"dockerd exited ({daemon.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dockerd did not answer within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def host_routes_into_lab() -> list[str]:
    """The host's routes (default routes aside) that overlap the compose lab's ranges."""
    found: list[str] = []
    for family, lab_range in (("-4", LAB_IPV4), ("-6", LAB_IPV6)):
        output = run(["ip", "-j", family, "route", "show", "table", "all"], timeout=30).stdout
        for route in json.loads(output or "[]"):
            destination = str(route.get("dst", "default"))
            if destination == "default" or route.get("type") == "multicast":
                continue
            network = ipaddress.ip_network(destination, strict=False)
            if network.version == lab_range.version and network.overlaps(lab_range):
                found.append(f"{destination} dev {route.get('dev', '?')}")
    return found


class ComposeProject:
    """docker-compose (v1 here, the same file as v2) on the repository's compose file under one project name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *arguments: str, timeout: float = 300) -> str:
        command = [tool("docker-compose"), "--project-directory", str(REPOSITORY), "-f", str(COMPOSE)]
        return run([*command, "-p", self.name, *arguments], timeout=timeout).stdout

    def container(self, service: str) -> str:
        identifier = self("ps", "-q", service).strip()
        assert identifier, f"no container for {service}"
        return identifier

    def exec(self, service: str, *command: str) -> str:
        return run([tool("docker"), "exec", self.container(service), *command], timeout=60).stdout

    def leftovers(self) -> list[str]:
        """Containers and networks of this project that still exist."""
        label = f"label=com.docker.compose.project={self.name}"
        containers = run([tool("docker"), "ps", "-a", "-q", "--filter", label], timeout=30).stdout.split()
        networks = run([tool("docker"), "network", "ls", "-q", "--filter", label], timeout=30).stdout.split()
        return [f"container {item}" for item in containers] + [f"network {item}" for item in networks]
