"""Smoke tests of the lab: sessions per family, a trivial API process's routes in FRR, controls, clean teardown."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab import frr, netns
from lab.lab import API_ADDRESS, API_URL, HOST_NETWORK, NODE_HOST_IPV4, Lab
from tests.lab_support import STATIC_ROUTES, LabKeeper, processes_mentioning, static_api_command, wait_for_rib_equal

pytestmark = pytest.mark.lab

EXPECTED_IPV4 = {
    "192.0.2.11": {"198.51.100.10/32": ["192.0.2.11"], "198.51.100.128/32": ["192.0.2.11"]},
    "192.0.2.12": {"198.51.100.10/32": ["192.0.2.12"]},
}
UPLINK_NETWORK = ipaddress.ip_network("192.0.2.0/24")  # this machine's own uplink: the lab never touches it
DOCKER_LAB_NETWORK = ipaddress.ip_network("203.0.113.0/26")  # the Docker lab's
EXPECTED_IPV6 = {
    "2001:db8::11": {"2001:db8:96::a/128": ["2001:db8::11"], "2001:db8:1b::1/128": ["2001:db8::11"]},
    "2001:db8::12": {"2001:db8:96::a/128": ["2001:db8::12"]},
}


def test_a_missing_frr_is_reported_with_the_command_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without zebra and bgpd the lab names what is missing and how to install it, instead of skipping."""
    monkeypatch.setattr(frr, "FRR_BIN_DIR", tmp_path)
    reason = frr.frr_missing_reason()
    assert reason is not None
    assert str(tmp_path / "bgpd") in reason
    assert "apt-get install -y frr" in reason


def test_the_host_network_is_off_the_uplink_and_the_docker_lab_and_holds_every_root_side_address() -> None:
    """The root namespace's side of the lab: a network outside 192.0.2.0/24 and 203.0.113.0/26, one address each."""
    network = ipaddress.ip_network(HOST_NETWORK)
    assert not network.overlaps(UPLINK_NETWORK)
    assert not network.overlaps(DOCKER_LAB_NETWORK)
    addresses = [API_ADDRESS, *NODE_HOST_IPV4]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(address) in network for address in addresses)
    assert network.network_address not in map(ipaddress.ip_address, addresses)
    assert network.broadcast_address not in map(ipaddress.ip_address, addresses)


def _fields_inside_uplink(route: dict[str, str]) -> list[str]:
    """The destination, preferred source or gateway of a route that lies inside 192.0.2.0/24."""
    found = []
    for key in ("dst", "prefsrc", "gateway"):
        value = route.get(key, "default")
        if value != "default" and ipaddress.ip_network(value, strict=False).overlaps(UPLINK_NETWORK):
            found.append(f"{key} {value}")
    return found


def test_the_root_namespace_gets_no_address_or_route_inside_192_0_2_0_24(static_lab: Lab) -> None:
    """While the lab is up, the root namespace holds only 203.0.113.254/28 on the lab's link with its connected
    route: no address, route or preferred source of the lab inside 192.0.2.0/24, where the uplink sits."""
    lab_links = set(netns.links_with_prefix(static_lab.prefix))
    assert lab_links == {static_lab.host_link}
    lab_addresses = [
        ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
        for entry in netns.addresses_json()
        if entry["ifname"] in lab_links
        for info in entry.get("addr_info", [])
    ]
    assert [address for address in lab_addresses if address.version == 4] == [
        ipaddress.ip_interface(f"{API_ADDRESS}/{ipaddress.ip_network(HOST_NETWORK).prefixlen}")
    ]
    assert [address for address in lab_addresses if address.version == 6 and not address.is_link_local] == []

    lab_routes = [route for route in netns.routes_json() if route.get("dev") in lab_links]
    assert [(route["dst"], field) for route in lab_routes for field in _fields_inside_uplink(route)] == []
    main_ipv4 = [route["dst"] for route in lab_routes if route["family"] == "inet" and "table" not in route]
    assert main_ipv4 == [HOST_NETWORK], "only the connected route of the host network"
    for node in static_lab.nodes.values():
        way = json.loads(netns.ip("-json", "route", "get", node.ipv4))
        assert way[0]["dev"] not in lab_links, f"the root namespace routes {node.ipv4} into the lab: {way}"


def test_exabgp_on_a_node_finds_the_environment_s_announcer_last_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """ExaBGP resolves the relative `run announcer` against PATH keeping the last match: the interpreter's own
    bin folder must come last, even when the caller's PATH lacks it (as under `.venv/bin/python3 -m pytest`)."""
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    path = Lab("tt-").node_environment("node-a")["PATH"].split(":")
    assert path[-1] == str(Path(sys.executable).parent)
    assert (Path(path[-1]) / "announcer").is_file()


