"""FRR (zebra and bgpd) in the router namespace with its own runtime folder, and vtysh JSON queries."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lab import netns
from lab.netns import LabCommandError, ProcessRecord

log = logging.getLogger(__name__)

FRR_BIN_DIR = Path("/usr/lib/frr")
FRR_USER = "frr"
FRR_GROUP = "frr"
FILES_DIR = Path(__file__).resolve().parent / "files"
FRR_CONF = FILES_DIR / "frr.conf"

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, Family] = ("ipv4", "ipv6")


class FrrMissingError(RuntimeError):
    """FRR is not installed (zebra, bgpd or vtysh not found)."""


def frr_missing_reason() -> str | None:
    """Why FRR cannot run here, or None when zebra, bgpd, vtysh and the frr user are all present."""
    missing = [str(FRR_BIN_DIR / name) for name in ("zebra", "bgpd") if not (FRR_BIN_DIR / name).exists()]
    if shutil.which("vtysh") is None:
        missing.append("vtysh")
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        missing.append(f"user {FRR_USER}")
    if not missing:
        return None
    return f"FRR is not installed (missing {', '.join(missing)}): run 'apt-get update && apt-get install -y frr'"


def _check_traversable_by_others(path: Path) -> None:
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            raise PermissionError(
                f"FRR runs as user {FRR_USER} and cannot enter {folder} (mode {oct(folder.stat().st_mode & 0o777)}):"
                " choose a run directory whose parent folders are world-searchable"
            )


@dataclass(frozen=True)
class BgpPath:
    """One path of a prefix in FRR's BGP table."""

    peer: str
    next_hops: tuple[str, ...]
    valid: bool
    best: bool
    multipath: bool
    stale: bool = False  # kept through a graceful restart, not yet refreshed by the restarted peer


def parse_bgp_table(document: Any) -> dict[str, list[BgpPath]]:
    """Paths per prefix from `show bgp <family> unicast json` (global next-hops only, link-locals dropped)."""
    table: dict[str, list[BgpPath]] = {}
    routes = document.get("routes", {}) if isinstance(document, dict) else {}
    for prefix, paths in routes.items():
        for path in paths:
            next_hops = tuple(
                str(hop["ip"])
                for hop in path.get("nexthops", [])
                if hop.get("scope", "global") != "link-local" and "ip" in hop
            )
            table.setdefault(prefix, []).append(
                BgpPath(
                    peer=str(path.get("peerId", "")),
                    next_hops=next_hops,
                    valid=bool(path.get("valid", False)),
                    best=bool(path.get("bestpath", False)),
                    multipath=bool(path.get("multipath", False)),
                    stale=bool(path.get("stale", False)),
                )
            )
    return table


