"""Network namespaces, links and addresses, and PID-tracked processes recorded in a state file for cleanup."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/announcer-lab")
COMMAND_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class LabCommandError(RuntimeError):
    """A lab command (ip, vtysh, sysctl) failed; the message holds its output."""


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """The argument vector that runs argv inside netns (unchanged for the root namespace)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command (inside netns when given) and return its captured output."""
    full_argv = netns_argv(netns, argv)
    completed = subprocess.run(
        full_argv, capture_output=True, text=True, timeout=timeout, check=False, env=None if env is None else dict(env)
    )
    if check and completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()
        raise LabCommandError(f"{' '.join(full_argv)}: exit {completed.returncode}: {output}")
    return completed


def ip(*arguments: str, netns: str | None = None, check: bool = True) -> str:
    """Run `ip [-n netns] arguments...` and return its standard output."""
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, *arguments], check=check).stdout


# Namespaces


def list_namespaces() -> list[str]:
    """Names of every named network namespace."""
    output = run(["ip", "-json", "netns", "list"]).stdout.strip()
    if not output:
        return []
    return [str(entry["name"]) for entry in json.loads(output)]


def namespace_exists(name: str) -> bool:
    """Whether a named network namespace exists."""
    return name in list_namespaces()


def create_namespace(name: str) -> None:
    """Create a named network namespace with its loopback up."""
    run(["ip", "netns", "add", name])
    ip("link", "set", "lo", "up", netns=name)


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes living in a named network namespace."""
    completed = run(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in completed.stdout.split() if word.isdigit()]


def delete_namespace(name: str) -> None:
    """Stop every process inside a named namespace (by PID), then delete the namespace."""
    pids = namespace_pids(name)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if is_alive(pid):
            log.warning("process %d in namespace %s ignored SIGTERM; sending SIGKILL", pid, name)
            _signal(pid, signal.SIGKILL)
    for pid in pids:
        wait_for_exit(pid, STOP_TIMEOUT)
    run(["ip", "netns", "delete", name], check=False)


def sysctl(netns: str | None, key: str, value: str) -> None:
    """Set a sysctl (inside netns when given)."""
    run(["sysctl", "-qw", f"{key}={value}"], netns=netns)


# Links and addresses


def add_bridge(netns: str, name: str) -> None:
    """Create a bridge (no STP, so ports forward at once) and bring it up."""
    ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=netns)
    ip("link", "set", name, "up", netns=netns)


def add_veth_pair(name: str, netns: str | None, peer_name: str, peer_netns: str) -> None:
    """Create a veth pair with each end directly in its namespace (name in the root one when netns is None)."""
    arguments = ["link", "add", name]
    if netns:
        arguments += ["netns", netns]
    ip(*arguments, "type", "veth", "peer", "name", peer_name, "netns", peer_netns)


def attach_to_bridge(netns: str, link: str, bridge: str) -> None:
    """Make link a port of bridge and bring it up."""
    ip("link", "set", link, "master", bridge, "up", netns=netns)


def link_up(netns: str | None, link: str) -> None:
    """Bring a link up."""
    ip("link", "set", link, "up", netns=netns)


def add_address(netns: str | None, link: str, cidr: str, *, prefix_route: bool = True) -> None:
    """Add an address; IPv6 ones skip duplicate address detection (nodad) so they are usable at once."""
    arguments = ["address", "add", cidr, "dev", link]
    if ":" in cidr:
        arguments.append("nodad")
    if not prefix_route:
        arguments.append("noprefixroute")
    ip(*(["-6"] if ":" in cidr else []), *arguments, netns=netns)


def links_with_prefix(prefix: str, netns: str | None = None) -> list[str]:
    """Names of the links whose name starts with prefix."""
    output = ip("-json", "link", "show", netns=netns).strip()
    names = [str(entry["ifname"]) for entry in json.loads(output)] if output else []
    return [name for name in names if name.startswith(prefix)]


def delete_link(name: str, netns: str | None = None) -> None:
    """Delete a link if it exists (a veth takes its peer with it)."""
    ip("link", "delete", name, netns=netns, check=False)


def addresses_json(netns: str | None = None) -> list[dict[str, Any]]:
    """`ip -json address show`: one entry per link with its addr_info list."""
    output = ip("-json", "address", "show", netns=netns).strip()
    entries: list[dict[str, Any]] = json.loads(output) if output else []
    return entries


def routes_json(netns: str | None = None) -> list[dict[str, Any]]:
    """Every IPv4 and IPv6 route of every table (`ip -json route show table all`), each with its "family"."""
    routes: list[dict[str, Any]] = []
    for family in ("inet", "inet6"):
        output = ip("-json", "-family", family, "route", "show", "table", "all", netns=netns).strip()
        routes += [{**route, "family": family} for route in (json.loads(output) if output else [])]
    return routes


