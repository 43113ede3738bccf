"""Docker for the compose lab test: the engine (lab/dockerd.py), docker-compose on the repository's compose file."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Sequence

from lab.dockerd import BUILD_ENVIRONMENT, docker_engine, exclusive, tool
from tests.compose_support import COMPOSE, LAB_IPV4, LAB_IPV6, REPOSITORY

__all__ = ["ComposeProject", "docker_engine", "exclusive", "host_routes_into_lab", "run", "tool"]


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
