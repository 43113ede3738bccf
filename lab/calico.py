"""The lab's Calico mode: per node Calico 3.29's recorded BIRD/BIRD6 configuration, ExaBGP on loopback, FRR as ToR."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.frr import FAMILIES, Family, FrrRouter
from lab.lab import (
    DEFAULT_NODES,
    DEFAULT_PREFIX,
    REPOSITORY,
    ROUTER_IPV4,
    ROUTER_IPV6,
    Lab,
)
from lab.netns import LabCommandError, ProcessRecord

CALICO_FILES = Path(__file__).resolve().parent / "files" / "calico-3.29"
CALICO_CONFIG = REPOSITORY / "examples" / "announcer-calico.yaml"
FRR_TOR_CONF = CALICO_FILES / "frr-tor.conf"
CALICO_RESOURCES = CALICO_FILES / "calico-resources.yaml"
BIRD_BIN: dict[Family, str] = {"ipv4": "/usr/sbin/bird", "ipv6": "/usr/sbin/bird6"}
BIRDC_BIN: dict[Family, str] = {"ipv4": "/usr/sbin/birdc", "ipv6": "/usr/sbin/birdc6"}
BIRD_NAME: dict[Family, str] = {"ipv4": "bird", "ipv6": "bird6"}
# The protocol names calico-node's templates give the sessions (calico-resources.yaml's BGPPeers).
EXABGP_PROTOCOL: dict[Family, str] = {"ipv4": "Global_127_0_0_1_port_1790", "ipv6": "Global___1_port_1790"}
TOR_PROTOCOL: dict[Family, str] = {"ipv4": "Node_192_0_2_1", "ipv6": "Node_2001_db8__1"}
# calico-resources.yaml's service ranges (BGPConfiguration serviceClusterIPs, serviceExternalIPs,
# serviceLoadBalancerIPs): the announcer's routes live in them, and nothing in them may reach a node's kernel.
SERVICE_RANGES = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "198.51.100.0/26", "198.51.100.64/26", "198.51.100.128/26",
        "2001:db8:96::/112", "2001:db8:e::/64", "2001:db8:1b::/64",
    )
)  # fmt: skip
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers=true"
DERIVED_NOTE = (
    "# DERIVED, NOT RECORDED: lab/calico.py removed the static service routes from calico-node's recorded rendering\n"
    f"# below, as calico-node v3.29.7 does for a node labelled {EXCLUDE_LABEL}\n"
    "# (client.go updateGlobalRoutes: reject CIDRs kept, static routes withdrawn; routes.go: no per-Service route).\n"
)


class BirdMissingError(RuntimeError):
    """Debian's BIRD 1.6 (bird, bird6, birdc, birdc6) is not installed."""


def bird_missing_reason() -> str | None:
    """Why BIRD 1.6 cannot run here, or None."""
    missing = [path for path in [*BIRD_BIN.values(), *BIRDC_BIN.values()] if not Path(path).exists()]
    if not missing:
        return None
    return f"BIRD 1.6 is not installed (missing {', '.join(missing)}): run 'apt-get install -y bird'"


def recorded_rendering(node: str) -> dict[str, str]:
    """calico-node's six recorded files for a node (krt_tunnel commented out for Debian's BIRD): {name: text}."""
    folder = CALICO_FILES / node
    if not folder.is_dir():
        raise ValueError(f"no recorded Calico rendering for {node!r} in {CALICO_FILES}")
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.cfg"))}


def _drop_block_lines(text: str, marker: str, line: re.Pattern[str], end: re.Pattern[str]) -> str:
    """Drop the lines matching `line` from the line after `marker` up to the first line matching `end`."""
    kept: list[str] = []
    inside = False
    for each in text.splitlines(keepends=True):
        if inside and end.match(each):
            inside = False
        if each.strip() == marker:
            inside = True
            continue
        if inside and line.match(each):
            continue
        kept.append(each)
    return "".join(kept)