def test_every_node_has_one_ipv4_and_one_ipv6_session_established_with_frr(static_lab: Lab) -> None:
    """Each node peers over IPv4 for ipv4 unicast only and over IPv6 for ipv6 unicast only."""
    neighbors = static_lab.frr().neighbors()
    for node in static_lab.nodes.values():
        for family, address, other in (("ipv4", node.ipv4, "ipv6Unicast"), ("ipv6", node.ipv6, "ipv4Unicast")):
            info = neighbors[address]
            assert info["bgpState"] == "Established", f"{node.name} {family}: {info['bgpState']}"
            assert info["hostForeign"] == address
            assert info["remoteRouterId"] == node.router_id
            assert set(info["addressFamilyInfo"]) == {f"{family}Unicast"}, f"{other} must not be negotiated"


def test_frr_learns_the_trivial_api_process_routes_on_the_session_of_their_family(static_lab: Lab) -> None:
    """IPv4 prefixes arrive only on IPv4 sessions and IPv6 ones only on IPv6 sessions, next-hop the node."""
    wait_for_rib_equal(static_lab, "ipv4", EXPECTED_IPV4)
    wait_for_rib_equal(static_lab, "ipv6", EXPECTED_IPV6)
    assert static_lab.received_routes("node-b", "ipv4") == {"198.51.100.10/32": ["192.0.2.12"]}
    assert static_lab.received_routes("node-b", "ipv6") == {"2001:db8:96::a/128": ["2001:db8::12"]}
    assert static_lab.routes("ipv4")["198.51.100.10/32"] == ["192.0.2.11", "192.0.2.12"], "ECMP across nodes"


def test_nodes_reach_the_stand_in_api_server_and_their_api_process_gets_the_node_environment(
    static_lab: Lab,
) -> None:
    """From inside a node the kubeconfig's server answers, and ExaBGP's child sees NODE_NAME and KUBECONFIG."""
    probe = (
        "import os, urllib.request, yaml;"
        "config = yaml.safe_load(open(os.environ['KUBECONFIG']));"
        "server = config['clusters'][0]['cluster']['server'];"
        "print(server, urllib.request.urlopen(server + '/version', timeout=5).status)"
    )
    for name in static_lab.nodes:
        output = static_lab.run_in_node(name, [sys.executable, "-c", probe]).stdout.split()
        assert output == [API_URL, "200"]
        pid = static_lab.announcer_pid(name, timeout=5.0)
        assert pid is not None
        environment = dict(
            entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
        )
        assert environment["NODE_NAME"] == name
        assert environment["ROUTER_ID"] == static_lab.node(name).router_id
        assert Path(environment["KUBECONFIG"]).read_text().count(API_URL) == 1


def test_the_lab_controls_respawn_the_api_process_reset_sessions_and_restart_exabgp(static_lab: Lab) -> None:
    """Killing the API process, `clear bgp *`, SIGTERM to ExaBGP and a restart all end with the same routes."""
    killed = static_lab.kill_announcer("node-a")
    respawned = static_lab.announcer_pid("node-a", timeout=10.0, other_than=killed)
    assert respawned is not None
    assert respawned != killed
    wait_for_rib_equal(static_lab, "ipv4", EXPECTED_IPV4)

    established_before = {peer: info["connectionsEstablished"] for peer, info in static_lab.frr().neighbors().items()}
    static_lab.clear_bgp()
    static_lab.wait_for(
        lambda lab: all(
            info["bgpState"] == "Established" and info["connectionsEstablished"] > established_before[peer]
            for peer, info in lab.frr().neighbors().items()
        ),
        timeout=60.0,
    )
    wait_for_rib_equal(static_lab, "ipv6", EXPECTED_IPV6)

    terminated = static_lab.signal_exabgp("node-b", signal.SIGTERM)
    assert static_lab.wait_exabgp_exit("node-b", timeout=10.0)
    assert static_lab.exabgp_pid("node-b") is None
    wait_for_rib_equal(static_lab, "ipv4", {"192.0.2.11": EXPECTED_IPV4["192.0.2.11"]})
    static_lab.start_exabgp("node-b")
    static_lab.wait_established(60.0)
    wait_for_rib_equal(static_lab, "ipv4", EXPECTED_IPV4)

    old_pid = static_lab.exabgp_pid("node-b")
    assert old_pid not in (None, terminated)
    static_lab.restart_exabgp("node-b")
    assert static_lab.exabgp_pid("node-b") not in (None, old_pid)
    static_lab.wait_established(60.0)
    wait_for_rib_equal(static_lab, "ipv4", EXPECTED_IPV4)
    wait_for_rib_equal(static_lab, "ipv6", EXPECTED_IPV6)


