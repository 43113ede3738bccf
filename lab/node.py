"""A real Kubernetes node in a lab namespace: containerd, kubelet and kube-proxy, and the cluster's controllers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lab import netns, node_images
from lab.controlplane import ADMIN, Identity
from lab.dockerd import tool
from lab.netns import ProcessRecord

if TYPE_CHECKING:
    from lab.controlplane import ControlPlane

log = logging.getLogger(__name__)

# The node's pod range: inside the lab's pod pools (the Calico lab's IPPools, 10.244.0.0/16 and fd00:10:244::/56), not
# the blocks calico-node's recorded configuration announces, so BIRD's blackhole for a block never shadows a pod.
POD_POOLS = ("10.244.0.0/16", "fd00:10:244::/56")
POD_BLOCKS = ("10.244.1.0/24", "fd00:10:244:1::/64")
CNI_PLUGINS = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNC_LAB = Path(__file__).resolve().parent / "files" / "runc-lab"
CAP_SYS_RESOURCE = 24
# kube-apiserver's settings for a cluster with a node: the Node authorizer and NodeRestriction for the kubelet's
# identity, and the `kubernetes` Service's endpoints kept by the API server (pods reach it through kube-proxy).
APISERVER_FLAGS = (
    "--authorization-mode=Node,RBAC",
    "--enable-admission-plugins=NodeRestriction",
    "--endpoint-reconciler-type=lease",
)
CONTROLLER_MANAGER = Identity("system:kube-controller-manager", (), "lab-controller-manager-token")
SCHEDULER = Identity("system:kube-scheduler", (), "lab-scheduler-token")
PROXY = Identity("system:kube-proxy", (), "lab-kube-proxy-token")
READY_TIMEOUT = 120.0
START_RESTARTS = 3  # per process, while the node starts


def kubelet_identity(node: str) -> Identity:
    """The kubelet's user: system:node:NAME in system:nodes, as the Node authorizer wants it."""
    return Identity(f"system:node:{node}", ("system:nodes",), f"lab-kubelet-{node}-token")


def node_identities(nodes: Sequence[str]) -> tuple[Identity, ...]:
    """Every identity a node cluster's components use, for the API server's token file."""
    return (CONTROLLER_MANAGER, SCHEDULER, PROXY, *(kubelet_identity(node) for node in nodes))


def may_lower_oom_score() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE, which a negative oom_score_adj needs (a sandboxed VM's root may
    not: then lab/files/runc-lab stands in for runc)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def containerd_config(directory: Path, socket: Path, runc: Path | None = None) -> str:
    """containerd 1.6's configuration: everything under directory, CRI with runc (cgroupfs; runc, when given, instead
    of Debian's), the lab's pause image, Debian's CNI plugins, network namespaces kept under its state folder."""
    binary = f'\n        BinaryName = "{runc}"' if runc is not None else ""
    return f"""version = 2
root = "{directory / "root"}"
state = "{directory / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{node_images.PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false{binary}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{directory / "cni"}"
"""


def cni_config(blocks: Sequence[str]) -> str:
    """A dual-stack bridge (cni0 in the node's namespace) with host-local addresses from the node's pod blocks."""
    document = {
        "cniVersion": "1.0.0",
        "name": "lab-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": block}] for block in blocks],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2)


def kubelet_config(directory: Path, socket: Path) -> str:
    """The KubeletConfiguration: cgroup v1 allowed (failCgroupV1: false, Kubernetes 1.35 refuses it by default),
    the cgroupfs driver (no systemd here; containerd 1.6 does not report its driver), eviction and image garbage
    collection that never act on this shared machine's disk, no anonymous access."""
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "failSwapOn": False,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "",
        "registerNode": True,
        "staticPodPath": "",
        "podPidsLimit": 4096,
        "fileCheckFrequency": "5s",
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "volumePluginDir": str(directory / "volume-plugins"),
        "podLogsDir": str(directory / "pod-logs"),
    }
    return yaml.safe_dump(document, sort_keys=False)


def kube_proxy_config(kubeconfig: Path, node: str) -> str:
    """kube-proxy, iptables mode, in the node's namespace: conntrack's global limits left alone."""
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": node,
        "clusterCIDR": ",".join(POD_POOLS),
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }
    return yaml.safe_dump(document, sort_keys=False)


