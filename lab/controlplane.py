"""A real control plane for the lab and the tests: etcd and kube-apiserver (secure port, tokens, RBAC, dual-stack)."""

from __future__ import annotations

import atexit
import base64
import json
import logging
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from lab import netns
from lab.netns import ProcessRecord

log = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
KUBE_BUILD = REPOSITORY / "scripts" / "kube-build"
GO_MOD = REPOSITORY / "lab" / "kubernetes" / "go.mod"
RBAC = REPOSITORY / "deploy" / "base" / "rbac.yaml"
NAMESPACE = REPOSITORY / "deploy" / "base" / "namespace.yaml"
# The lab's service ranges (documentation prefixes, as in lab/files/samples.yaml): IPv4 first, so the `kubernetes`
# Service takes 198.51.100.1.
SERVICE_CIDRS = ("198.51.100.0/26", "2001:db8:96::/112")
READY_TIMEOUT = 60.0
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Identity:
    """A user of the token-auth file: its name, groups, and bearer token."""

    name: str
    groups: tuple[str, ...]
    token: str


ADMIN = Identity("lab-admin", ("system:masters",), "lab-admin-token")
# The subject deploy/base/rbac.yaml binds, with the groups the ServiceAccount token authenticator gives it.
ANNOUNCER = Identity(
    "system:serviceaccount:service-announcer:service-announcer",
    ("system:serviceaccounts", "system:serviceaccounts:service-announcer"),
    "service-announcer-token",
)
NOBODY = Identity("lab-nobody", (), "lab-nobody-token")
IDENTITIES = (ADMIN, ANNOUNCER, NOBODY)


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version lab/kubernetes/go.mod pins (the one place it is written)."""
    for line in GO_MOD.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "k8s.io/kubernetes" and words[1].startswith("v1."):
            return words[1]
    raise RuntimeError(f"{GO_MOD}: no k8s.io/kubernetes requirement")


def binaries(progress: Callable[[str], None] | None = None) -> Path:
    """The folder with etcd, kube-apiserver and kubectl: built by scripts/kube-build on first use, then cached."""
    completed = subprocess.run(
        [str(KUBE_BUILD)], stdout=subprocess.PIPE, stderr=None if progress is None else subprocess.PIPE,
        text=True, check=False, timeout=3600,
    )  # fmt: skip
    if progress is not None and completed.stderr:
        for line in completed.stderr.splitlines():
            progress(line)
    if completed.returncode != 0:
        raise RuntimeError(f"scripts/kube-build failed (exit {completed.returncode})")
    return Path(completed.stdout.strip().splitlines()[-1])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path, addresses: Sequence[str]) -> None:
    """A CA, a serving certificate for addresses (and localhost, the first service IP), a ServiceAccount key pair."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "30", "-subj", "/CN=service-announcer-lab-ca",
        "-out", "ca.crt", cwd=directory,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=directory)
    names = ["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default.svc", "IP:198.51.100.1", "IP:2001:db8:96::1"]
    names += [f"IP:{address}" for address in dict.fromkeys(["127.0.0.1", "::1", *addresses])]
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(names)}\n",
        encoding="utf-8",
    )
    _openssl("req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr", cwd=directory)
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
        "-sha256", "-extfile", "server.ext", "-out", "server.crt", cwd=directory,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=directory)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


def token_file_text(identities: Sequence[Identity]) -> str:
    """kube-apiserver's --token-auth-file: token,user,uid,"group1,group2" per line."""
    return "".join(f'{who.token},{who.name},{who.name},"{",".join(who.groups)}"\n' for who in identities)


