"""End to end: the real announcer and ExaBGP peering with FRR over an IPv6 link-local address (issue #11 item 5).

Its own two namespaces joined by one veth with only link-local addresses: nothing in the root namespace, so it
needs no lab lock. The stand-in API server runs inside the node namespace on its loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import netns
from lab.frr import FrrRouter
from lab.lab import kubeconfig_text, project_tool
from tests.factories import service
from tests.kube_support import wait_until
from tests.lab_support import require_lab_prerequisites

pytestmark = pytest.mark.lab

ROUTER_LL, NODE_LL = "fe80::1", "fe80::2"
API_PORT = 16443
FRR_CONF = """\
frr defaults traditional
hostname link-local-router
router bgp 64512
 bgp router-id 198.51.100.254
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor {node} remote-as 64513
 neighbor {node} interface {link}
 neighbor {node} timers connect 5
 address-family ipv6 unicast
  neighbor {node} activate
  neighbor {node} soft-reconfiguration inbound
 exit-address-family
exit
"""


class LinkLocalLab:
    """FRR in one namespace, ExaBGP running the announcer in the other, one veth between them."""

    def __init__(self, directory: Path) -> None:
        tag = f"ll{os.getpid() % 100000}"
        self.directory = directory
        self.router_ns, self.node_ns = f"{tag}r", f"{tag}n"
        self.router_link, self.node_link = f"{tag}r0", f"{tag}n0"
        self.frr = FrrRouter(self.router_ns, directory / "frr", directory / "frr.conf")
        self.processes: list[netns.ProcessRecord] = []

    def up(self) -> None:
        for namespace in (self.router_ns, self.node_ns):
            netns.create_namespace(namespace)
        netns.add_veth_pair(self.router_link, self.router_ns, self.node_link, self.node_ns)
        for namespace, link, address in ((self.router_ns, self.router_link, ROUTER_LL),
                                         (self.node_ns, self.node_link, NODE_LL)):  # fmt: skip
            netns.ip("addr", "add", f"{address}/64", "dev", link, "nodad", netns=namespace)
            netns.link_up(namespace, link)
        (self.directory / "frr.conf").write_text(FRR_CONF.format(node=NODE_LL, link=self.router_link))
        self.frr.start()

    def start_node(self, config: dict[str, Any], objects: list[dict[str, Any]]) -> Path:
        """The stand-in API server and ExaBGP (running the real announcer) in the node namespace."""
        node = self.directory / "node"
        node.mkdir()
        (node / "seed.yaml").write_text(yaml.safe_dump_all(objects))
        (node / "kubeconfig").write_text(kubeconfig_text(f"http://127.0.0.1:{API_PORT}"))
        config_path = node / "announcer.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.processes.append(netns.start_process(
            "fakeapi", [sys.executable, "-m", "lab.fakeapi", "--listen", f"127.0.0.1:{API_PORT}",
                        "--seed", str(node / "seed.yaml")],
            netns=self.node_ns, log_path=node / "fakeapi.log"))  # fmt: skip
        environment = {**{k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")},
                       "KUBECONFIG": str(node / "kubeconfig"), "PYTHONUNBUFFERED": "1"}  # fmt: skip
        announcer = [sys.executable, "-m", "announcer"]
        conf = subprocess.run([*announcer, "exabgp-conf", "--config", str(config_path)],
                              capture_output=True, text=True, check=True, env=environment).stdout  # fmt: skip
        (node / "exabgp.conf").write_text(conf)
        settings = subprocess.run([*announcer, "exabgp-env", "--config", str(config_path)],
                                  capture_output=True, text=True, check=True, env=environment).stdout  # fmt: skip
        for line in settings.splitlines():
            key, _, value = line.partition("=")
            environment[key] = value.strip("'")
        environment.update({"exabgp_daemon_user": "root", "exabgp_daemon_drop": "false",
                            "exabgp_log_processes": "true"})  # fmt: skip
        self.processes.append(netns.start_process(
            "exabgp", [str(project_tool("exabgp")), str(node / "exabgp.conf")],
            netns=self.node_ns, log_path=node / "exabgp.log", env=environment))  # fmt: skip
        return node / "exabgp.conf"

    def down(self) -> None:
        for record in reversed(self.processes):
            netns.stop_process(record)
        self.frr.stop()
        for namespace in (self.node_ns, self.router_ns):
            if netns.namespace_exists(namespace):
                netns.delete_namespace(namespace)


@pytest.fixture
def link_local_lab() -> Iterator[LinkLocalLab]:
    """The two namespaces, FRR up; everything stopped and deleted afterwards (the run folder kept on failure)."""
    require_lab_prerequisites()
    directory = Path(tempfile.mkdtemp(prefix="announcer-link-local-"))
    directory.chmod(0o755)  # FRR runs as its own user and must enter it
    lab = LinkLocalLab(directory)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
    shutil.rmtree(directory)


def test_the_announcer_peers_over_an_ipv6_link_local_address_with_its_interface_and_frr_installs_the_route(
    link_local_lab: LinkLocalLab,
) -> None:
    """A peer {address: fe80::1, interface: <veth>, local_address: fe80::2} renders source-interface; ExaBGP
    connects over the link-local address, FRR's neighbour fe80::2 (interface <veth>) is Established and holds the
    Service's /128 with the link-local next hop, and the kernel route goes via fe80::2 on that veth."""
    lab = link_local_lab
    config = {
        "node_name": "node-a",
        "bgp": {"local_as": 64513, "router_id": "198.51.100.253", "hold_time": 9,
                "peers": [{"address": ROUTER_LL, "interface": lab.node_link, "local_address": NODE_LL,
                           "peer_as": 64512}]},
    }  # fmt: skip
    conf = lab.start_node(config, [service("web", ["2001:db8:96::a"])])
    assert f"source-interface {lab.node_link};" in conf.read_text()

    def route() -> Any:
        document = lab.frr.vtysh_json("show bgp ipv6 unicast json")
        return document.get("routes", {}).get("2001:db8:96::a/128")

    paths = wait_until(route, 60.0, "FRR holds 2001:db8:96::a/128", interval=0.25)
    neighbor = lab.frr.vtysh_json(f"show bgp neighbors {NODE_LL} json")[NODE_LL]
    assert neighbor["bgpState"] == "Established"
    assert [(path["peerId"], path["valid"]) for path in paths] == [(NODE_LL, True)]
    # ExaBGP (next-hop self) sends its link-local address as the only, 16-byte next hop; FRR takes it.
    assert [hop["ip"] for hop in paths[0]["nexthops"]] == [NODE_LL]
    assert lab.frr.vtysh_json("show bgp ipv4 unicast json").get("routes", {}) == {}
    kernel = netns.ip("-6", "route", "show", "2001:db8:96::a", netns=lab.router_ns)
    assert f"via {NODE_LL} dev {lab.router_link}" in kernel
