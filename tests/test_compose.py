"""docker-compose.yml agrees with the files it mounts, the images it builds, the compose lab's FRR and announcer
configuration, and stays inside its own address ranges."""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from announcer.config_load import load_config
from lab import lab as lab_plan
from lab.lab import load_objects
from tests.compose_support import (
    ANNOUNCER_CONF,
    COMPOSE,
    FRR_CONF,
    LAB_IPV4,
    LAB_IPV6,
    NODES,
    PRODUCT_IMAGE,
    REPOSITORY,
    SERVICES,
    compose,
    frr_conf_neighbours,
    lab_address,
    mounts,
    namespace_holder,
    service,
)

EXAMPLE = REPOSITORY / "examples" / "announcer.yaml"
# Ranges the compose lab must never use: this machine's uplink, the namespace lab's host range, private ranges.
FORBIDDEN = [
    ipaddress.ip_network(cidr)
    for cidr in ("192.0.2.0/24", "203.0.113.240/28", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
]


# The real node's pause and web images (lab/node_images.py): their build context holds lab/images' binaries.
NODE_IMAGE_DOCKERFILES = {"lab-pause.Dockerfile", "lab-web.Dockerfile"}


def dockerfiles() -> list[Path]:
    return [REPOSITORY / "Dockerfile", *sorted((REPOSITORY / "docker").glob("*.Dockerfile"))]


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile's COPY lines name (globs and --from copies left out)."""
    sources: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += [word for word in shlex.split(line)[1:-1] if not word.startswith("--")]
    return sources


def frr_conf_activated(family: str) -> set[str]:
    """Neighbours activated in one address family of frr.conf."""
    text = FRR_CONF.read_text(encoding="utf-8")
    block = re.search(rf"address-family {family} unicast\n(.*?)exit-address-family", text, re.DOTALL)
    assert block is not None, f"frr.conf has no {family} unicast block"
    return {str(ipaddress.ip_address(address)) for address in re.findall(r"neighbor (\S+) activate", block[1])}


def test_every_file_the_compose_file_and_the_images_use_exists() -> None:
    """Bind-mounted files, build contexts, Dockerfiles and what they copy are all in the repository."""
    for name in compose()["services"]:
        for host in mounts(name).values():
            assert host.is_file(), f"{name} mounts missing {host}"
        build = service(name).get("build")
        if build is not None:
            assert (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    for dockerfile in dockerfiles():
        for source in copied_sources(dockerfile):
            if dockerfile.name in NODE_IMAGE_DOCKERFILES:  # context: lab/images' binaries (lab/node_images.py)
                assert (REPOSITORY / "lab" / "images" / "cmd" / source / "main.go").is_file(), dockerfile.name
            elif "[" not in source:
                assert (REPOSITORY / source).exists(), f"{dockerfile.name} copies missing {source}"
    entrypoint = REPOSITORY / "deploy" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111, "deploy/entrypoint.sh is executable"
    assert "announcer exabgp-conf" in entrypoint.read_text(encoding="utf-8")
    assert 'exabgp "$run_dir/exabgp.conf" &' in entrypoint.read_text(encoding="utf-8")


def test_the_product_image_holds_the_product_only_and_runs_unprivileged() -> None:
    """Dockerfile copies the package, its metadata, its dependencies' lock and the entrypoint, never lab/; it runs
    as uid 10001."""
    dockerfile = (REPOSITORY / "Dockerfile").read_text(encoding="utf-8")
    assert set(copied_sources(REPOSITORY / "Dockerfile")) == {
        "requirements/image.txt",
        "pyproject.toml",
        "README.m[d]",
        "announcer",
        "deploy/entrypoint.sh",
    }
    assert re.search(r"^FROM debian:bookworm-slim$", dockerfile, re.MULTILINE), "a base scripts/docker-base can make"
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/announcer-entrypoint"\]$', dockerfile, re.MULTILINE)
    for name in NODES:
        assert service(name)["image"] == PRODUCT_IMAGE
        assert service(name)["build"]["dockerfile"] == "Dockerfile"
        assert "cap_add" not in service(name) and "user" not in service(name), "nodes run as the image says"


def test_the_stand_in_api_server_comes_from_the_lab_image_never_the_product() -> None:
    """The api service runs python -m lab.fakeapi from docker/lab.Dockerfile, which copies the whole lab/ folder."""
    api = service("api")
    assert api["image"] != PRODUCT_IMAGE
    assert api["build"]["dockerfile"] == "docker/lab.Dockerfile"
    lab_dockerfile = REPOSITORY / "docker" / "lab.Dockerfile"
    assert "lab" in copied_sources(lab_dockerfile)
    assert '["python3", "-m", "lab.fakeapi"]' in lab_dockerfile.read_text(encoding="utf-8")
    assert "entrypoint" not in api, "the lab image's entrypoint runs the stand-in; the service gives its arguments"


def test_every_image_starts_from_a_base_scripts_docker_base_makes() -> None:
    """Every FROM is debian:bookworm-slim (or an earlier stage): no image this machine class cannot build."""
    for dockerfile in dockerfiles():
        stages: set[str] = set()
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            if line.startswith("FROM "):
                words = line.split()
                # scratch is the empty image: nothing to pull
                assert words[1] in stages | {"debian:bookworm-slim", "scratch"}, f"{dockerfile.name}: {line}"
                if len(words) == 4 and words[2].upper() == "AS":
                    stages.add(words[3])
    assert "debian:bookworm-slim" in (REPOSITORY / "scripts" / "docker-base").read_text(encoding="utf-8")


def test_the_compose_file_has_no_key_compose_v1_rejects() -> None:
    """No top-level name (the project name goes on the command line), no version; Debian's docker-compose 1.29
    accepts the file."""
    assert set(compose()) <= {"services", "networks", "x-netns", "x-announcer-node"}
    for name in compose()["services"]:
        build = service(name).get("build")
        if build is not None:
            assert build.get("network") == "host", f"{name} builds without a bridge"
    tool = shutil.which("docker-compose")
    assert tool is not None, "docker-compose (Debian's, v1) is installed by scripts/setup and .ci/run"
    result = subprocess.run(
        [
            tool,
            "--project-directory",
            str(REPOSITORY),
            "-f",
            str(COMPOSE),
            "-p",
            "service-announcer-check",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_network_is_internal_dual_stack_in_the_compose_ranges_only() -> None:
    """One internal network, 203.0.113.0/26 and 2001:db8:c0::/64; every address unique, none Docker's gateway, none in
    the uplink's, the namespace lab's or a private range."""
    assert set(compose()["networks"]) == {"lab"}
    network = compose()["networks"]["lab"]
    assert network["internal"] is True
    assert network["enable_ipv6"] is True
    subnets = {ipaddress.ip_network(entry["subnet"]): entry.get("gateway") for entry in network["ipam"]["config"]}
    assert set(subnets) == {LAB_IPV4, LAB_IPV6}
    for subnet in subnets:
        assert not any(subnet.overlaps(forbidden) for forbidden in FORBIDDEN if forbidden.version == subnet.version)
    addresses = [lab_address(name, family) for name in SERVICES for family in (4, 6)]
    assert len(addresses) == len(set(addresses))
    gateways = {str(ipaddress.ip_address(gateway)) for gateway in subnets.values() if gateway}
    assert not gateways & set(addresses), "Docker's gateway address must not be a service's"
    for address in addresses:
        assert any(ipaddress.ip_address(address) in subnet for subnet in subnets)


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_joins_a_namespace_held_without_default_routes(name: str) -> None:
    """Each service joins its own holder (lab-netns with NET_ADMIN only), the only containers on the lab network."""
    holder = namespace_holder(name)
    assert holder == f"{name}-netns"
    assert "networks" not in service(name)
    assert holder in service(name)["depends_on"]
    held = service(holder)
    assert held["entrypoint"] == ["/usr/local/bin/lab-netns"]
    assert held["cap_drop"] == ["ALL"] and held["cap_add"] == ["NET_ADMIN"]
    script = (REPOSITORY / "docker" / "lab-netns.sh").read_text(encoding="utf-8")
    assert "ip -4 route del default" in script and "ip -6 route del default" in script
    holders = {namespace_holder(other) for other in SERVICES}
    assert {other for other in compose()["services"] if "networks" in service(other)} == holders


def test_frr_conf_peers_with_exactly_the_compose_nodes_one_family_each() -> None:
    """frr.conf's neighbours are the nodes' addresses, IPv4 ones in ipv4 unicast and IPv6 ones in ipv6 unicast."""
    neighbours = frr_conf_neighbours()
    node_addresses = {lab_address(name, family) for name in NODES for family in (4, 6)}
    assert set(neighbours) == node_addresses
    assert set(neighbours.values()) == {load_config(ANNOUNCER_CONF, environ={}).bgp.local_as}
    assert frr_conf_activated("ipv4") == {lab_address(name, 4) for name in NODES}
    assert frr_conf_activated("ipv6") == {lab_address(name, 6) for name in NODES}
    text = FRR_CONF.read_text(encoding="utf-8")
    assert f"bgp router-id {lab_address('frr', 4)}" in text
    assert re.search(r"^log ", text, re.MULTILINE) is None, "logs go to the container's output"
    assert mounts("frr")["/etc/frr/frr.conf"] == FRR_CONF


def test_the_compose_configuration_peers_with_the_compose_router_and_otherwise_is_the_example() -> None:
    """docker/lab/announcer.yaml's peers are FRR's two addresses with frr.conf's AS; what it announces and how is
    examples/announcer.yaml's."""
    config = load_config(ANNOUNCER_CONF, environ={})
    example = load_config(EXAMPLE, environ={})
    assert {str(peer.address) for peer in config.bgp.peers} == {lab_address("frr", 4), lab_address("frr", 6)}
    router_as = re.search(r"^router bgp (\d+)", FRR_CONF.read_text(encoding="utf-8"), re.MULTILINE)
    assert router_as is not None
    assert {peer.peer_as for peer in config.bgp.peers} == {int(router_as[1])}
    assert config.bgp.local_as == example.bgp.local_as
    assert (config.announce, config.attributes, config.speaker) == (
        example.announce,
        example.attributes,
        example.speaker,
    )
    assert config.bgp.graceful_restart is not None, "a node that vanishes leaves stale routes: withdrawing matters"


@pytest.mark.parametrize("name", NODES)
def test_each_node_gets_its_name_router_id_configuration_and_kubeconfig(name: str) -> None:
    """NODE_NAME is the service name, ROUTER_ID its IPv4 address, and both files are mounted where named."""
    node = service(name)
    environment = node["environment"]
    assert environment["NODE_NAME"] == name
    assert environment["ROUTER_ID"] == lab_address(name, 4)
    bound = mounts(name)
    assert bound["/etc/announcer/announcer.yaml"] == ANNOUNCER_CONF
    assert environment["KUBECONFIG"] in bound
    config = load_config(ANNOUNCER_CONF, environ={"NODE_NAME": name, "ROUTER_ID": environment["ROUTER_ID"]})
    assert config.node == name
    assert {"frr", "api"} <= set(node["depends_on"])


def test_the_kubeconfig_points_at_the_api_service_listen_address() -> None:
    """The nodes' kubeconfig server is the api service's address and --listen port."""
    kubeconfig_path = mounts("node-a")[service("node-a")["environment"]["KUBECONFIG"]]
    kubeconfig = yaml.safe_load(kubeconfig_path.read_text(encoding="utf-8"))
    server = urlsplit(kubeconfig["clusters"][0]["cluster"]["server"])
    command = [str(word) for word in service("api")["command"]]
    listen = command[command.index("--listen") + 1]
    assert f"{server.hostname}:{server.port}" == listen == f"{lab_address('api', 4)}:{server.port}"
    assert yaml.safe_load(lab_plan.kubeconfig_text(server.geturl())) == kubeconfig


def test_the_api_service_is_seeded_with_the_sample_objects() -> None:
    """The api service mounts samples.yaml at the path its --seed names."""
    command = [str(word) for word in service("api")["command"]]
    seed = command[command.index("--seed") + 1]
    assert mounts("api")[seed] == lab_plan.SAMPLES


def test_the_samples_cover_every_ip_family_shape_and_a_local_load_balancer() -> None:
    """Dual-stack (required, preferred, IPv6 first), single-stack, headless and a Local LB with slices."""
    objects = load_objects(lab_plan.SAMPLES)
    services = [item for item in objects if item["kind"] == "Service"]
    specs = {item["metadata"]["name"]: item["spec"] for item in services}
    policies = [(spec.get("ipFamilyPolicy"), tuple(spec.get("ipFamilies", []))) for spec in specs.values()]
    assert ("RequireDualStack", ("IPv4", "IPv6")) in policies
    assert ("PreferDualStack", ("IPv4", "IPv6")) in policies
    assert ("SingleStack", ("IPv4",)) in policies
    assert ("SingleStack", ("IPv6",)) in policies
    assert any(families == ("IPv6", "IPv4") and policy != "SingleStack" for policy, families in policies)
    assert any(spec.get("clusterIP") == "None" for spec in specs.values())
    for spec in specs.values():
        if spec.get("clusterIP") != "None":
            assert spec["clusterIP"] == spec["clusterIPs"][0]
            kinds = ["IPv6" if ":" in address else "IPv4" for address in spec["clusterIPs"]]
            assert kinds == list(spec["ipFamilies"])
    local = [item for item in services if item["spec"].get("externalTrafficPolicy") == "Local"]
    assert local, "one Service has externalTrafficPolicy: Local"
    name = local[0]["metadata"]["name"]
    assert local[0]["spec"]["type"] == "LoadBalancer"
    assert len(local[0]["status"]["loadBalancer"]["ingress"]) == 2
    slices = [
        item
        for item in objects
        if item["kind"] == "EndpointSlice" and item["metadata"]["labels"]["kubernetes.io/service-name"] == name
    ]
    assert sorted(item["addressType"] for item in slices) == ["IPv4", "IPv6"]
    for item in slices:
        assert any(
            endpoint["nodeName"] == "node-a" and endpoint["conditions"]["ready"] for endpoint in item["endpoints"]
        )


def test_every_sample_address_is_a_documentation_address_in_its_planned_range() -> None:
    """Cluster, external and load-balancer IPs fall in the plan's ranges; nothing outside the documentation blocks."""
    ranges = {
        "cluster": ["198.51.100.0/26", "2001:db8:96::/112"],
        "external": ["198.51.100.64/26", "2001:db8:e::/64"],
        "load_balancer": ["198.51.100.128/26", "2001:db8:1b::/64"],
    }
    documentation = [ipaddress.ip_network(cidr) for cidr in ("192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32")]

    def within(address: str, cidrs: list[str]) -> bool:
        return any(ipaddress.ip_address(address) in ipaddress.ip_network(cidr) for cidr in cidrs)

    for item in load_objects(lab_plan.SAMPLES):
        if item["kind"] == "Service":
            spec = item["spec"]
            for address in spec.get("clusterIPs", []):
                assert address == "None" or within(address, ranges["cluster"])
            for address in spec.get("externalIPs", []):
                assert within(address, ranges["external"])
            for ingress in item.get("status", {}).get("loadBalancer", {}).get("ingress", []):
                assert within(ingress["ip"], ranges["load_balancer"])
        else:
            for endpoint in item["endpoints"]:
                for address in endpoint["addresses"]:
                    assert any(ipaddress.ip_address(address) in network for network in documentation)