class FrrRouter:
    """zebra and bgpd running in one namespace, configured from frr.conf, queried with vtysh."""

    def __init__(
        self,
        namespace: str,
        runtime_dir: Path,
        config_path: Path = FRR_CONF,
        on_start: Callable[[ProcessRecord], None] | None = None,
        on_stop: Callable[[ProcessRecord], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.runtime_dir = runtime_dir
        self.config_path = config_path
        self._on_start = on_start
        self._on_stop = on_stop
        self.processes: list[ProcessRecord] = []

    def log_path(self, daemon: str) -> Path:
        """The log file of zebra or bgpd."""
        return self.runtime_dir / f"{daemon}.log"

    def _prepare_runtime_dir(self) -> None:
        reason = frr_missing_reason()
        if reason is not None:
            raise FrrMissingError(reason)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        _check_traversable_by_others(self.runtime_dir.parent)
        (self.runtime_dir / "zebra.conf").write_text("hostname lab-router\n", encoding="utf-8")
        shutil.copyfile(self.config_path, self.runtime_dir / "bgpd.conf")
        uid = pwd.getpwnam(FRR_USER).pw_uid
        gid = grp.getgrnam(FRR_GROUP).gr_gid
        for path in [self.runtime_dir, *self.runtime_dir.iterdir()]:
            os.chown(path, uid, gid)
        self.runtime_dir.chmod(0o755)

    def _daemon_argv(self, daemon: str) -> list[str]:
        folder = str(self.runtime_dir)
        return [
            str(FRR_BIN_DIR / daemon),
            "-u", FRR_USER,
            "-g", FRR_GROUP,
            "-P", "0",  # no TCP vty port: vtysh talks over the socket folder
            "-i", f"{folder}/{daemon}.pid",
            "-z", f"{folder}/zserv.api",
            "--vty_socket", folder,
            "-f", f"{folder}/{daemon}.conf",
            "--log", f"file:{self.log_path(daemon)}",
        ]  # fmt: skip

    def _start_daemon(self, daemon: str, ready: Callable[[], bool], timeout: float) -> None:
        record = netns.start_process(
            f"frr-{daemon}",
            self._daemon_argv(daemon),
            netns=self.namespace,
            log_path=self.runtime_dir / f"{daemon}.out",
        )
        self.processes.append(record)
        if self._on_start is not None:
            self._on_start(record)
        deadline = time.monotonic() + timeout
        while not ready():
            if not netns.is_alive(record.pid):
                raise RuntimeError(f"FRR {daemon} exited at start; see {self.runtime_dir}/{daemon}.out and .log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"FRR {daemon} did not answer within {timeout:.0f} s; see {self.runtime_dir}")
            time.sleep(0.05)

    def start(self, timeout: float = 20.0) -> None:
        """Start zebra, wait for its API socket, start bgpd, wait until vtysh answers."""
        self._prepare_runtime_dir()
        self._start_daemon("zebra", (self.runtime_dir / "zserv.api").exists, timeout)
        self._start_daemon("bgpd", self._bgpd_answers, timeout)

    def _bgpd_answers(self) -> bool:
        if not (self.runtime_dir / "bgpd.vty").exists():
            return False
        try:
            document = self.vtysh_json("show bgp summary json")
        except (LabCommandError, ValueError, subprocess.TimeoutExpired):
            return False
        return isinstance(document, dict) and bool(document)

    def stop(self) -> None:
        """Stop bgpd then zebra by PID."""
        for record in reversed(self.processes):
            netns.stop_process(record)
            if self._on_stop is not None:
                self._on_stop(record)
        self.processes = []

    def vtysh(self, *commands: str, timeout: float = 15.0) -> str:
        """Run vtysh commands against this router and return the output."""
        argv = ["vtysh", "--vty_socket", str(self.runtime_dir)]
        for command in commands:
            argv += ["-c", command]
        return netns.run(argv, netns=self.namespace, timeout=timeout).stdout

    def vtysh_json(self, command: str) -> Any:
        """Run one `... json` command and decode its output."""
        return json.loads(self.vtysh(command) or "{}")

    def bgp_table(self, family: Family) -> dict[str, list[BgpPath]]:
        """Every path per prefix of one family (`show bgp <family> unicast json`)."""
        return parse_bgp_table(self.vtysh_json(f"show bgp {family} unicast json"))

    def received_routes(self, neighbor: str, family: Family) -> dict[str, list[BgpPath]]:
        """What one neighbour sent, before policy (needs soft-reconfiguration inbound)."""
        document = self.vtysh_json(f"show bgp {family} unicast neighbors {neighbor} received-routes json")
        if isinstance(document, dict) and "receivedRoutes" in document:
            # This form lists one path per prefix as an object; normalise it to the table shape.
            document = {
                "routes": {
                    prefix: [
                        {
                            "peerId": neighbor,
                            "valid": bool(path.get("appliedStatusSymbols", {}).get("*", False)),
                            "nexthops": [{"ip": path.get("nextHop") or path.get("nextHopGlobal")}],
                        }
                    ]
                    for prefix, path in document["receivedRoutes"].items()
                }
            }
        return parse_bgp_table(document)

    def neighbors(self) -> dict[str, Any]:
        """`show bgp neighbors json`: state, counters and timers per neighbour address."""
        document = self.vtysh_json("show bgp neighbors json")
        return document if isinstance(document, dict) else {}

    def session_states(self) -> dict[str, str]:
        """BGP state per neighbour address (Idle, Connect, Active, OpenSent, OpenConfirm, Established)."""
        return {str(peer): str(info.get("bgpState", "?")) for peer, info in self.neighbors().items()}

    def wait_established(self, peers: Iterable[str], timeout: float = 60.0) -> float:
        """Wait until every given neighbour is Established; return the seconds waited."""
        wanted = set(peers)
        started = time.monotonic()
        states: dict[str, str] = {}
        while True:
            try:
                states = self.session_states()
            except LabCommandError as error:
                log.debug("vtysh failed while waiting for sessions: %s", error)
            if all(states.get(peer) == "Established" for peer in wanted):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                summary = ", ".join(f"{peer}={states.get(peer, 'unknown')}" for peer in sorted(wanted))
                raise TimeoutError(f"BGP sessions not Established within {timeout:.0f} s: {summary}")
            time.sleep(0.1)

    def clear_bgp(self, neighbor: str = "*") -> None:
        """Reset BGP sessions (`clear bgp *` by default)."""
        self.vtysh(f"clear bgp {neighbor}")