def excluded_node_rendering(files: dict[str, str]) -> dict[str, str]:
    """The rendering calico-node writes for the same node labelled exclude-from-external-load-balancers.

    Calico keeps the reject CIDRs (calico_kernel_programming unchanged) and writes no static service route:
    neither the per-range blackhole aggregates nor the per-Service /32 and /128, in the static protocol
    (bird*_aggr.cfg) and in calico_export_to_bgp_peers (bird*_ipam.cfg). Everything else stays as recorded.
    """
    static_route = re.compile(r"\s*route \S+ blackhole;")
    static_export = re.compile(r"\s*if \( net ~ \S+ \) then \{ accept; \}")
    derived: dict[str, str] = {}
    for name, text in files.items():
        if name.endswith("_aggr.cfg"):
            derived[name] = DERIVED_NOTE + _drop_block_lines(text, "# Static routes.", static_route, re.compile(r"\}"))
        elif name.endswith("_ipam.cfg"):
            derived[name] = DERIVED_NOTE + _drop_block_lines(
                text, "# Export static routes.", static_export, re.compile(r"\s*$")
            )
        else:
            derived[name] = text
    return derived


def frr_tor_config(add_path: bool, neighbors: Sequence[str]) -> str:
    """frr-tor.conf, or with `neighbor X disable-addpath-rx` for every neighbour (no ADD-PATH receive)."""
    text = FRR_TOR_CONF.read_text(encoding="utf-8")
    if add_path:
        return text
    lines: list[str] = []
    for line in text.splitlines():
        lines.append(line)
        words = line.split()
        if len(words) == 3 and words[0] == "neighbor" and words[2] == "activate" and words[1] in neighbors:
            lines.append(f"  neighbor {words[1]} disable-addpath-rx")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KernelRoute:
    """One route of a node namespace's kernel tables (`ip -json route show table all`)."""

    table: str
    destination: str
    kind: str
    protocol: str

    def in_service_ranges(self) -> bool:
        """Whether the route's destination lies inside (or equals) one of the service ranges."""
        if self.destination == "default":
            return False
        try:
            network = ipaddress.ip_network(self.destination, strict=False)
        except ValueError:
            return False
        return any(network.version == r.version and network.subnet_of(r) for r in SERVICE_RANGES)  # type: ignore[arg-type]


def parse_kernel_routes(text: str, family: Family) -> list[KernelRoute]:
    """Routes from `ip -json [-6] route show table all` output; host routes written as an address get /32 or /128."""
    routes: list[KernelRoute] = []
    for entry in json.loads(text or "[]"):
        destination = str(entry.get("dst", ""))
        if destination and destination != "default" and "/" not in destination:
            destination += "/32" if family == "ipv4" else "/128"
        routes.append(
            KernelRoute(
                table=str(entry.get("table", "main")),
                destination=destination,
                kind=str(entry.get("type", "unicast")),
                protocol=str(entry.get("protocol", "")),
            )
        )
    return routes