def containerd_socket(directory: Path) -> Path:
    """The socket of the containerd of the node whose folder is directory (its shims name it in their argv)."""
    return directory / "containerd" / "containerd.sock"


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or under directory, deepest first (from /proc/self/mountinfo)."""
    prefix = str(directory).rstrip("/") + "/"
    points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(directory):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


class KubeNode:
    """One node of the lab as a real Kubernetes node.

    containerd, kubelet and kube-proxy run in the lab node's network namespace (nsenter --net: the root mount
    namespace stays, so kubelet's volume mounts are containerd's too); hostNetwork pods share that namespace and
    so peer with FRR from the node's address. kube-controller-manager and kube-scheduler run in the root namespace.
    Everything lives under directory and goes on stop(): containers, shims, mounts, cgroups.
    """

    def __init__(
        self,
        plane: ControlPlane,
        name: str,
        namespace: str,
        addresses: Sequence[str],
        directory: Path,
        *,
        gateways: Sequence[str] = (),
        on_start: Callable[[ProcessRecord], None] | None = None,
        on_stop: Callable[[ProcessRecord], None] | None = None,
    ) -> None:
        self.plane = plane
        self.name = name
        self.namespace = namespace
        self.addresses = tuple(addresses)
        self.gateways = tuple(gateways)  # the node's default routes (its top-of-rack router), as a real node has
        self.directory = directory
        self._on_start = on_start
        self._on_stop = on_stop
        self.processes: dict[str, ProcessRecord] = {}
        self.timings: dict[str, float] = {}

    # --- paths --------------------------------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return containerd_socket(self.directory)

    @property
    def kubelet_dir(self) -> Path:
        return self.directory / "kubelet"

    def _binary(self, name: str) -> str:
        if self.plane.bin is None:
            raise RuntimeError("the control plane is not started")
        return str(self.plane.bin / name)

    def _start(self, name: str, argv: Sequence[str], *, in_node: bool) -> ProcessRecord:
        full = ["nsenter", f"--net=/run/netns/{self.namespace}", *argv] if in_node else list(argv)
        return self._launch(name, full)

    def _launch(self, name: str, argv: Sequence[str]) -> ProcessRecord:
        record = netns.start_process(
            name, argv, netns=None, log_path=self.directory / f"{name}.log", die_with_parent=True
        )
        self.processes[name] = record
        if self._on_start is not None:
            self._on_start(record)
        return record

    def _start_again(self, exited: ProcessRecord) -> ProcessRecord:
        """The same command as the record that exited, recorded in its place."""
        if self._on_stop is not None:
            self._on_stop(exited)
        return self._launch(exited.name, exited.argv)

    def _stop(self, name: str, timeout: float = 10.0) -> None:
        record = self.processes.pop(name, None)
        if record is None:
            return
        netns.stop_process(record, timeout)
        if self._on_stop is not None:
            self._on_stop(record)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = log.info) -> KubeNode:
        """containerd, the images, the controllers, kube-proxy and kubelet; returns once the Node is Ready."""
        started = time.monotonic()
        for folder in ("containerd/cni", "kubelet", "volume-plugins", "pod-logs"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
        # Default routes, as a real node has: without one a connect to a Service address (the API server's, from
        # a pod) fails with ENETUNREACH before kube-proxy's DNAT.
        for gateway in self.gateways:
            netns.ip(
                "-6" if ":" in gateway else "-4", "route", "replace", "default", "via", gateway, netns=self.namespace
            )
        self.start_containerd()
        node_images.build_and_import(self.socket, self.directory, progress)
        self.timings["images"] = time.monotonic() - started
        self.start_controllers()
        self.start_kube_proxy()
        self.start_kubelet()
        self.wait_ready()
        self.timings["ready"] = time.monotonic() - started
        progress(f"node {self.name}: Ready in {self.timings['ready']:.1f} s (images {self.timings['images']:.1f} s)")
        return self

    def start_containerd(self) -> None:
        folder = self.directory / "containerd"
        runc = None if may_lower_oom_score() else RUNC_LAB
        if runc is not None:
            log.info("no CAP_SYS_RESOURCE here: runc through %s (negative oom_score_adj raised to 0)", runc)
        (folder / "config.toml").write_text(containerd_config(folder, self.socket, runc), encoding="utf-8")
        (folder / "cni" / "10-lab-pods.conflist").write_text(cni_config(POD_BLOCKS), encoding="utf-8")
        record = self._start("containerd", [tool("containerd"), "--config", str(folder / "config.toml")], in_node=True)
        netns.wait_started("containerd", lambda: self._ctr("version", check=False).returncode == 0, [record], 60.0)

    def _ctr(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("ctr"), "--address", str(self.socket), "--namespace", "k8s.io", *arguments],
            capture_output=True, text=True, timeout=60, check=check,
        )  # fmt: skip

    def _kubeconfig(self, identity: Identity) -> Path:
        return self.plane.kubeconfig(identity)

    def start_controllers(self) -> None:
        d = self.plane.directory
        self._start("kube-controller-manager", [
            self._binary("kube-controller-manager"),
            f"--kubeconfig={self._kubeconfig(CONTROLLER_MANAGER)}", "--leader-elect=false",
            f"--root-ca-file={d / 'ca.crt'}", f"--service-account-private-key-file={d / 'sa.key'}",
            "--use-service-account-credentials=true", "--bind-address=127.0.0.1", "--secure-port=0",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-persistentvolume-binder",
            "--node-monitor-grace-period=20s", "--concurrent-daemonset-syncs=2",
        ], in_node=False)  # fmt: skip
        self._start("kube-scheduler", [
            self._binary("kube-scheduler"),
            f"--kubeconfig={self._kubeconfig(SCHEDULER)}", f"--authentication-kubeconfig={self._kubeconfig(SCHEDULER)}",
            f"--authorization-kubeconfig={self._kubeconfig(SCHEDULER)}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0",
        ], in_node=False)  # fmt: skip

    def start_kube_proxy(self) -> None:
        config = self.directory / "kube-proxy.yaml"
        config.write_text(kube_proxy_config(self._kubeconfig(PROXY), self.name), encoding="utf-8")
        self._start("kube-proxy", [self._binary("kube-proxy"), f"--config={config}"], in_node=True)

    def start_kubelet(self) -> None:
        config = self.directory / "kubelet.yaml"
        config.write_text(kubelet_config(self.directory, self.socket), encoding="utf-8")
        self._start("kubelet", [
            self._binary("kubelet"), f"--config={config}",
            f"--kubeconfig={self._kubeconfig(kubelet_identity(self.name))}",
            f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.directory / 'kubelet-pki'}",
            f"--hostname-override={self.name}", f"--node-ip={','.join(self.addresses)}",
            "--v=1",
        ], in_node=True)  # fmt: skip

    def node_ready(self) -> bool:
        status, node = self.plane.request("GET", f"/api/v1/nodes/{self.name}", identity=ADMIN)
        if status != 200 or not isinstance(node, dict):
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the Node is Ready. A process of the node that exits meanwhile is started again, as systemd's
        Restart=always does on a real node, up to START_RESTARTS times each; kubelet v1.35.4 can die while starting
        ("concurrent map read and map write": its DRA plugin manager reads the container manager's capacity map while
        the container manager's Start writes it)."""
        restart = netns.restarter(self._start_again, limit=START_RESTARTS)
        netns.wait_started(f"node {self.name}", self.node_ready, self.processes.values(), timeout, interval=0.5,
                           log_path=self.directory / "kubelet.log", restart=restart)  # fmt: skip

    def stop(self) -> None:
        """kubelet, kube-proxy, containerd and the controllers; then what clean_up removes: every container and shim
        of this containerd, the mounts under the node's folder, the pods' cgroups. Idempotent."""
        for name in ("kubelet", "kube-proxy", "containerd", "kube-scheduler", "kube-controller-manager"):
            self._stop(name)
        clean_up(self.directory)


def kill_containers(socket: Path) -> None:
    """SIGKILL every process in the pods' cgroups, then the shims of the containerd at socket (named in their argv)."""
    for pid in _pod_pids():
        _kill(pid)
    marker = str(socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and marker in argv:
            _kill(int(entry.name))


def clean_up(directory: Path) -> None:
    """What a node leaves behind even when its processes were killed: the pods and shims, the mounts under its
    folder (kubelet's volumes, containerd's root filesystems and network namespaces), the pods' cgroups."""
    kill_containers(containerd_socket(directory))
    for point in mounts_under(directory):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    _remove_pod_cgroups()


def _pod_pids() -> list[int]:
    found: set[int] = set()
    for hierarchy in ("memory", "pids", "cpu"):
        base = CGROUP_ROOT / hierarchy / "kubepods"
        if base.is_dir():
            for procs in base.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(word) for word in procs.read_text().split())
    return sorted(found)


def _remove_pod_cgroups() -> None:
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / "kubepods"
        if not base.is_dir():
            continue
        for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
