"""E, churn: thousands of Service writes within a second, for the announcer and for the speaker floor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.lab_env import FAMILIES, NODE_ADDRESS, BenchLab, now, prefixes, service_addresses, service_object
from bench.scenarios import FloorControl, full_timeout
from bench.stats import cpu_busy_seconds, sched_seconds


@dataclass(frozen=True)
class ChurnPlan:
    """E's writes: half deletions of Services count-half..count-1, half creations of count..count+half-1."""

    count: int
    deleted: list[int]
    created: list[int]

    @classmethod
    def of(cls, count: int, changes: int) -> ChurnPlan:
        half = min(changes // 2, count)  # deletions are of existing Services: at most count of them
        return cls(count, list(range(count - half, count)), list(range(count, count + half)))

    def operations(self) -> list[tuple[str, int]]:
        """Deletions and creations interleaved."""
        operations: list[tuple[str, int]] = []
        for gone, new in zip(self.deleted, self.created, strict=True):
            operations += [("delete", gone), ("create", new)]
        return operations

    def expected(self) -> dict[str, set[str]]:
        half = len(self.created)
        return {family: set(prefixes(self.count - half, family)) | set(prefixes(half, family, self.count))
                for family in FAMILIES}  # fmt: skip


def _paced(operations: list[tuple[str, int]], spread: float, write: Callable[[str, int], None]) -> float:
    """Write the operations evenly over `spread` seconds; returns the clock at the first write."""
    started = now()
    for number, (action, index) in enumerate(operations):
        delay = started + spread * number / len(operations) - now()
        if delay > 0:
            time.sleep(delay)
        write(action, index)
    return started


def _wait_churn_match(bench: BenchLab, plan: ChurnPlan) -> float | None:
    """The clock at which FRR's counts and sampled prefixes first matched the plan's table, confirmed by the full
    table (a match the full table refutes is dropped and polling goes on); None at timeout."""
    expected = plan.expected()
    samples = {
        "ipv4": ([f"{service_addresses(index)[0]}/32" for index in plan.created[-10:]],
                 [f"{service_addresses(index)[0]}/32" for index in plan.deleted[-10:]]),
        "ipv6": ([f"{service_addresses(index)[1]}/128" for index in plan.created[-10:]],
                 [f"{service_addresses(index)[1]}/128" for index in plan.deleted[-10:]]),
    }  # fmt: skip
    frr = bench.frr()
    deadline = now() + full_timeout(plan.count)
    while now() < deadline:
        bench.daemons.check()
        counts = {family: frr.prefix_counts(family).get(NODE_ADDRESS[family]) for family in FAMILIES}
        if all(counts[family] == len(expected[family]) for family in FAMILIES) and all(
            all(frr.has_prefix(family, prefix) for prefix in present)
            and not any(frr.has_prefix(family, prefix) for prefix in absent)
            for family, (present, absent) in samples.items()
        ):
            matched_at = now()
            if all(set(bench_table(bench, family)) == expected[family] for family in FAMILIES):
                return matched_at
        time.sleep(0.002)
    return None


def _churn_sample(plan: ChurnPlan, started: float, finished: float, matched_at: float | None) -> dict[str, float]:
    result = {"write_seconds": finished - started, "changes": float(2 * len(plan.created))}
    if matched_at is None:
        result["timeout"] = 1.0
    else:
        result["from_first_write"] = matched_at - started
        result["after_last_write"] = matched_at - finished
    return result


class SchedWindow:
    """CPU and run-queue wait of processes from the first write until FRR matched (/proc/PID/task/*/schedstat):
    whether ExaBGP was busy, idle, or waiting for a core while the writes came."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = pids
        self.before = {name: sched_seconds(pid) for name, pid in pids.items()}
        self.machine = cpu_busy_seconds()
        self.bench = time.process_time()  # this process: the stand-in API server, the writes, FRR polling

    def sample(self) -> dict[str, float]:
        result = {
            "machine_cpu": cpu_busy_seconds() - self.machine,
            "bench_cpu": time.process_time() - self.bench,
        }
        for name, pid in self.pids.items():
            running, waiting = sched_seconds(pid)
            result[f"{name}_cpu"] = running - self.before[name][0]
            result[f"{name}_wait"] = waiting - self.before[name][1]
        return result


def churn(bench: BenchLab, count: int, changes: int, spread: float) -> dict[str, float]:
    """With the announcer running and Services 0..count-1 announced: `changes` writes within `spread` seconds
    (half deletions of existing Services, half creations of new ones, interleaved; at most 2*count); seconds
    until FRR holds exactly the API server's prefixes (counts and samples polled, then the full table
    confirmed), from the first write and from the last."""
    plan = ChurnPlan.of(count, changes)
    documents = {index: service_object(index) for index in plan.created}  # built before the clock starts

    def write(action: str, index: int) -> None:
        if action == "delete":
            bench.delete_service(index)
        else:
            bench.apply_object(index, documents[index], variant=False)

    window = SchedWindow(exabgp=bench.exabgp_pid(), announcer=bench.api_pid(timeout=1.0))
    started = _paced(plan.operations(), spread, write)
    finished = now()
    sample = _churn_sample(plan, started, finished, _wait_churn_match(bench, plan))
    return {**sample, **window.sample()}


def _floor_write(control: FloorControl) -> Callable[[str, int], None]:
    def write(action: str, index: int) -> None:
        ipv4, ipv6 = service_addresses(index)
        control.send(f"{'withdraw' if action == 'delete' else 'announce'}* {ipv4}/32 {ipv6}/128\n")

    return write


def churn_floor(control: FloorControl, changes: int, spread: float, undo: bool = True) -> dict[str, float]:
    """E's floor: the same changes as `churn`, each a request to the floor API process holding the same
    prefixes (`withdraw* P4 P6` for a deletion, `announce* P4 P6` for a creation), which writes the requests it
    reads together as bulk lines without waiting for acks; then (undo) the routes are put back as they were."""
    if not control.ready:
        return {"timeout": 1.0}
    plan = ChurnPlan.of(control.count, changes)
    window = SchedWindow(exabgp=control.bench.exabgp_pid())
    started = _paced(plan.operations(), spread, _floor_write(control))
    finished = now()
    sample = _churn_sample(plan, started, finished, _wait_churn_match(control.bench, plan))
    sample.update(window.sample())
    if undo and not undo_churn_floor(control, changes):
        sample["timeout"] = 1.0
    return sample


def undo_churn_floor(control: FloorControl, changes: int) -> bool:
    """Put the floor's routes back as they were before `churn_floor`; whether FRR got back to them in time."""
    plan = ChurnPlan.of(control.count, changes)
    undo = [("create" if action == "delete" else "delete", index) for action, index in plan.operations()]
    _paced(undo, 0.0, _floor_write(control))
    return wait_table(control.bench, control.count)


def wait_table(bench: BenchLab, count: int) -> bool:
    """Whether FRR comes to hold exactly Services 0..count-1's prefixes (full table confirmed) in time."""
    return _wait_churn_match(bench, ChurnPlan(count, [], [])) is not None


def bench_table(bench: BenchLab, family: str) -> list[str]:
    """Every prefix FRR holds from the node in one family (the full, slow table: for checks only)."""
    document = bench.frr().json(f"show bgp {family} unicast json")
    routes = document.get("routes", {}) if isinstance(document, dict) else {}
    return [prefix for prefix, paths in routes.items() if any(path.get("valid") for path in paths)]


def restore_after_churn(bench: BenchLab, count: int) -> None:
    bench.set_services(count)