class CalicoLab(Lab):
    """The lab with Calico's BIRD on every node: FRR (the ToR) peers with BIRD/BIRD6, which peer with ExaBGP.

    add_path=False gives FRR `disable-addpath-rx` on every neighbour; exclude_label=True runs every node with
    the rendering of a node labelled node.kubernetes.io/exclude-from-external-load-balancers=true.
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        nodes: Sequence[str] = DEFAULT_NODES,
        config_path: Path = CALICO_CONFIG,
        *,
        add_path: bool = True,
        exclude_label: bool = False,
        run_dir: Path | None = None,
        announcer_command: str | None = None,
        api_server: bool = True,
        seed_path: Path | None = None,
        exabgp_environment: dict[str, str] | None = None,
        kube: str = "stand-in",
        kube_nodes: bool = False,
    ) -> None:
        super().__init__(
            prefix,
            nodes,
            config_path,
            run_dir=run_dir,
            announcer_command=announcer_command,
            api_server=api_server,
            seed_path=seed_path,
            frr_config=FRR_TOR_CONF,
            exabgp_environment=exabgp_environment,
            kube=kube,
            kube_nodes=kube_nodes,
        )
        for name in nodes:
            recorded_rendering(name)  # fails early for a node without recorded files
        self.add_path = add_path
        self.exclude_label = exclude_label
        self._bird: dict[tuple[str, Family], ProcessRecord] = {}

    # Bringing it up

    def _preflight(self) -> None:
        reason = bird_missing_reason()
        if reason is not None:
            raise BirdMissingError(reason)
        super()._preflight()

    def build_network(self) -> None:
        """The lab's network, plus a default route per node and family to the ToR (as on a real node)."""
        super().build_network()
        for node in self.nodes.values():
            netns.ip("route", "add", "default", "via", ROUTER_IPV4, netns=node.namespace)
            netns.ip("-6", "route", "add", "default", "via", ROUTER_IPV6, netns=node.namespace)

    def start_frr(self) -> FrrRouter:
        """FRR with frr-tor.conf (or its disable-addpath-rx variant), written to the run directory."""
        path = self.run_dir / "frr-tor.conf"
        path.write_text(frr_tor_config(self.add_path, self.peers()), encoding="utf-8")
        self.frr_config = path
        return super().start_frr()

    def node_environment(self, name: str) -> dict[str, str]:
        """The node's environment without ROUTER_ID: bgp.router_id (not BIRD's id, the node address) applies."""
        environment = super().node_environment(name)
        environment.pop("ROUTER_ID", None)
        return environment

    def start_exabgp(self, name: str) -> ProcessRecord:
        """The node's ExaBGP (passive on loopback), then its BIRD and BIRD6 if they do not run yet."""
        record = super().start_exabgp(name)
        for family in FAMILIES:
            if self.bird_pid(name, family) is None:
                self.start_bird(name, family)
        return record

    def start_kube_nodes(self) -> None:
        """Real Kubernetes nodes (the product comes as the Calico overlay's DaemonSet), each with its BIRD and BIRD6,
        as calico-node runs them beside the pods."""
        super().start_kube_nodes()
        for name in self.nodes:
            for family in FAMILIES:
                self.start_bird(name, family)

    # BIRD per node and family

    def bird_directory(self, name: str) -> Path:
        """Where the node's six BIRD files, control sockets and logs live."""
        return self.node(name).directory / "calico"

    def write_bird_config(self, name: str) -> Path:
        """Copy the node's recorded rendering (or its derived labelled variant) into the node's folder."""
        files = recorded_rendering(name)
        if self.exclude_label:
            files = excluded_node_rendering(files)
        folder = self.bird_directory(name)
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, text in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
        return folder

    def bird_socket(self, name: str, family: Family) -> Path:
        return self.bird_directory(name) / f"{BIRD_NAME[family]}.ctl"

    def bird_log(self, name: str, family: Family) -> Path:
        return self.bird_directory(name) / f"{BIRD_NAME[family]}.log"

    def start_bird(self, name: str, family: Family) -> ProcessRecord:
        """Start BIRD (ipv4) or BIRD6 (ipv6) as calico-node does: `bird -R -s SOCK -d -c DIR/bird.cfg`."""
        state = self._require_state()
        folder = self.write_bird_config(name)
        self.stop_bird(name, family)
        argv = [
            BIRD_BIN[family], "-R", "-s", str(self.bird_socket(name, family)), "-d",
            "-c", str(folder / f"{BIRD_NAME[family]}.cfg"),
        ]  # fmt: skip
        record = netns.start_process(
            f"{BIRD_NAME[family]}-{name}",
            argv,
            netns=self.node(name).namespace,
            log_path=self.bird_log(name, family),
            cwd=folder,
        )
        self._bird[(name, family)] = record
        state.add_process(record)
        deadline = time.monotonic() + 10.0
        while not self.bird_socket(name, family).exists():
            if not netns.is_alive(record.pid):
                raise RuntimeError(f"{BIRD_NAME[family]} on {name} exited at start; see {self.bird_log(name, family)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{BIRD_NAME[family]} on {name} opened no control socket within 10 s")
            time.sleep(0.05)
        return record

    def bird_pid(self, name: str, family: Family) -> int | None:
        """PID of the node's BIRD of one family, None when it does not run."""
        record = self._bird.get((name, family))
        return record.pid if record is not None and netns.is_same_process(record) else None

    def signal_bird(self, name: str, family: Family, signum: int) -> int:
        """Send signum to the node's BIRD of one family and wait (bounded) for its exit; return its PID."""
        record = self._bird.get((name, family))
        if record is None or not netns.signal_process(record, signum):
            raise RuntimeError(f"{BIRD_NAME[family]} does not run on {name}")
        if not netns.wait_for_exit(record.pid, 10.0):
            raise TimeoutError(f"{BIRD_NAME[family]} on {name} (PID {record.pid}) did not exit after {signum}")
        self.bird_socket(name, family).unlink(missing_ok=True)
        return record.pid

    def stop_bird(self, name: str, family: Family) -> None:
        """Stop the node's BIRD of one family by PID (SIGTERM, then SIGKILL), if it runs."""
        record = self._bird.pop((name, family), None)
        if record is None:
            return
        netns.stop_process(record)
        if self.state is not None:
            self.state.remove_process(record)
        self.bird_socket(name, family).unlink(missing_ok=True)

    def birdc(self, name: str, family: Family, *words: str) -> str:
        """Run a birdc (birdc6) command against the node's BIRD of one family; return its output."""
        argv = [BIRDC_BIN[family], "-s", str(self.bird_socket(name, family)), *words]
        return netns.run(argv, netns=self.node(name).namespace, timeout=15.0).stdout

    def bird_protocol_states(self, name: str, family: Family) -> dict[str, str]:
        """{protocol: info} of the BGP protocols of the node's BIRD (`show protocols`), e.g. 'Established'."""
        states: dict[str, str] = {}
        try:
            output = self.birdc(name, family, "show", "protocols")
        except (LabCommandError, OSError):
            return states
        for line in output.splitlines():
            words = line.split()
            if len(words) >= 6 and words[1] == "BGP":
                states[words[0]] = words[-1]
        return states

    def bird_sessions_established(self) -> bool:
        """Whether every node's BIRD and BIRD6 has both its ExaBGP and its ToR session Established."""
        for name in self.nodes:
            for family in FAMILIES:
                states = self.bird_protocol_states(name, family)
                if states.get(EXABGP_PROTOCOL[family]) != "Established":
                    return False
                if states.get(TOR_PROTOCOL[family]) != "Established":
                    return False
        return True

    def wait_established(self, timeout: float = 60.0) -> float:
        """Wait until FRR's sessions with every BIRD/BIRD6 and every BIRD's session with ExaBGP are up."""
        started = time.monotonic()
        self.frr().wait_established(self.peers(), timeout)
        try:
            self.wait_for(lambda lab: isinstance(lab, CalicoLab) and lab.bird_sessions_established(), timeout)
        except TimeoutError:
            states = {
                f"{name}/{BIRD_NAME[family]}": self.bird_protocol_states(name, family)
                for name in self.nodes
                for family in FAMILIES
            }
            raise TimeoutError(f"BIRD sessions not Established within {timeout:.0f} s: {states}") from None
        return time.monotonic() - started

    # Checks

    def kernel_routes(self, name: str, family: Family) -> list[KernelRoute]:
        """Every route of every table in the node namespace's kernel (`ip -json [-6] route show table all`)."""
        arguments = ["-json", "-6" if family == "ipv6" else "-4", "route", "show", "table", "all"]
        return parse_kernel_routes(netns.ip(*arguments, netns=self.node(name).namespace), family)

    # Tearing it down

    def down(self, release_lock: bool = True) -> list[str]:
        """Stop every BIRD, then the rest of the lab."""
        notes: list[str] = []
        for name, family in list(self._bird):
            try:
                self.stop_bird(name, family)
            except Exception as error:  # keep tearing down whatever fails
                notes.append(f"stopping {BIRD_NAME[family]} on {name} failed: {error}")
        return notes + super().down(release_lock=release_lock)
