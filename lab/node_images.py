"""The real node's images, built from the project's Dockerfiles and imported into the node's containerd."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lab.dockerd import BUILD_ENVIRONMENT, docker_engine, exclusive, tool

REPOSITORY = Path(__file__).resolve().parents[1]
IMAGES_MODULE = REPOSITORY / "lab" / "images"
# The names the node knows them by: the product as deploy/base names it (kustomization.yaml's images: newTag), the
# sandbox image containerd's CRI plugin is configured with, and the test workload.
PRODUCT_IMAGE = "service-announcer:0.1.0"
PAUSE_IMAGE = "localhost/lab-pause:1"
WEB_IMAGE = "localhost/lab-web:1"
BUILD_TIMEOUT = 1800
LAB_LABEL = "io.github.service-announcer.lab-node-image"  # on the pause and web images, for pruning their old builds


def go_tool() -> str:
    """Go from PATH, else the machine's /usr/local/go (a bare CI environment has no Go on PATH)."""
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(found).exists():
        raise FileNotFoundError("the lab's pause and web images need Go (none on PATH nor in /usr/local/go)")
    return found


def _run(
    argv: list[str], *, cwd: Path = REPOSITORY, timeout: float = BUILD_TIMEOUT, env: dict[str, str] | None = None
) -> str:
    completed = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **BUILD_ENVIRONMENT, **(env or {})},
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({completed.returncode}):\n{completed.stdout[-2000:]}\n"
                           f"{completed.stderr[-3000:]}")  # fmt: skip
    return completed.stdout


def build_binaries(directory: Path) -> None:
    """lab/images' pause and web, static, into directory, with a fixed modification time: the same program is the
    same build context, so Docker's cache keeps the image instead of making a new one each time."""
    environment = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    _run([go_tool(), "build", "-trimpath", "-ldflags", "-s -w", "-o", f"{directory}/", "./cmd/pause", "./cmd/web"],
         cwd=IMAGES_MODULE, env=environment)  # fmt: skip
    for name in ("pause", "web"):
        os.utime(directory / name, (0, 0))


def build_and_import(
    containerd_socket: Path, log_directory: Path, progress: Callable[[str], None] = lambda _: None
) -> None:
    """Build the product, pause and web images with Docker (the engine running, or one started for the build), then
    import them into the containerd at containerd_socket, namespace k8s.io (where kubelet's CRI looks)."""
    docker = tool("docker")
    with tempfile.TemporaryDirectory(prefix="lab-images-") as scratch:
        context = Path(scratch)
        build_binaries(context)
        archive = context / "images.tar"
        with exclusive(), docker_engine(log_directory / "dockerd.log"):
            progress("node images: the Debian base (scripts/docker-base)")
            _run([str(REPOSITORY / "scripts" / "docker-base")])
            progress(f"node images: {PRODUCT_IMAGE} from Dockerfile")
            _run([docker, "build", "--network", "host", "-t", PRODUCT_IMAGE, "-f", "Dockerfile", "."])
            for image, dockerfile in ((PAUSE_IMAGE, "lab-pause.Dockerfile"), (WEB_IMAGE, "lab-web.Dockerfile")):
                progress(f"node images: {image} from docker/{dockerfile}")
                _run([docker, "build", "--network", "host", "-t", image,
                      "-f", str(REPOSITORY / "docker" / dockerfile), str(context)])  # fmt: skip
            _run([docker, "save", "-o", str(archive), PRODUCT_IMAGE, PAUSE_IMAGE, WEB_IMAGE])
            # The images these names carried before a change: untagged now, nothing else uses them.
            _run([docker, "image", "prune", "--force", "--filter", f"label={LAB_LABEL}"])
        progress("node images: importing into containerd (namespace k8s.io)")
        _run([tool("ctr"), "--address", str(containerd_socket), "--namespace", "k8s.io", "images", "import",
              "--no-unpack", str(archive)])  # fmt: skip