def root_uses_of_network(network: str, link: str) -> list[str]:
    """Root-namespace addresses and routes overlapping network on links other than link, described."""
    wanted = ipaddress.ip_network(network)
    uses: list[str] = []
    for entry in addresses_json():
        for info in entry.get("addr_info", []):
            if entry.get("ifname") == link or "local" not in info:
                continue
            held = ipaddress.ip_interface(f"{info['local']}/{info.get('prefixlen', 128)}").network
            if held.version == wanted.version and held.overlaps(wanted):
                uses.append(f"address {info['local']}/{info.get('prefixlen')} on {entry.get('ifname')}")
    for route in routes_json():
        destination = str(route.get("dst", "default"))
        if route.get("dev") == link or destination == "default":
            continue
        routed = ipaddress.ip_network(destination, strict=False)
        if routed.version == wanted.version and routed.overlaps(wanted):
            uses.append(f"route {destination} dev {route.get('dev')}")
    return uses


# Processes


_children: dict[int, subprocess.Popen[bytes]] = {}
_exit_codes: dict[int, int] = {}  # of our own children once reaped (negative: killed by that signal)


@dataclass(frozen=True)
class ProcessRecord:
    """A process the lab started: enough to find it again after a crash and not kill a reused PID."""

    name: str
    pid: int
    start_time: int
    netns: str | None
    argv: list[str]
    log_path: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            netns=None if data.get("netns") is None else str(data["netns"]),
            argv=[str(word) for word in data.get("argv", [])],
            log_path=str(data.get("log_path", "")),
        )


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return text[text.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it does not exist)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(pid: int) -> bool:
    """Whether pid runs (a zombie counts as exited; our own children are reaped)."""
    child = _children.get(pid)
    if child is not None:
        code = child.poll()
        if code is None:
            return True
        _exit_codes[pid] = code
        _children.pop(pid, None)
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def exit_code(pid: int) -> int | None:
    """The exit status of a child started here that has exited (negative: the signal), None if unknown."""
    is_alive(pid)
    return _exit_codes.get(pid)


def is_same_process(record: ProcessRecord) -> bool:
    """Whether the record's PID still names the process the lab started (not a reused PID)."""
    return is_alive(record.pid) and process_start_time(record.pid) == record.start_time


def children_of(pid: int) -> list[int]:
    """Direct children of pid, from /proc/PID/task/*/children."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(word) for word in (task / "children").read_text(encoding="utf-8").split()]
    return sorted(set(found))


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait (bounded) until pid has exited; True when it has."""
    child = _children.get(pid)
    if child is not None:
        try:
            _exit_codes[pid] = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def log_tail(path: str | Path, lines: int = 30) -> str:
    """The last lines of a log file, for an error message ('(no log)' when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Given a process record that exited, start it again and return the new record; raises when it must not be restarted.
Restart = Callable[[ProcessRecord], ProcessRecord]


def restarter(start: Restart, *, limit: int, delay: float = 1.0) -> Restart:
    """A Restart that starts a process again up to limit times per name, delay seconds after it exited (systemd's
    Restart=always with RestartSec and a start limit); past the limit it raises with the last run's log."""
    exits: dict[str, int] = {}

    def restart(record: ProcessRecord) -> ProcessRecord:
        exits[record.name] = exits.get(record.name, 0) + 1
        tail = log_tail(record.log_path)
        if exits[record.name] > limit:
            raise RuntimeError(f"{record.name} exited {exits[record.name]} times; its log {record.log_path}:\n{tail}")
        log.warning("%s exited (exit %d of %d allowed); starting it again; the end of its log:\n%s",
                    record.name, exits[record.name], limit, tail)  # fmt: skip
        time.sleep(delay)
        return start(record)

    return restart


def wait_started(
    what: str,
    ready: Callable[[], bool],
    records: Iterable[ProcessRecord],
    timeout: float,
    *,
    interval: float = 0.1,
    log_path: str | Path | None = None,
    restart: Restart | None = None,
) -> None:
    """Poll ready() until it holds. When one of records exits meanwhile, fail with its log, or with restart, start it
    again (restart raises once it gives up); at timeout, fail with the tail of log_path (default: the first record's
    log)."""
    records = list(records)
    deadline = time.monotonic() + timeout
    while not ready():
        for index, record in enumerate(records):
            if is_same_process(record):
                continue
            if restart is None:
                raise RuntimeError(
                    f"{what}: {record.name} exited; its log {record.log_path}:\n{log_tail(record.log_path)}"
                )
            try:
                records[index] = restart(record)
            except RuntimeError as error:
                raise RuntimeError(f"{what}: {error}") from None
        if time.monotonic() > deadline:
            shown = log_path if log_path is not None else records[0].log_path if records else None
            tail = f"; its log {shown}:\n{log_tail(shown)}" if shown is not None else ""
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s{tail}")
        time.sleep(interval)


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


_PR_SET_PDEATHSIG = 1


