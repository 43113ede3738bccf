"""ExaBGP's side of the pipe for integration tests: runs `announcer run`, records commands, answers acks."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab.lab import kubeconfig_text

# The configuration of the process tests: two IPv4 peers and one IPv6 peer, fast watch timeouts and backoff.
V4_PEERS = ("192.0.2.1", "192.0.2.5")
V6_PEER = "2001:db8::1"
CONFIG: dict[str, Any] = {
    "node_name": "node-a",
    "bgp": {
        "local_as": 64513,
        "router_id": "192.0.2.11",
        "peers": [{"address": address, "peer_as": 64512} for address in (*V4_PEERS, V6_PEER)],
    },
    "announce": {"external_ips": {"enabled": True, "allowlist": ["198.51.100.64/26"]}},
    "watch": {"watch_timeout": 5, "request_timeout": 3, "backoff_initial": 0.05, "backoff_max": 0.4},
    "speaker": {"batch_delay": 0.005},
}

# What the announcer writes at start-up besides routes: the synchronisation, then its two reads of ExaBGP's state.
START_UP_LINES = ("reset", "version", "show adj-rib out extensive", "show neighbor summary")

_SELECTOR = re.compile(r"^((?:neighbor \S+(?: , )?)+) (announce|withdraw) (route|attributes) (.*)$")


class ExaBgpDouble:
    """Plays ExaBGP: starts the announcer as its API process, keeps each neighbour's adj-rib-out from the
    commands it reads, and answers 'done' (or 'error' for lines it cannot parse, as ExaBGP does)."""

    def __init__(
        self,
        tmp: Path,
        api_url: str,
        config: dict[str, Any],
        *,
        held: list[str] | None = None,
        ack_delay: float = 0.0,
        refuse: Callable[[str], bool] | None = None,
        stale: list[str] | None = None,
        unanswered: Callable[[str], bool] | None = None,
        in_order_delay: float = 0.0,
        eor_refused_at_once: bool = False,
        unready: set[str] | None = None,
        kubeconfig: str | None = None,
        command: list[str] | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config_path = tmp / "announcer.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        # The stand-in's plain-HTTP kubeconfig for api_url, unless one is given (the real API server's, with a token)
        (tmp / "kubeconfig").write_text(kubeconfig_text(api_url) if kubeconfig is None else kubeconfig)
        self.held = held or []
        self.ack_delay = ack_delay
        self.refuse = refuse  # lines answered 'error', as ExaBGP does for what it cannot take yet
        # Answers of commands a previous announcer process left queued in ExaBGP: ExaBGP writes them to the new
        # process before its first answer, and again just after an answer given at once ('version'), unless
        # 'reset' dropped them (ExaBGP respawns the process without clearing its queue).
        self.stale = list(stale or [])
        self.unanswered = unanswered  # lines applied but never answered (an answer lost, or ExaBGP stuck)
        # ExaBGP answers route lines once it has applied them, a while after reading them (in_order_delay s),
        # but 'announce eor' naming only peers not established at once, ahead of those (eor_refused_at_once).
        self.in_order_delay = in_order_delay
        self.eor_refused_at_once = eor_refused_at_once
        # Neighbours whose local address ExaBGP does not know ('local-address auto', never connected): a line naming
        # them is applied route by route, neighbour by neighbour in configuration order, up to the first of them,
        # then answered 'error' (tests/test_exabgp_peers.py shows the real ExaBGP doing so). A test may change it.
        self.unready = set(unready or ())
        # Each neighbour's state as 'show neighbor summary' prints it (established, active, ...); absent: idle.
        self.sessions: dict[str, str] = {}
        self.wedged = False  # a test sets it: from then on ExaBGP reads every line and neither applies nor answers any
        # How the announcer is started: `announcer run` (python -m) unless a test gives its own argv, to which
        # `run --config <path>` is appended.
        self.command = command or [sys.executable, "-m", "announcer"]
        self.environment = dict(environment or {})  # the announcer's, over this process's (POD_NAME, ...)
        self.configuration_order = [str(peer["address"]) for peer in config["bgp"]["peers"]]
        self._held_back: list[str] = []
        self.lines: list[str] = []
        self.rib: dict[str, dict[str, str]] = {}  # neighbour -> prefix -> attribute words
        self.errors: list[str] = []
        self._lock = threading.Condition()
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_path = tmp / "announcer.stderr"
        self._reader: threading.Thread | None = None

    def start(self) -> ExaBgpDouble:
        environment = {**os.environ, "KUBECONFIG": str(self.tmp / "kubeconfig"), **self.environment}
        self._stderr_file = self.stderr_path.open("wb")
        environment.pop("NODE_NAME", None)
        self.process = subprocess.Popen(
            [*self.command, "run", "--config", str(self.config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=environment,
        )
        self._reader = threading.Thread(target=self._serve, daemon=True)
        self._reader.start()
        return self

    def _answer(self, text: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(text.encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def _serve(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self._lock:
            for stale in self.stale[: len(self.stale) // 2]:
                self._answer(stale)
            self.stale = self.stale[len(self.stale) // 2 :]
        for raw in self.process.stdout:
            line = raw.decode("ascii").rstrip("\n")
            if self.ack_delay:
                time.sleep(self.ack_delay)
            with self._lock:
                self.lines.append(line)
                self._serve_line(line)
                self._lock.notify_all()

    def _serve_line(self, line: str) -> None:
        """Answer one command as ExaBGP does (lock held)."""
        if self.wedged:
            return
        if line == "reset":
            self.stale, self._held_back = [], []  # drops the queued commands, answers nothing
            return
        if line == "version":  # answered at once, ahead of the queued commands
            self._answer("exabgp 5.0.15")
            self._answer("done")
            self._answer_stale()
            return
        if self.eor_refused_at_once and " announce eor " in line:  # no established peer: 'error' at once
            self.errors.append(line)
            self._answer("error")
            return
        self._answer_stale()  # answered in order: after what was queued before
        for text in self._answers_in_order(line):
            if not self.in_order_delay:
                self._answer(text)
                continue
            self._held_back.append(text)
            if len(self._held_back) == 1:
                threading.Timer(self.in_order_delay, self._release_held_back).start()

    def _answers_in_order(self, line: str) -> list[str]:
        if line == "show adj-rib out extensive":
            return [*self.held, "done"]
        if line == "show neighbor summary":  # as ExaBGP 5.0.15 (bgp/neighbor.py summary_header, summary)
            rows = [
                f"{peer:<15} {'64512':<7} {'down':>9} {self.sessions.get(peer, 'idle'):<12} {0:>10} {0:>10}"
                for peer in self.configuration_order
            ]
            return ["Peer            AS        up/down state       |     #sent     #recvd", *rows, "done"]
        if self.unanswered is not None and self.unanswered(line):
            self._apply(line)
            return []
        if self.refuse is not None and self.refuse(line):
            self.errors.append(line)
            return ["error"]
        if self._apply(line) or " announce eor " in line:
            return ["done"]
        self.errors.append(line)
        return ["error"]

    def _release_held_back(self) -> None:
        with self._lock:
            for text in self._held_back:
                self._answer(text)
            self._held_back = []
            self._lock.notify_all()

    def _answer_stale(self) -> None:
        """The answers of a previous process's queued commands, ahead of this command's (lock held)."""
        for stale in self.stale:
            self._answer(stale)
        self.stale = []

    def _apply(self, line: str) -> bool:
        match = _SELECTOR.match(line)
        if match is None:
            return False
        neighbours = [part.split()[1] for part in match[1].split(" , ")]
        action, form, rest = match[2], match[3], match[4]
        if form == "route":
            prefix, _, words = rest.partition(" ")
            prefixes = [prefix]
        else:
            words, _, nlri = rest.partition(" nlri ")
            prefixes = nlri.split()
        named = [neighbour for neighbour in self.configuration_order if neighbour in neighbours]
        for prefix in prefixes:
            ipaddress.ip_network(prefix)
            for neighbour in named:
                if neighbour in self.unready and "next-hop self" in words:
                    return False  # 'next-hop self' cannot be resolved: ExaBGP stops the line here
                table = self.rib.setdefault(neighbour, {})
                if action == "announce":
                    table[prefix] = words
                else:
                    table.pop(prefix, None)
        return True

    def tell(self, line: str) -> None:
        """Write an unsolicited line to the announcer, as ExaBGP does for neighbour events."""
        with self._lock:
            self._answer(line)

    # --- assertions helpers ------------------------------------------------------------------------------
    def prefixes(self, neighbour: str) -> set[str]:
        with self._lock:
            return set(self.rib.get(neighbour, {}))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; commands seen: {self.lines[-10:]}\n"
                                         f"stderr: {self.stderr()[-3000:]}")  # fmt: skip
                self._lock.wait(min(remaining, 0.1))

    def wait_quiet(self, seconds: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until no command has come for `seconds`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(self.lines)
            time.sleep(seconds)
            if len(self.lines) == count:
                return
        raise AssertionError("the announcer never went quiet")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, number: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(number)
        return self.process.wait(timeout=15)

    def close_stdin(self) -> int:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                # An answer still buffered for the killed process cannot be flushed (EPIPE): the stream closes anyway,
                # and so must every other one, or their ResourceWarnings surface in a later test.
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._stderr_file.close()
