"""A real ExaBGP for tests: exabgp.conf and its settings rendered by the announcer itself, from a configuration."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab.lab import kubeconfig_text, project_tool


def rendered_exabgp(tmp_path: Path, config: dict[str, Any], api_url: str) -> tuple[list[str], dict[str, str]]:
    """Write the configuration and a kubeconfig for `api_url` into tmp_path, render exabgp.conf and ExaBGP's
    settings with `announcer exabgp-conf` / `exabgp-env`, and return the argv (the environment's own exabgp) and
    the environment to start ExaBGP with (this one's, less NODE_NAME, as the current user)."""
    config_path = tmp_path / "announcer.yaml"
    config_path.write_text(json.dumps(config))
    (tmp_path / "kubeconfig").write_text(kubeconfig_text(api_url))

    def announcer(*arguments: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "announcer", *arguments, "--config", str(config_path)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    conf = tmp_path / "exabgp.conf"
    conf.write_text(announcer("exabgp-conf"))
    environment = {key: value for key, value in os.environ.items() if key != "NODE_NAME"}
    for line in announcer("exabgp-env").splitlines():
        key, _, value = line.partition("=")
        environment[key] = value.strip("'")
    environment.update(
        KUBECONFIG=str(tmp_path / "kubeconfig"), exabgp_daemon_user=getpass.getuser(), exabgp_daemon_drop="false"
    )
    return [str(project_tool("exabgp")), str(conf)], environment
