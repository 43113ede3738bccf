"""The BIRD 1.6 reference (Calico's own daemons, `bird` and `bird6`): static blackhole routes over BGP."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.netns import ProcessRecord

# Debian's `bird` package (BIRD 1.6.8, what calico-node runs): one daemon and one client per family. It
# conflicts with `bird2`; the Calico lab mode needs this one too.
PACKAGE = "bird"
FAMILIES = ("ipv4", "ipv6")


@dataclass(frozen=True)
class BirdDaemon:
    """One BIRD 1.6 daemon: `bird` speaks IPv4 only, `bird6` IPv6 only; each has its own client."""

    family: str
    daemon: Path
    client: Path

    @property
    def name(self) -> str:
        return self.daemon.name


DAEMONS = {
    "ipv4": BirdDaemon("ipv4", Path("/usr/sbin/bird"), Path("/usr/sbin/birdc")),
    "ipv6": BirdDaemon("ipv6", Path("/usr/sbin/bird6"), Path("/usr/sbin/birdc6")),
}


def bird_missing_reason() -> str | None:
    """Why BIRD 1.6 cannot run here, or None."""
    missing = [str(path) for each in DAEMONS.values() for path in (each.daemon, each.client) if not path.exists()]
    if not missing:
        return None
    return f"BIRD 1.6 is not installed (missing {', '.join(missing)}): apt-get install -y {PACKAGE}"


def ensure_bird() -> str | None:
    """Install Debian's `bird` (1.6) when it is missing; None when BIRD is usable, else why not."""
    if bird_missing_reason() is None:
        return None
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        completed = subprocess.run(argv, capture_output=True, text=True, env=environment, check=False)
        if completed.returncode != 0:
            return f"{bird_missing_reason()}; '{' '.join(argv)}' failed: {completed.stderr.strip()[-300:]}"
    return bird_missing_reason()


def bird_config(router_id: str, family: str, local: str, peer: str, include: Path) -> str:
    """A BIRD 1.6 configuration of one family's daemon: one static protocol and one BGP session, next hop self."""
    return "\n".join(
        [
            f"router id {router_id};",
            "protocol device { scan time 60; }",
            f"protocol static static_{family} {{",
            f'    include "{include}";',
            "}",
            f"protocol bgp frr_{family} {{",
            f"    local {local} as 64513;",
            f"    neighbor {peer} as 64512;",
            "    connect delay time 1;",
            "    connect retry time 1;",
            "    error wait time 1, 5;",
            "    import none;",
            "    export all;",
            "    next hop self;",
            "}",
            "",
        ]
    )


def write_static(path: Path, prefixes: list[str]) -> None:
    """The include file of one static protocol: a blackhole route per prefix."""
    path.write_text("".join(f"route {prefix} blackhole;\n" for prefix in prefixes), encoding="ascii")


class Bird:
    """BIRD and BIRD6 in a namespace, each with its own config and control socket (never the system service)."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.configs = {family: directory / f"{DAEMONS[family].name}.conf" for family in FAMILIES}
        self.sockets = {family: directory / f"{DAEMONS[family].name}.ctl" for family in FAMILIES}
        self.outputs = {family: directory / f"{DAEMONS[family].name}.out" for family in FAMILIES}
        self.includes = {family: directory / f"static-{family}.conf" for family in FAMILIES}
        self.records: dict[str, ProcessRecord] = {}

    def write_configs(self, router_id: str, local: dict[str, str], peers: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for family in FAMILIES:
            text = bird_config(router_id, family, local[family], peers[family], self.includes[family])
            self.configs[family].write_text(text, encoding="utf-8")

    def start(self) -> dict[str, ProcessRecord]:
        """Start both daemons in the foreground (their errors go to NAME.out, fresh each start); the records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for family in FAMILIES:
            self.outputs[family].unlink(missing_ok=True)
            daemon = DAEMONS[family]
            argv = [str(daemon.daemon), "-f", "-c", str(self.configs[family]), "-s", str(self.sockets[family]),
                    "-P", str(self.directory / f"{daemon.name}.pid")]  # fmt: skip
            self.records[family] = netns.start_process(
                daemon.name, argv, netns=self.namespace, log_path=self.outputs[family]
            )
        return dict(self.records)

    def birdc(self, family: str, *words: str, timeout: float = 60.0) -> str:
        client = DAEMONS[family].client
        completed = subprocess.run(
            [str(client), "-s", str(self.sockets[family]), *words],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise RuntimeError(
                f"{client.name} {' '.join(words)}: {completed.stdout.strip()} {completed.stderr.strip()}"
            )
        return completed.stdout

    def configure(self) -> None:
        """`birdc configure` and `birdc6 configure`: reread the configs (and so the static include files)."""
        for family in FAMILIES:
            answer = self.birdc(family, "configure")
            if "Reconfigured" not in answer and "Reconfiguration in progress" not in answer:
                raise RuntimeError(f"{DAEMONS[family].client.name} configure: {answer.strip()}")

    def stop(self) -> list[ProcessRecord]:
        """Stop both daemons; the records of what was stopped."""
        stopped = list(self.records.values())
        for record in stopped:
            netns.stop_process(record, timeout=5.0)
        self.records = {}
        return stopped