def _kill_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent thread dies (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    netns: str | None,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> ProcessRecord:
    """Start a long-running process (inside netns) in its own session, output appended to log_path; with
    die_with_parent, the kernel kills it when the thread that started it dies (SIGKILLed test runs included)."""
    full_argv = netns_argv(netns, argv)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        child = subprocess.Popen(
            full_argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group: Ctrl-C on the terminal does not reach it
            preexec_fn=_kill_with_parent if die_with_parent else None,  # noqa: PLW1509  (prctl only, no locks)
        )
    _children[child.pid] = child
    start_time = process_start_time(child.pid)
    if start_time is None:  # it died at once; keep a record that never matches a live process
        start_time = -1
    record = ProcessRecord(name, child.pid, start_time, netns, list(full_argv), str(log_path))
    log.debug("started %s as PID %d: %s", name, child.pid, " ".join(full_argv))
    return record


def signal_process(record: ProcessRecord, signum: int) -> bool:
    """Send signum to the recorded process if it is still that process; True when sent."""
    if not is_same_process(record):
        return False
    return _signal(record.pid, signum)


def stop_process(record: ProcessRecord, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the recorded process, wait (bounded), then SIGKILL it and whatever is left of its group."""
    if not is_same_process(record):
        _children.pop(record.pid, None)
        return
    leftovers = children_of(record.pid)
    _signal(record.pid, signal.SIGTERM)
    if not wait_for_exit(record.pid, timeout):
        log.warning("%s (PID %d) ignored SIGTERM for %.1f s; sending SIGKILL", record.name, record.pid, timeout)
        leftovers = sorted({*leftovers, *children_of(record.pid)})
        _signal(record.pid, signal.SIGKILL)
        wait_for_exit(record.pid, timeout)
    for pid in leftovers:
        if is_alive(pid):
            _signal(pid, signal.SIGKILL)
            wait_for_exit(pid, timeout)


# State file


@dataclass
class LabState:
    """What a lab instance created, saved after every change so `down` can clean up after a crash."""

    prefix: str
    path: Path
    run_dir: str = ""
    owner_pid: int = field(default_factory=os.getpid)
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def for_prefix(cls, prefix: str, state_dir: Path = STATE_DIR) -> LabState:
        """A fresh state for prefix, stored in state_dir."""
        return cls(prefix=prefix, path=state_dir / f"{prefix.rstrip('-') or 'lab'}.json")

    @classmethod
    def load(cls, path: Path) -> LabState:
        """Read a saved state."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            prefix=str(data["prefix"]),
            path=path,
            run_dir=str(data.get("run_dir", "")),
            owner_pid=int(data.get("owner_pid", 0)),
            namespaces=[str(name) for name in data.get("namespaces", [])],
            root_links=[str(name) for name in data.get("root_links", [])],
            processes=[ProcessRecord.from_json(entry) for entry in data.get("processes", [])],
        )

    def save(self) -> None:
        """Write the state atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "prefix": self.prefix,
            "run_dir": self.run_dir,
            "owner_pid": self.owner_pid,
            "namespaces": self.namespaces,
            "root_links": self.root_links,
            "processes": [asdict(record) for record in self.processes],
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.path)

    def add_namespace(self, name: str) -> None:
        self.namespaces.append(name)
        self.save()

    def add_root_link(self, name: str) -> None:
        self.root_links.append(name)
        self.save()

    def add_process(self, record: ProcessRecord) -> None:
        self.processes.append(record)
        self.save()

    def remove_process(self, record: ProcessRecord) -> None:
        self.processes = [entry for entry in self.processes if entry.pid != record.pid]
        self.save()

    def remove(self) -> None:
        """Delete the state file."""
        self.path.unlink(missing_ok=True)


def saved_states(state_dir: Path = STATE_DIR) -> list[LabState]:
    """Every readable state file in state_dir."""
    states: list[LabState] = []
    if not state_dir.is_dir():
        return states
    for path in sorted(state_dir.glob("*.json")):
        try:
            states.append(LabState.load(path))
        except (OSError, ValueError, KeyError) as error:
            log.warning("ignoring unreadable state file %s: %s", path, error)
    return states


def teardown(state: LabState | None, prefix: str | None = None) -> list[str]:
    """Stop recorded processes, then everything in the namespaces, delete them and root links; returns notes."""
    notes: list[str] = []
    if state is not None:
        for record in reversed(state.processes):
            if is_same_process(record):
                notes.append(f"stopped {record.name} (PID {record.pid})")
            stop_process(record)
        state.processes = []
    namespaces = list(state.namespaces) if state is not None else []
    links = list(state.root_links) if state is not None else []
    if prefix:
        existing = list_namespaces()
        namespaces += [name for name in existing if name.startswith(prefix) and name not in namespaces]
        links += [name for name in links_with_prefix(prefix) if name not in links]
    still_there = set(list_namespaces())
    for name in namespaces:
        if name in still_there:
            for pid in namespace_pids(name):
                notes.append(f"stopped PID {pid} in namespace {name}")
            delete_namespace(name)
            notes.append(f"deleted namespace {name}")
    for name in links:
        if name in links_with_prefix(name):
            delete_link(name)
            notes.append(f"deleted link {name}")
    if state is not None:
        state.namespaces = []
        state.root_links = []
        state.remove()
    return notes
