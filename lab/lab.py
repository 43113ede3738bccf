"""The lab: FRR and one ExaBGP per node in network namespaces on one bridge, joined by the root namespace."""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import yaml

from lab import netns
from lab.frr import FAMILIES, FRR_CONF, BgpPath, Family, FrrMissingError, FrrRouter, frr_missing_reason
from lab.netns import STATE_DIR, LabState, ProcessRecord

log = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPOSITORY / "examples" / "announcer.yaml"
ENTRYPOINT = REPOSITORY / "deploy" / "entrypoint.sh"  # the image's: renders exabgp.conf, runs ExaBGP, stops in order
SAMPLES = Path(__file__).resolve().parent / "files" / "samples.yaml"

DEFAULT_PREFIX = "sa-"
TEST_PREFIX = "st-"  # the end-to-end tests' labs: a test run never tears down a running demo
DEFAULT_NODES = ("node-a", "node-b")
# The fixed address plan, shared with docker-compose.yml and frr.conf.
ROUTER_IPV4 = "192.0.2.1"
ROUTER_IPV6 = "2001:db8::1"
# The second top-of-rack router of the ToR-per-rack topology (rack_tors): node-b's rack.
ROUTER2_IPV4 = "192.0.2.3"
ROUTER2_IPV6 = "2001:db8::3"
NODE_IPV4 = ("192.0.2.11", "192.0.2.12")
NODE_IPV6 = ("2001:db8::11", "2001:db8::12")
# The root namespace joins the lab over HOST_NETWORK only, never 192.0.2.0/24 (this machine's own uplink may sit
# there): the host end of the lab's veth holds API_ADDRESS, and each node one more address on its LAN interface.
# Not 203.0.113.0/26: the Docker lab takes that.
HOST_NETWORK = "203.0.113.240/28"
API_ADDRESS = "203.0.113.254"
NODE_HOST_IPV4 = ("203.0.113.241", "203.0.113.242")
API_PORT = 6443
API_URL = f"http://{API_ADDRESS}:{API_PORT}"
KUBE_KINDS = ("stand-in", "real")
SEGMENT_IPV4_LENGTH = 24
SEGMENT_IPV6_LENGTH = 64
LAN_INTERFACE = "lan0"
MAX_INTERFACE_NAME = 15