class ControlPlane:
    """etcd and kube-apiserver as child processes, in a directory of their own; a context manager.

    The API server listens on the secure port only (bind_address:port), with no anonymous access, tokens for
    ADMIN, ANNOUNCER (deploy/base/rbac.yaml's ServiceAccount) and NOBODY, RBAC, and dual-stack service ranges.
    deploy/base/namespace.yaml and rbac.yaml are applied once it is ready. Everything stops on stop(), on leaving
    the `with` block and at interpreter exit.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        bind_address: str = "127.0.0.1",
        port: int | None = None,
        service_cidrs: Sequence[str] = SERVICE_CIDRS,
        apiserver_flags: Sequence[str] = (),
        identities: Sequence[Identity] = (),
        on_start: Callable[[ProcessRecord], None] | None = None,
        on_stop: Callable[[ProcessRecord], None] | None = None,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="announcer-controlplane-")) if directory is None else directory
        self.bind_address = bind_address
        self.port = port
        self.service_cidrs = tuple(service_cidrs)
        self.apiserver_flags = tuple(apiserver_flags)
        self.identities = (*IDENTITIES, *identities)  # the token file's users: ours and the caller's
        self._on_start = on_start
        self._on_stop = on_stop
        self.bin: Path | None = None
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.etcd: ProcessRecord | None = None
        self.apiserver: ProcessRecord | None = None
        self.ready_seconds: float | None = None  # the last start of kube-apiserver to /readyz
        self._atexit = False

    # --- addresses and credentials -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address
        return f"https://{host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def kubeconfig_text(self, identity: Identity = ANNOUNCER) -> str:
        """A kubeconfig for this API server, trusting its CA, with identity's bearer token."""
        ca = base64.b64encode(self.ca_path.read_bytes()).decode("ascii")
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "lab", "cluster": {"server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": identity.name, "user": {"token": identity.token}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": identity.name}}],
            "current-context": "lab",
        }
        return yaml.safe_dump(document, sort_keys=False)

    def kubeconfig(self, identity: Identity = ANNOUNCER) -> Path:
        """The kubeconfig file of identity (written on first use)."""
        path = self.directory / f"kubeconfig-{identity.name.replace(':', '-')}"
        if not path.exists():
            path.write_text(self.kubeconfig_text(identity), encoding="utf-8")
        return path

    # --- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, progress: Callable[[str], None] | None = None) -> ControlPlane:
        """Build (or find) the binaries, then start etcd and kube-apiserver, wait for /readyz, apply the RBAC."""
        self.bin = binaries(progress)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        try:
            make_certificates(self.directory, [self.bind_address])
            (self.directory / "tokens.csv").write_text(token_file_text(self.identities), encoding="utf-8")
            self.port = self.port or free_port(self.bind_address)
            self.etcd_port, self.etcd_peer_port = free_port(), free_port()
            self.start_etcd()
            self.start_apiserver()
            self.kubectl("apply", "--server-side", "-f", str(NAMESPACE), "-f", str(RBAC))
        except BaseException:
            self.stop()
            raise
        return self

    def _binary(self, name: str) -> str:
        if self.bin is None:
            raise RuntimeError("the control plane's binaries are not built yet: start() first")
        return str(self.bin / name)

    def _started(self, record: ProcessRecord) -> ProcessRecord:
        if self._on_start is not None:
            self._on_start(record)
        return record

    def _stopped(self, record: ProcessRecord | None) -> None:
        if record is None:
            return
        netns.stop_process(record)
        if self._on_stop is not None:
            self._on_stop(record)

    def start_etcd(self) -> None:
        """etcd on 127.0.0.1 (client and peer ports of its own); its data survives a restart."""
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            self._binary("etcd"), "--name", "lab", "--data-dir", str(self.directory / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"lab={peer}",
            "--log-level", "warn", "--unsafe-no-fsync",
        ]  # fmt: skip
        self.etcd = self._started(
            netns.start_process("etcd", argv, netns=None, log_path=self.directory / "etcd.log", die_with_parent=True)
        )
        netns.wait_started("etcd", self._etcd_healthy, [self.etcd], READY_TIMEOUT)

    def start_apiserver(self) -> None:
        """kube-apiserver on bind_address:port, then wait for /readyz (the time is kept in ready_seconds)."""
        d = self.directory
        argv = [
            self._binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.bind_address}", f"--secure-port={self.port}",
            f"--advertise-address={self.bind_address}", "--endpoint-reconciler-type=none",
            "--anonymous-auth=false", f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
            "--allow-privileged=true", "--profiling=false", f"--cert-dir={d / 'certs'}",
        ]  # fmt: skip
        # apiserver_flags replace the same flags above (some, --authorization-mode among them, refuse repeats).
        replaced = {flag.split("=", 1)[0] for flag in self.apiserver_flags}
        argv = [argv[0], *(flag for flag in argv[1:] if flag.split("=", 1)[0] not in replaced), *self.apiserver_flags]
        started = time.monotonic()
        self.apiserver = self._started(
            netns.start_process(
                "kube-apiserver", argv, netns=None, log_path=d / "kube-apiserver.log", die_with_parent=True
            )
        )
        netns.wait_started("kube-apiserver", lambda: self.readyz() == 200, [self.apiserver], READY_TIMEOUT)
        self.ready_seconds = time.monotonic() - started
        log.info("kube-apiserver ready on %s in %.2f s", self.url, self.ready_seconds)

    def stop_apiserver(self) -> None:
        self._stopped(self.apiserver)
        self.apiserver = None

    def stop_etcd(self) -> None:
        self._stopped(self.etcd)
        self.etcd = None

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def restart_etcd(self) -> None:
        self.stop_etcd()
        self.start_etcd()

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (idempotent); the directory stays for its logs."""
        self.stop_apiserver()
        self.stop_etcd()

    # --- requests ----------------------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def request(
        self, method: str, path: str, body: object = None, identity: Identity = ADMIN, timeout: float = 10.0
    ) -> tuple[int, object]:
        """One API request as identity: (status, decoded JSON answer or text)."""
        data = None if body is None else json.dumps(body).encode()
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        request = urllib.request.Request(  # noqa: S310  (https to our own server only)
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {identity.token}", "Content-Type": content},
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl(), timeout=timeout) as answer:  # noqa: S310
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def readyz(self) -> int | None:
        """/readyz's status as the admin, None when nothing answers."""
        try:
            status, _ = self.request("GET", "/readyz", timeout=2.0)
        except (OSError, ssl.SSLError):
            return None
        return status

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2.0) as answer:  # noqa: S310
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def etcd_call(self, method: str, body: dict[str, object]) -> dict[str, object]:
        """One call to etcd's JSON gateway (/v3/kv/range, /v3/kv/compaction, ...)."""
        request = urllib.request.Request(  # noqa: S310  (our own etcd on loopback)
            f"{self.etcd_url}/v3/{method}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10.0) as answer:  # noqa: S310
            document: dict[str, object] = json.loads(answer.read())
            return document

    def compact(self) -> int:
        """Compact etcd at its current revision (what a periodic compaction does): continue tokens expire."""
        header = self.etcd_call("kv/range", {"key": base64.b64encode(b"/").decode()})["header"]
        revision = int(header["revision"]) if isinstance(header, dict) else 0
        self.etcd_call("kv/compaction", {"revision": revision, "physical": True})
        return revision

    def kubectl(
        self, *arguments: str, identity: Identity = ADMIN, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """kubectl (the one built at the pinned version) as identity."""
        completed = subprocess.run(
            [self._binary("kubectl"), "--kubeconfig", str(self.kubeconfig(identity)), *arguments],
            input=input_text, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and completed.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(arguments)}: exit {completed.returncode}: {completed.stderr}")
        return completed

    def apply(self, documents: Sequence[dict[str, object]] | str, identity: Identity = ADMIN) -> None:
        """Server-side apply of objects (dicts, or YAML text) as identity."""
        text = documents if isinstance(documents, str) else yaml.safe_dump_all(list(documents))
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", identity=identity, input_text=text)


def seed(plane: ControlPlane, objects: Sequence[dict[str, object]]) -> None:
    """Create objects (the lab's samples) as the admin, with the namespaces they name."""
    namespaces = sorted(
        {str(m.get("namespace", "default")) for obj in objects if isinstance(m := obj.get("metadata"), dict)}
    )
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in namespaces])
    plane.apply(objects)
    for obj in objects:  # a Service's status (load-balancer ingress) is written through its status subresource
        metadata = obj.get("metadata")
        if obj.get("kind") == "Service" and "status" in obj and isinstance(metadata, dict):
            path = f"/api/v1/namespaces/{metadata.get('namespace', 'default')}/services/{metadata['name']}/status"
            status, answer = plane.request("PATCH", path, {"status": obj["status"]})
            if status != 200:
                raise RuntimeError(f"PATCH {path}: {status} {answer}")


def main() -> int:
    """`python -m lab.controlplane`: start one on loopback, print its kubeconfigs, wait for Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ControlPlane() as plane:
        print(f"kube-apiserver {kubernetes_version()} on {plane.url}, ready in {plane.ready_seconds:.2f} s")
        for identity in IDENTITIES:
            print(f"  {identity.name}: KUBECONFIG={plane.kubeconfig(identity)}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