def test_down_leaves_no_namespace_link_address_or_process_behind(lab_keeper: LabKeeper, static_lab: Lab) -> None:
    """After down() nothing the lab started runs, and no namespace, link, address or state file remains."""
    assert static_lab.state is not None
    state_file = static_lab.state.path
    records = list(static_lab.state.processes)
    pids = {record.pid for record in records}
    for name in static_lab.nodes:
        child = static_lab.announcer_pid(name, timeout=5.0)
        assert child is not None
        pids.add(child)
    assert {record.name for record in records} >= {"frr-zebra", "frr-bgpd", "exabgp-node-a", "exabgp-node-b"}

    lab_keeper.close(keep_lock=True)  # other runs use the same names: none may come up while we look
    try:
        assert [pid for pid in pids if netns.is_alive(pid)] == []
        assert [name for name in netns.list_namespaces() if name.startswith(static_lab.prefix)] == []
        assert netns.links_with_prefix(static_lab.prefix) == []
        assert netns.root_uses_of_network(HOST_NETWORK, "") == []
        assert not state_file.exists()
        ours = processes_mentioning(str(static_lab.run_dir))
        assert ours == [], json.dumps(ours, indent=1)
    finally:
        static_lab.release_lock()


def _bring_up(lab: Lab, outcome: list[BaseException | None]) -> None:
    try:
        lab.up(wait=False)
    except BaseException as error:  # reported to the test thread
        outcome.append(error)
    else:
        outcome.append(None)


def test_a_lab_waits_for_the_machine_wide_lock_before_looking_for_leftovers(lab_keeper: LabKeeper) -> None:
    """While another run's lab holds the lock (here: its namespace and the lock, held by the test), up() waits
    for it to go down instead of refusing at once because that lab's names exist; then it comes up."""
    lab_keeper.close()
    prefix = "lk-"
    netns.STATE_DIR.mkdir(parents=True, exist_ok=True)
    lab = Lab(prefix, nodes=("node-a",))
    outcome: list[BaseException | None] = []
    thread = threading.Thread(target=_bring_up, args=(lab, outcome), daemon=True)
    with (netns.STATE_DIR / "addresses.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        netns.create_namespace(f"{prefix}lan")
        try:
            thread.start()
            thread.join(1.5)
            assert outcome == [], f"up() did not wait for the lab holding the lock: {outcome}"
        finally:
            netns.delete_namespace(f"{prefix}lan")
            fcntl.flock(held, fcntl.LOCK_UN)
    thread.join(60.0)
    try:
        assert outcome == [None]
        assert netns.namespace_exists(lab.router_namespace)
    finally:
        lab.down()
    assert [name for name in netns.list_namespaces() if name.startswith(prefix)] == []


def _lines_into(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def test_lab_up_exits_when_lab_down_in_another_shell_tears_its_lab_down(lab_keeper: LabKeeper) -> None:
    """`python -m lab up` waiting for Ctrl-C notices that `python -m lab down` removed its lab and exits 0 within
    seconds, leaving nothing behind."""
    lab_keeper.close()  # the lab lock is machine-wide: the subprocess would wait for this session's lab
    prefix = "ud-"
    command = [sys.executable, "-m", "lab", "up", "--prefix", prefix, "--settle", "10",
               "--announcer-command", static_api_command(*STATIC_ROUTES)]  # fmt: skip
    up = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=_lines_into, args=(up.stderr, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180.0
        while not any("tears the lab down" in line for line in lines):
            assert up.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        down = subprocess.run(
            [sys.executable, "-m", "lab", "down", "--prefix", prefix],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        torn_down = time.monotonic()
        assert up.wait(timeout=20.0) == 0
        exited_after = time.monotonic() - torn_down
        reader.join(5.0)  # the rest of its stderr
        assert any("torn down from elsewhere" in line for line in lines), "".join(lines)
        assert exited_after < 15.0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        reader.join(5.0)
        if up.stderr is not None:
            up.stderr.close()
        subprocess.run(
            [sys.executable, "-m", "lab", "down", "--prefix", prefix], capture_output=True, timeout=120, check=False
        )
    assert [name for name in netns.list_namespaces() if name.startswith(prefix)] == []
    assert netns.links_with_prefix(prefix) == []
