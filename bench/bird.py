"""The BIRD 2 reference (what Calico runs): static blackhole routes exported over BGP, `birdc configure`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import netns
from lab.netns import ProcessRecord

BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"


def bird_missing_reason() -> str | None:
    """Why BIRD cannot run here, or None."""
    if not Path(BIRD).exists() or shutil.which(BIRDC) is None:
        return "bird2 is not installed (apt-get install -y bird2)"
    return None


def bird_config(router_id: str, local: dict[str, str], peers: dict[str, str], includes: dict[str, Path]) -> str:
    """A BIRD 2 configuration: one static protocol and one BGP session per family, next hop self."""
    lines = [
        f"router id {router_id};",
        "protocol device { scan time 60; }",
    ]
    for family in ("ipv4", "ipv6"):
        lines += [
            f"protocol static static_{family} {{",
            f"    {family};",
            f'    include "{includes[family]}";',
            "}",
            f"protocol bgp frr_{family} {{",
            f"    local {local[family]} as 64513;",
            f"    neighbor {peers[family]} as 64512;",
            "    connect delay time 1;",
            "    connect retry time 1;",
            "    error wait time 1, 5;",
            f"    {family} {{ import none; export all; next hop self; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def write_static(path: Path, prefixes: list[str]) -> None:
    """The include file of one static protocol: a blackhole route per prefix."""
    path.write_text("".join(f"route {prefix} blackhole;\n" for prefix in prefixes), encoding="ascii")


class Bird:
    """One BIRD daemon in a namespace with its own config and control socket (never the system service)."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.config = directory / "bird.conf"
        self.socket = directory / "bird.ctl"
        self.includes = {family: directory / f"static-{family}.conf" for family in ("ipv4", "ipv6")}
        self.record: ProcessRecord | None = None

    def start(self) -> ProcessRecord:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [BIRD, "-f", "-c", str(self.config), "-s", str(self.socket), "-P", str(self.directory / "bird.pid")]
        self.record = netns.start_process("bird", argv, netns=self.namespace, log_path=self.directory / "bird.out")
        return self.record

    def birdc(self, *words: str, timeout: float = 60.0) -> str:
        completed = subprocess.run(
            [BIRDC, "-s", str(self.socket), *words], capture_output=True, text=True, timeout=timeout, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"birdc {' '.join(words)}: {completed.stdout.strip()} {completed.stderr.strip()}")
        return completed.stdout

    def configure(self) -> str:
        return self.birdc("configure")

    def stop(self) -> None:
        if self.record is not None:
            netns.stop_process(self.record, timeout=5.0)
            self.record = None
