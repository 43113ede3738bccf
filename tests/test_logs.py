"""Logs: one JSON object per line with the object, prefix and peer as fields; ExaBGP's own lines with timestamps."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.config import ConfigError
from announcer.exabgp_conf import exabgp_environment
from announcer.logs import JsonFormatter
from announcer.model import Family, parse_prefix
from announcer.reconcile import Action, Command
from tests.conftest import BASE_CONFIG, make_config
from tests.factories import service
from tests.test_state import Harness


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("announcer.state", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_record_becomes_one_json_line_with_its_structured_fields() -> None:
    line = JsonFormatter().format(
        record("peer %s refused %s\nsecond line", "192.0.2.1", "x", peer="192.0.2.1", prefix="198.51.100.10/32")
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "peer 192.0.2.1 refused x\nsecond line"
    assert (parsed["level"], parsed["logger"]) == ("warning", "announcer.state")
    assert (parsed["peer"], parsed["prefix"]) == ("192.0.2.1", "198.51.100.10/32")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["time"])
    assert "object" not in parsed  # only the fields the message has


def test_an_exception_is_kept_inside_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in parsed["exception"]


def test_log_format_accepts_text_and_json_and_refuses_the_rest_naming_the_key() -> None:
    assert make_config().log_format == "text"
    assert make_config(log_format="json").log_format == "json"
    with pytest.raises(ConfigError, match=r"test: log_format: "):
        make_config(log_format="xml")


def test_object_problems_and_refusals_carry_the_object_and_the_annotation_as_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    bad = service("web", ["198.51.100.10"], annotations={"bgp.announcer.io/med": "lots"})
    refused = service("api", ["198.51.100.11"], annotations={"bgp.announcer.io/communities": "blackhole"})
    with caplog.at_level(logging.INFO):
        harness.list_everything(bad, refused)
    fields = [
        {key: getattr(item, key) for key in ("object", "field", "annotation", "rule") if hasattr(item, key)}
        for item in caplog.records
        if hasattr(item, "object")
    ]
    assert {"object": "Service default/web", "field": "metadata.annotations[bgp.announcer.io/med]"} in fields
    assert {"object": "Service default/api", "annotation": "communities", "rule": "enabled"} in fields


def test_a_refused_command_names_its_peer_and_prefix(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    prefix = parse_prefix("198.51.100.10/32")
    line = "neighbor 192.0.2.1 announce route 198.51.100.10/32 next-hop self"
    command = Command(line, Action.ANNOUNCE, Family.IPV4, (prefix,), None, (harness.announcer.peers[Family.IPV4][0],))
    with caplog.at_level(logging.INFO):
        harness.announcer._answered(command, accepted=False)
    (logged,) = [item for item in caplog.records if hasattr(item, "peer")]
    assert (logged.peer, logged.prefix) == ("192.0.2.1", "198.51.100.10/32")  # type: ignore[attr-defined]


def test_render_with_log_format_json_writes_only_json_lines_to_stderr(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.json"
    objects = [service("web", ["198.51.100.10"], annotations={"bgp.announcer.io/med": "0"})]
    cluster.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    config = tmp_path / "announcer.yaml"
    config.write_text(yaml.safe_dump({**BASE_CONFIG, "log_format": "json"}))
    result = subprocess.run(
        [sys.executable, "-m", "announcer", "render", "--config", str(config), "--node", "node-a",
         "--from-file", str(cluster), "--output", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("refused by annotations.med.enabled" in line["message"] for line in lines), lines


def test_exabgp_writes_its_own_log_lines_with_a_timestamp(tmp_path: Path) -> None:
    """ExaBGP started with the rendered settings prefixes its lines on stderr with the time and its PID."""
    settings: dict[str, Any] = {
        key.replace(".", "_"): value for key, value in exabgp_environment(make_config()).items()
    }
    conf = tmp_path / "exabgp.conf"
    conf.write_text(
        "neighbor 127.0.0.1 {\n    router-id 192.0.2.11;\n    local-address 127.0.0.1;\n    local-as 64513;\n"
        "    peer-as 64512;\n    connect 1;\n}\n"
    )
    exabgp = Path(sys.executable).parent / "exabgp"
    process = subprocess.Popen(
        [str(exabgp), str(conf)],
        env={**os.environ, **settings, "exabgp_api_cli": "false"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "ExaBGP logged nothing"
    assert all(re.match(rf"\d\d:\d\d:\d\d {process.pid} +\S", line) for line in lines), lines[:5]
