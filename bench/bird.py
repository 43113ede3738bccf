"""The BIRD 1.6 reference (Calico's BIRD, bird and bird6): static blackhole routes sent by BGP, `birdc configure`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import netns
from lab.netns import ProcessRecord

FAMILIES = ("ipv4", "ipv6")
# Debian's BIRD 1.6 (package bird): one daemon per family, as in calico-node (whose BIRD is a fork of 1.6).
BIRD = {"ipv4": "/usr/sbin/bird", "ipv6": "/usr/sbin/bird6"}
BIRDC = {"ipv4": "/usr/sbin/birdc", "ipv6": "/usr/sbin/birdc6"}
NAME = {"ipv4": "bird", "ipv6": "bird6"}


def bird_missing_reason() -> str | None:
    """Why BIRD 1.6 cannot run here, or None."""
    missing = [
        path for path in [*BIRD.values(), *BIRDC.values()] if not Path(path).exists() or shutil.which(path) is None
    ]
    if missing:
        return f"BIRD 1.6 is not installed (missing {', '.join(missing)}; apt-get install -y bird)"
    version = subprocess.run([BIRD["ipv4"], "--version"], capture_output=True, text=True, timeout=10, check=False)
    if "version 1." not in (version.stdout + version.stderr):
        return f"{BIRD['ipv4']} is not BIRD 1.x ({(version.stdout + version.stderr).strip()}): apt-get install -y bird"
    return None


def bird_config(
    router_id: str, local: dict[str, str], peers: dict[str, str], includes: dict[str, Path]
) -> dict[str, str]:
    """A BIRD 1.6 configuration per family (bird: IPv4, bird6: IPv6): one static protocol, one BGP session."""
    configs: dict[str, str] = {}
    for family in FAMILIES:
        configs[family] = (
            "\n".join(
                [
                    f"router id {router_id};",
                    "protocol device { scan time 60; }",
                    "protocol static static_routes {",
                    f'    include "{includes[family]}";',
                    "}",
                    "protocol bgp frr {",
                    "    local as 64513;",
                    f"    source address {local[family]};",
                    f"    neighbor {peers[family]} as 64512;",
                    "    connect delay time 1;",
                    "    connect retry time 1;",
                    "    error wait time 1, 5;",
                    "    import none;",
                    "    export all;",
                    "    next hop self;",
                    "}",
                ]
            )
            + "\n"
        )
    return configs


def write_static(path: Path, prefixes: list[str]) -> None:
    """The include file of one static protocol: a blackhole route per prefix."""
    path.write_text("".join(f"route {prefix} blackhole;\n" for prefix in prefixes), encoding="ascii")


class Bird:
    """BIRD and BIRD6 in a namespace with their own configs and control sockets (never the system service)."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.configs = {family: directory / f"{NAME[family]}.conf" for family in FAMILIES}
        self.sockets = {family: directory / f"{NAME[family]}.ctl" for family in FAMILIES}
        self.includes = {family: directory / f"static-{family}.conf" for family in FAMILIES}
        self.records: list[ProcessRecord] = []

    def write_config(self, configs: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for family, text in configs.items():
            self.configs[family].write_text(text, encoding="utf-8")

    def start(self) -> list[ProcessRecord]:
        self.directory.mkdir(parents=True, exist_ok=True)
        for family in FAMILIES:
            argv = [BIRD[family], "-f", "-c", str(self.configs[family]), "-s", str(self.sockets[family]),
                    "-P", str(self.directory / f"{NAME[family]}.pid")]  # fmt: skip
            log_path = self.directory / f"{NAME[family]}.out"
            self.records.append(netns.start_process(NAME[family], argv, netns=self.namespace, log_path=log_path))
        return list(self.records)

    def birdc(self, family: str, *words: str, timeout: float = 60.0) -> str:
        completed = subprocess.run(
            [BIRDC[family], "-s", str(self.sockets[family]), *words],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise RuntimeError(f"birdc {' '.join(words)}: {completed.stdout.strip()} {completed.stderr.strip()}")
        return completed.stdout

    def configure(self) -> str:
        return "".join(self.birdc(family, "configure") for family in FAMILIES)

    def stop(self) -> None:
        for record in self.records:
            netns.stop_process(record, timeout=5.0)
        self.records = []