def kubeconfig_text(server: str = API_URL) -> str:
    """A kubeconfig for the stand-in API server: plain HTTP, no credentials."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "current-context": "lab",
    }
    return yaml.safe_dump(document, sort_keys=False)


def load_objects(path: Path) -> list[dict[str, Any]]:
    """The Kubernetes objects of a multi-document YAML file (List kinds flattened)."""
    objects: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not isinstance(document, dict):
            continue
        if str(document.get("kind", "")).endswith("List"):
            objects += [item for item in document.get("items", []) if isinstance(item, dict)]
        else:
            objects.append(document)
    return objects


@dataclass(frozen=True)
class LabNode:
    """One node of the lab: its namespace, addresses and files."""

    name: str
    namespace: str
    ipv4: str
    ipv6: str
    directory: Path

    @property
    def router_id(self) -> str:
        return self.ipv4

    @property
    def exabgp_log(self) -> Path:
        return self.directory / "exabgp.log"

    def address(self, family: Family) -> str:
        return self.ipv4 if family == "ipv4" else self.ipv6


@dataclass(frozen=True)
class Tor:
    """A top-of-rack FRR router: its name (namespace suffix), addresses, frr.conf and the nodes that peer with it."""

    name: str
    ipv4: str
    ipv6: str
    frr_config: Path
    nodes: tuple[str, ...]


def rack_tors() -> tuple[Tor, ...]:
    """ToR per rack: node-a peers with 'router' (AS 64512, rack1), node-b with 'router2' (AS 64514, rack2)."""
    files = Path(__file__).resolve().parent / "files"
    return (
        Tor("router", ROUTER_IPV4, ROUTER_IPV6, files / "frr-rack1.conf", ("node-a",)),
        Tor("router2", ROUTER2_IPV4, ROUTER2_IPV6, files / "frr-rack2.conf", ("node-b",)),
    )


def node_names_by_address(nodes: Sequence[str] = DEFAULT_NODES) -> dict[str, str]:
    """Node name per node address (both families) under the fixed address plan."""
    names: dict[str, str] = {}
    for index, name in enumerate(nodes):
        names[NODE_IPV4[index]] = name
        names[NODE_IPV6[index]] = name
    return names


def rib_by_peer(table: dict[str, list[BgpPath]], valid_only: bool = True) -> dict[str, dict[str, list[str]]]:
    """{neighbour: {prefix: [next-hops]}} from a parsed FRR BGP table."""
    by_peer: dict[str, dict[str, list[str]]] = {}
    for prefix, paths in table.items():
        for path in paths:
            if valid_only and not path.valid:
                continue
            by_peer.setdefault(path.peer, {})[prefix] = sorted(path.next_hops)
    return by_peer


def format_rib_tables(router: FrrRouter, names: dict[str, str]) -> str:
    """A readable table per FRR neighbour and family: prefix, next-hop (node), best/multipath flags."""
    lines: list[str] = []
    states = router.session_states()
    for family in FAMILIES:
        table = router.bgp_table(family)
        peers = sorted(
            {peer for peer in states if (":" in peer) == (family == "ipv6")}
            | {path.peer for paths in table.values() for path in paths}
        )
        for peer in peers:
            node = names.get(peer, "?")
            rows = sorted(
                ((prefix, path) for prefix, paths in table.items() for path in paths if path.peer == peer),
                key=lambda row: ipaddress.ip_network(row[0]),
            )
            lines.append(f"{family} unicast from {peer} ({node}), session {states.get(peer, 'unknown')}:")
            if not rows:
                lines.append("    (no routes)")
            for prefix, path in rows:
                hops = ", ".join(f"{hop} ({names.get(hop, '?')})" for hop in path.next_hops) or "-"
                flags = ("*" if path.valid else " ") + (">" if path.best else "=" if path.multipath else " ")
                lines.append(f"  {flags} {prefix:<28} via {hops}")
            lines.append("")
        # FRR marks the best path "bestpath" only; its equal-cost siblings carry "multipath".
        ecmp = [prefix for prefix, paths in table.items() if any(path.multipath for path in paths)]
        lines.append(f"{family} unicast: {len(table)} prefixes, {len(ecmp)} with ECMP across nodes")
        lines.append("")
    lines.append("flags: * valid, > best, = multipath (ECMP)")
    return "\n".join(lines)


def project_tool(name: str) -> Path:
    """A console script of the project's environment (sys.executable's directory), never a name looked up on PATH."""
    return Path(sys.executable).parent / name


def _exabgp_argv(config_path: Path) -> list[str]:
    script = project_tool("exabgp")
    if script.exists():
        return [str(script), str(config_path)]
    return [sys.executable, "-c", "import sys; from exabgp.application.main import main; sys.exit(main())",
            str(config_path)]  # fmt: skip


class Lab:
    """FRR (AS 64512) in a router namespace and ExaBGP (AS 64513) per node namespace, all on one bridge.

    Namespaces: PREFIXlan (the bridge), PREFIXrouter, PREFIX<node>; the root namespace joins the
    bridge through the veth PREFIXhost as 203.0.113.254/28, and each node holds one more address in
    203.0.113.240/28, so the root namespace has only that connected route (nothing in 192.0.2.0/24,
    where the machine's own uplink may sit).
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        nodes: Sequence[str] = DEFAULT_NODES,
        config_path: Path = EXAMPLE_CONFIG,
        *,
        run_dir: Path | None = None,
        announcer_command: str | None = None,
        api_server: bool = False,
        seed_path: Path | None = None,
        frr_config: Path = FRR_CONF,
        state_dir: Path = STATE_DIR,
        exabgp_environment: dict[str, str] | None = None,
        tors: Sequence[Tor] | None = None,
        kube: str = "stand-in",
        kube_nodes: bool = False,
    ) -> None:
        if kube not in KUBE_KINDS:
            raise ValueError(f"kube {kube!r}: one of {', '.join(KUBE_KINDS)}")
        if kube_nodes and (kube != "real" or not api_server):
            raise ValueError("kube_nodes: real Kubernetes nodes need the real API server (kube='real', api_server)")
        if kube_nodes and len(nodes) != 1:
            raise ValueError("kube_nodes: one real node per machine (kubelets would share the kubepods cgroups)")
        if not prefix or not all(character.isalnum() or character == "-" for character in prefix):
            raise ValueError(f"prefix {prefix!r}: use letters, digits and '-'")
        if not 1 <= len(nodes) <= len(NODE_IPV4):
            raise ValueError(f"nodes: between 1 and {len(NODE_IPV4)} (frr.conf peers with {', '.join(NODE_IPV4)})")
        self.tors = tuple(tors) if tors else (Tor("router", ROUTER_IPV4, ROUTER_IPV6, frr_config, tuple(nodes)),)
        longest = max([*nodes, *(tor.name for tor in self.tors), "host", "lan"], key=len)
        if len(prefix + longest) > MAX_INTERFACE_NAME:
            raise ValueError(f"prefix {prefix!r} with {longest!r} exceeds {MAX_INTERFACE_NAME} characters")
        self.prefix = prefix
        self.config_path = config_path.resolve()
        self.announcer_command = announcer_command
        self.api_server = api_server
        self.kube = kube  # which API server: the stand-in (lab/fakeapi) or the real etcd and kube-apiserver
        # Each node a real Kubernetes node (lab/node.py: containerd, kubelet, kube-proxy) instead of an ExaBGP the
        # lab starts: the product then runs as its DaemonSet's pods, installed by the caller.
        self.kube_nodes = kube_nodes
        self.kube_node: dict[str, Any] = {}
        self.seed_path = seed_path
        self.frr_config = frr_config
        self.exabgp_environment = dict(exabgp_environment or {})
        self._run_dir = run_dir
        self._state_dir = state_dir
        self.run_dir = run_dir or Path(tempfile.gettempdir()) / f"announcer-lab-{prefix.rstrip('-')}-unstarted"
        self.lan_namespace = f"{prefix}lan"
        self.router_namespace = f"{prefix}{self.tors[0].name}"
        self.host_link = f"{prefix}host"
        self.nodes = {
            name: LabNode(name, f"{prefix}{name}", NODE_IPV4[index], NODE_IPV6[index], self.run_dir / name)
            for index, name in enumerate(nodes)
        }
        self.state: LabState | None = None
        self._address_lock: TextIO | None = None
        self.router: FrrRouter | None = None  # the first ToR's (the only one unless tors says otherwise)
        self.routers: dict[str, FrrRouter] = {}
        self.api: Any = None
        self.timings: dict[str, float] = {}
        self._exabgp: dict[str, ProcessRecord] = {}
        self._atexit_registered = False

    # Context manager

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()

    # Bringing it up

    def up(self, wait: bool = True, timeout: float = 60.0) -> Lab:
        """Build the network, start the API server (if asked), FRR and every ExaBGP; wait for the sessions."""
        started = time.monotonic()
        self._take_address_lock()  # first: a lab another run has up (same prefix) is waited for, not refused
        try:
            self._preflight()
        except BaseException:
            self._release_address_lock()
            raise
        self._create_run_dir()
        self.state = LabState.for_prefix(self.prefix, self._state_dir)
        self.state.run_dir = str(self.run_dir)
        self.state.save()
        if not self._atexit_registered:
            atexit.register(self._down_at_exit)
            self._atexit_registered = True
        try:
            self.build_network()
            self.timings["network"] = time.monotonic() - started
            if self.api_server:
                self.start_api_server()
            self.start_frr()
            self.timings["frr"] = time.monotonic() - started
            if self.kube_nodes:
                self.start_kube_nodes()
            else:
                for name in self.nodes:
                    self.start_exabgp(name)
            if wait and not self.kube_nodes:
                self.wait_established(timeout)
                self.timings["established"] = time.monotonic() - started
        except BaseException:
            log.error("lab did not come up; tearing down (logs kept in %s)", self.run_dir)
            self.down()
            raise
        log.info("lab %s up in %.2f s (run directory %s)", self.prefix, time.monotonic() - started, self.run_dir)
        return self

    def _take_address_lock(self) -> None:
        """Every lab uses the same addresses (203.0.113.240/28 in the root namespace): one lab at a time per machine.

        A second lab (a benchmark beside a test run) waits here; the kernel drops the lock if its holder dies.
        """
        if self._address_lock is not None:
            return
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lock = (self._state_dir / "addresses.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another lab holds the lab addresses; waiting for it to go down")
            fcntl.flock(lock, fcntl.LOCK_EX)
        self._address_lock = lock

    def release_lock(self) -> None:
        """Release the machine-wide lab lock kept by down(release_lock=False)."""
        self._release_address_lock()

    def _release_address_lock(self) -> None:
        if self._address_lock is not None:
            fcntl.flock(self._address_lock, fcntl.LOCK_UN)
            self._address_lock.close()
            self._address_lock = None

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("the lab needs root (network namespaces, veths, FRR)")
        reason = frr_missing_reason()
        if reason is not None:
            raise FrrMissingError(reason)
        leftovers = [name for name in netns.list_namespaces() if name.startswith(self.prefix)]
        leftovers += netns.links_with_prefix(self.prefix)
        if leftovers:
            raise RuntimeError(
                f"a lab with prefix {self.prefix!r} already exists ({', '.join(leftovers)}): "
                f"run 'python -m lab down --prefix {self.prefix}' first"
            )
        self._check_api_address_free()

    def _check_api_address_free(self) -> None:
        """Nothing in the root namespace may already use the lab's host network (another lab, a container network)."""
        holders = netns.root_uses_of_network(HOST_NETWORK, self.host_link)
        if holders:
            raise RuntimeError(f"{HOST_NETWORK} is already in use in the root namespace: {'; '.join(holders)}")

    def _create_run_dir(self) -> None:
        if self._run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"announcer-lab-{self.prefix.rstrip('-')}-"))
            self.nodes = {
                name: LabNode(node.name, node.namespace, node.ipv4, node.ipv6, self.run_dir / name)
                for name, node in self.nodes.items()
            }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)  # FRR's daemons run as user frr and must enter it

    def _require_state(self) -> LabState:
        if self.state is None:
            raise RuntimeError("the lab is not up (call up() first)")
        return self.state

    def build_network(self) -> None:
        """Namespaces, the bridge, one veth per member, addresses; the root namespace as 203.0.113.254/28."""
        state = self._require_state()
        bridge = "br0"
        tor_namespaces = [f"{self.prefix}{tor.name}" for tor in self.tors]
        for namespace in [self.lan_namespace, *tor_namespaces, *(n.namespace for n in self.nodes.values())]:
            netns.create_namespace(namespace)
            state.add_namespace(namespace)
        netns.add_bridge(self.lan_namespace, bridge)
        members = [(f"{self.prefix}{tor.name}", tor.name, tor.ipv4, tor.ipv6) for tor in self.tors]
        members += [(node.namespace, node.name, node.ipv4, node.ipv6) for node in self.nodes.values()]
        for namespace, port, ipv4, ipv6 in members:
            netns.add_veth_pair(LAN_INTERFACE, namespace, port, self.lan_namespace)
            netns.attach_to_bridge(self.lan_namespace, port, bridge)
            netns.add_address(namespace, LAN_INTERFACE, f"{ipv4}/{SEGMENT_IPV4_LENGTH}")
            netns.add_address(namespace, LAN_INTERFACE, f"{ipv6}/{SEGMENT_IPV6_LENGTH}")
            netns.link_up(namespace, LAN_INTERFACE)
        self._place_api_address(bridge)

    def _place_api_address(self, bridge: str) -> None:
        """The root namespace joins as 203.0.113.254/28 and each node gets an address in 203.0.113.240/28 on its
        LAN interface: the root namespace has that connected route only, nothing inside 192.0.2.0/24 (the
        machine's own uplink sits there) and no route to the router."""
        state = self._require_state()
        netns.add_veth_pair(self.host_link, None, "host", self.lan_namespace)
        state.add_root_link(self.host_link)
        netns.attach_to_bridge(self.lan_namespace, "host", bridge)
        length = ipaddress.ip_network(HOST_NETWORK).prefixlen
        netns.add_address(None, self.host_link, f"{API_ADDRESS}/{length}")
        netns.link_up(None, self.host_link)
        for index, node in enumerate(self.nodes.values()):
            netns.add_address(node.namespace, LAN_INTERFACE, f"{NODE_HOST_IPV4[index]}/{length}")

    def start_api_server(self) -> Any:
        """Start the API server on 203.0.113.254:6443, seeded if asked: the stand-in in this process, or the real
        etcd and kube-apiserver (lab/controlplane.py) as processes the lab's state records."""
        if self.kube == "real":
            return self._start_control_plane()
        from lab.fakeapi import FakeApiServer

        server = FakeApiServer(host=API_ADDRESS, port=API_PORT).start()
        self.api = server
        if self.seed_path is not None:
            for document in load_objects(self.seed_path):
                server.apply(document)
        log.info("stand-in API server on %s", server.url)
        return server

    def _start_control_plane(self) -> Any:
        from lab.controlplane import ControlPlane, seed

        state = self._require_state()
        flags: tuple[str, ...] = ()
        identities: tuple[Any, ...] = ()
        if self.kube_nodes:
            from lab.node import APISERVER_FLAGS, node_identities

            flags, identities = APISERVER_FLAGS, node_identities(tuple(self.nodes))
        plane = ControlPlane(
            self.run_dir / "controlplane",
            bind_address=API_ADDRESS,
            port=API_PORT,
            apiserver_flags=flags,
            identities=identities,
            on_start=state.add_process,
            on_stop=state.remove_process,
        )
        self.api = plane
        plane.start(progress=log.info)
        if self.seed_path is not None:
            seed(plane, load_objects(self.seed_path))
        log.info("kube-apiserver %s ready in %.2f s", plane.url, plane.ready_seconds or 0.0)
        return plane

    def start_kube_nodes(self) -> None:
        """Every node as a real Kubernetes node (lab/node.py), each Ready on return."""
        from lab.node import KubeNode

        state = self._require_state()
        for name, node in self.nodes.items():
            tor = next(tor for tor in self.tors if name in tor.nodes)
            kube_node = KubeNode(
                self.api, name, node.namespace, (node.ipv4, node.ipv6), node.directory / "kube",
                gateways=(tor.ipv4, tor.ipv6), on_start=state.add_process, on_stop=state.remove_process,
            )  # fmt: skip
            self.kube_node[name] = kube_node
            kube_node.start(progress=log.info)
        self.timings["kube_nodes"] = max(n.timings.get("ready", 0.0) for n in self.kube_node.values())

    def install_product(self, kustomization: Path = REPOSITORY / "deploy" / "base", timeout: float = 120.0) -> None:
        """kubectl apply -k (deploy/base by default) onto the real nodes, as a user installs the product; returns once
        FRR's sessions with every node are up (the DaemonSet's pods run ExaBGP)."""
        started = time.monotonic()
        self.api.kubectl("apply", "-k", str(kustomization))
        self.wait_established(timeout)
        self.timings["established"] = time.monotonic() - started

    def kubeconfig(self) -> str:
        """The kubeconfig every node's announcer gets: the stand-in's (plain HTTP), or the real server's with the
        token of the ServiceAccount deploy/base/rbac.yaml binds."""
        if self.kube == "real":
            from lab.controlplane import ANNOUNCER

            return str(self.api.kubeconfig_text(ANNOUNCER))
        return kubeconfig_text()

    def start_frr(self) -> FrrRouter:
        """Start zebra and bgpd in each ToR's namespace (runtime folder RUN_DIR/frr, RUN_DIR/frr-NAME for more)."""
        state = self._require_state()
        for index, tor in enumerate(self.tors):
            router = FrrRouter(
                f"{self.prefix}{tor.name}",
                self.run_dir / ("frr" if index == 0 else f"frr-{tor.name}"),
                self.frr_config if index == 0 and len(self.tors) == 1 else tor.frr_config,
                on_start=state.add_process,
                on_stop=state.remove_process,
            )
            self.routers[tor.name] = router
            if index == 0:
                self.router = router
            router.start()
        return self.frr()

    # ExaBGP per node

    def node(self, name: str) -> LabNode:
        """A node by name."""
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this lab (nodes: {', '.join(self.nodes)})") from None

    def _node_config_path(self, node: LabNode) -> Path:
        if self.announcer_command is None:
            return self.config_path
        document = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        document.setdefault("speaker", {})["announcer_command"] = self.announcer_command
        path = node.directory / "announcer.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    def node_environment(self, name: str) -> dict[str, str]:
        """The environment ExaBGP (and so the announcer it runs) gets on a node."""
        node = self.node(name)
        base = {key: value for key, value in os.environ.items() if not key.lower().startswith("exabgp")}
        # ExaBGP resolves a relative 'run' program against /etc/exabgp, the config folder and then every
        # PATH entry, keeping the LAST match: this interpreter's bin folder goes last so it wins.
        tools = str(project_tool("announcer").parent)
        path_entries = [entry for entry in base.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") if entry]
        path_entries = [entry for entry in path_entries if entry != tools]
        base.update(
            {
                "NODE_NAME": node.name,
                "ROUTER_ID": node.router_id,
                "KUBECONFIG": str(node.directory / "kubeconfig"),
                "PATH": ":".join([*path_entries, tools]),
                "PYTHONUNBUFFERED": "1",
            }
        )
        rendered = subprocess.run(
            [sys.executable, "-m", "announcer", "exabgp-env", "--config", str(self._node_config_path(node))],
            capture_output=True, text=True, check=True, env=base, timeout=60,
        )  # fmt: skip
        for line in rendered.stdout.splitlines():
            key, _, value = line.partition("=")
            if key:
                base[key] = value.strip("'")
        base["exabgp_daemon_user"] = "root"
        base["exabgp_daemon_drop"] = "false"
        base.update({key.replace(".", "_"): value for key, value in self.exabgp_environment.items()})
        return base

    def prepare_node(self, name: str) -> Path:
        """Write the node's kubeconfig, env and rendered exabgp.conf; return the exabgp.conf path."""
        node = self.node(name)
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "kubeconfig").write_text(self.kubeconfig(), encoding="utf-8")
        environment = self.node_environment(name)
        config_path = self._node_config_path(node)
        rendered = subprocess.run(
            [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(config_path)],
            capture_output=True, text=True, env=environment, timeout=60, check=False,
        )  # fmt: skip
        if rendered.returncode != 0:
            raise RuntimeError(f"announcer exabgp-conf failed for {name}: {rendered.stderr.strip()}")
        conf = node.directory / "exabgp.conf"
        conf.write_text(rendered.stdout, encoding="utf-8")
        wanted = ("NODE_NAME", "ROUTER_ID", "KUBECONFIG", "PATH")
        lines = [f"{key}={value}" for key, value in sorted(environment.items()) if key in wanted or "exabgp" in key]
        (node.directory / "env").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def start_exabgp(self, name: str) -> ProcessRecord:
        """Render the node's files and start its ExaBGP (as root) in the node namespace."""
        return self._launch(name, entrypoint=False, environment=None)

    def start_entrypoint(self, name: str, environment: Mapping[str, str] | None = None) -> ProcessRecord:
        """Start the node's ExaBGP through the image's deploy/entrypoint.sh, as the pod does: it renders its own
        exabgp.conf into RUN_DIR/NODE/run and, at SIGTERM, stops the announcer before ExaBGP. The recorded process
        (exabgp_pid, signal_exabgp, stop_exabgp) is that shell; `environment` is added to the node's."""
        return self._launch(name, entrypoint=True, environment=environment)

    def _launch(self, name: str, *, entrypoint: bool, environment: Mapping[str, str] | None) -> ProcessRecord:
        state = self._require_state()
        node = self.node(name)
        previous = self._exabgp.pop(name, None)
        if previous is not None:
            if netns.is_same_process(previous):
                self._exabgp[name] = previous
                raise RuntimeError(f"ExaBGP already runs on {name} (PID {previous.pid})")
            netns.stop_process(previous)  # reaps it and kills a leftover API process
            state.remove_process(previous)
        conf = self.prepare_node(name)
        env, argv = {**self.node_environment(name), **(environment or {})}, _exabgp_argv(conf)
        if entrypoint:
            env["ANNOUNCER_CONFIG"] = str(self._node_config_path(node))
            env["ANNOUNCER_RUN_DIR"] = str(node.directory / "run")
            argv = ["/bin/sh", str(ENTRYPOINT)]
        record = netns.start_process(
            f"exabgp-{name}", argv, netns=node.namespace, log_path=node.exabgp_log, env=env, cwd=node.directory
        )
        self._exabgp[name] = record
        state.add_process(record)
        return record

    def exabgp_pid(self, name: str) -> int | None:
        """PID of the node's ExaBGP, None when it is not running."""
        record = self._exabgp.get(name)
        return record.pid if record is not None and netns.is_same_process(record) else None

    def announcer_pid(self, name: str, timeout: float = 0.0, other_than: int | None = None) -> int | None:
        """PID of the API process ExaBGP runs on the node (its child), waiting up to timeout for one.

        other_than skips a PID (the one just killed, until ExaBGP has reaped it and respawned).
        """
        deadline = time.monotonic() + timeout
        while True:
            exabgp = self.exabgp_pid(name)
            children = [pid for pid in netns.children_of(exabgp) if netns.is_alive(pid)] if exabgp else []
            children = [pid for pid in children if pid != other_than]
            if children:
                return children[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def kill_announcer(self, name: str, signum: int = signal.SIGKILL) -> int:
        """Send signum to the node's API process (found as ExaBGP's child); return its PID.

        With SIGKILL (the default) it also waits (bounded) until that process has died.
        """
        pid = self.announcer_pid(name, timeout=5.0)
        if pid is None:
            raise RuntimeError(f"no API process under ExaBGP on {name}")
        os.kill(pid, signum)
        if signum == signal.SIGKILL:
            netns.wait_for_exit(pid, 5.0)
        return pid

    def run_in_node(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the node's namespace with the node's environment (checked)."""
        return netns.run(argv, netns=self.node(name).namespace, timeout=timeout, env=self.node_environment(name))

    def signal_exabgp(self, name: str, signum: int = signal.SIGTERM) -> int:
        """Send signum (SIGTERM by default) to the node's ExaBGP without waiting; return its PID."""
        record = self._exabgp.get(name)
        if record is None or not netns.signal_process(record, signum):
            raise RuntimeError(f"ExaBGP does not run on {name}")
        return record.pid

    def wait_exabgp_exit(self, name: str, timeout: float = 10.0) -> bool:
        """Wait (bounded) until the node's ExaBGP has exited; True when it has."""
        record = self._exabgp.get(name)
        return record is None or netns.wait_for_exit(record.pid, timeout)

    def stop_exabgp(self, name: str, timeout: float = 10.0) -> None:
        """Stop the node's ExaBGP by PID (SIGTERM, then SIGKILL after timeout), and its API process."""
        record = self._exabgp.pop(name, None)
        if record is None:
            return
        netns.stop_process(record, timeout=timeout)
        if self.state is not None:
            self.state.remove_process(record)

    def restart_exabgp(self, name: str) -> ProcessRecord:
        """Stop then start the node's ExaBGP."""
        self.stop_exabgp(name)
        return self.start_exabgp(name)

    # FRR

    def frr(self, tor: str | None = None) -> FrrRouter:
        """The running router (the first ToR's, or the named one's)."""
        router = self.router if tor is None else self.routers.get(tor)
        if router is None:
            raise RuntimeError("FRR is not running (call up() first)")
        return router

    def _tor(self, name: str | None) -> Tor:
        return self.tors[0] if name is None else next(tor for tor in self.tors if tor.name == name)

    def peers(self, family: Family | None = None, tor: str | None = None) -> list[str]:
        """The node addresses a ToR (the first unless named) peers with (one family or both)."""
        families = FAMILIES if family is None else (family,)
        names = self._tor(tor).nodes
        return [node.address(each) for node in self.nodes.values() if node.name in names for each in families]

    def sessions(self) -> dict[str, str]:
        """FRR's BGP state per node address."""
        states = self.frr().session_states()
        return {peer: states.get(peer, "unknown") for peer in self.peers()}

    def wait_established(self, timeout: float = 60.0) -> float:
        """Wait until every session (IPv4 and IPv6 per node, on every ToR) is Established; return the seconds."""
        started = time.monotonic()
        for tor in self.tors:
            self.frr(tor.name).wait_established(self.peers(tor=tor.name), timeout)
        return time.monotonic() - started

    def clear_bgp(self, neighbor: str = "*") -> None:
        """`clear bgp *` (or one neighbour) on FRR."""
        self.frr().clear_bgp(neighbor)

    def rib(self, family: Family, tor: str | None = None) -> dict[str, dict[str, list[str]]]:
        """FRR's valid BGP routes of one family per neighbour: {neighbour: {prefix: [next-hops]}} (first ToR's)."""
        return rib_by_peer(self.frr(tor).bgp_table(family))

    def routes(self, family: Family) -> dict[str, list[str]]:
        """FRR's valid routes of one family: {prefix: sorted next-hops over every neighbour}."""
        merged: dict[str, set[str]] = {}
        for routes in self.rib(family).values():
            for prefix, hops in routes.items():
                merged.setdefault(prefix, set()).update(hops)
        return {prefix: sorted(hops) for prefix, hops in sorted(merged.items())}

    def received_routes(self, name: str, family: Family) -> dict[str, list[str]]:
        """What the node sent FRR on its session of one family: {prefix: [next-hops]}."""
        table = self.frr().received_routes(self.node(name).address(family), family)
        return {prefix: sorted({hop for path in paths for hop in path.next_hops}) for prefix, paths in table.items()}

    def wait_rib_stable(self, quiet: float = 3.0, timeout: float = 60.0) -> bool:
        """Wait until FRR's routes (both families) stop changing for quiet seconds; False at timeout."""
        deadline = time.monotonic() + timeout
        last: object = None
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            snapshot = (self.rib("ipv4"), self.rib("ipv6"))
            if snapshot != last:
                last, last_change = snapshot, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return True
            time.sleep(0.25)
        return False

    def wait_for(self, predicate: Callable[[Lab], bool], timeout: float = 30.0, interval: float = 0.2) -> float:
        """Wait until predicate(lab) holds; return seconds waited, raise TimeoutError at timeout."""
        started = time.monotonic()
        while not predicate(self):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"condition not met within {timeout:.0f} s")
            time.sleep(interval)
        return time.monotonic() - started

    def rib_table(self) -> str:
        """The readable per-neighbour table of FRR's routes."""
        return format_rib_tables(self.frr(), node_names_by_address(list(self.nodes)))

    # Tearing it down

    def down(self, release_lock: bool = True) -> list[str]:
        """Stop ExaBGP, FRR and the API server by PID, delete the namespaces and root link; return notes.

        release_lock=False keeps the machine-wide lab lock (release_lock() later), so no other lab comes up
        while the caller checks what is left.
        """
        started = time.monotonic()
        notes: list[str] = []
        for name in list(self._exabgp):
            try:
                self.stop_exabgp(name, timeout=5.0)
            except Exception as error:  # keep tearing down whatever fails
                notes.append(f"stopping ExaBGP on {name} failed: {error}")
        for name, kube_node in list(self.kube_node.items()):
            try:
                kube_node.stop()
            except Exception as error:  # keep tearing down whatever fails
                notes.append(f"stopping the Kubernetes node {name} failed: {error}")
        self.kube_node = {}
        for router in self.routers.values():
            router.stop()
        self.routers = {}
        self.router = None
        if self.api is not None:
            try:
                self.api.stop()
            except Exception as error:  # keep tearing down whatever fails
                notes.append(f"stopping the API server failed: {error}")
            self.api = None
        if self.state is not None:
            notes += netns.teardown(self.state, self.prefix)
            self.state = None
        self.timings["down"] = time.monotonic() - started
        if release_lock:
            self._release_address_lock()
        if self._atexit_registered:
            atexit.unregister(self._down_at_exit)
            self._atexit_registered = False
        return notes

    def _down_at_exit(self) -> None:
        if self.state is not None:
            print(f"announcer lab: tearing down {self.prefix} at exit", file=sys.stderr)
            self.down()

    def remove_run_dir(self) -> None:
        """Delete the run directory (logs included)."""
        shutil.rmtree(self.run_dir, ignore_errors=True)


def down_everything(prefixes: Sequence[str] = (DEFAULT_PREFIX, TEST_PREFIX), state_dir: Path = STATE_DIR) -> list[str]:
    """Clean up every lab recorded in state_dir, then anything left named with prefixes; return notes."""
    from lab.node import clean_up

    notes: list[str] = []
    for state in netns.saved_states(state_dir):
        notes += netns.teardown(state, state.prefix)
        # A real node's pods, shims and mounts outlive its killed processes.
        for folder in Path(state.run_dir).glob("*/kube") if state.run_dir else ():
            clean_up(folder)
    for prefix in prefixes:
        notes += netns.teardown(None, prefix)
    return notes
