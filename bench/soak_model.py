"""The soak's bookkeeping, no lab: the Services and what each wants announced, the changes, memory samples."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.lab_env import FAMILIES, service_addresses, service_object

ANNOTATION_PREFIX = "bgp.announcer.io/"  # the announcer's default annotation_prefix
OPT_OUT = ANNOTATION_PREFIX + "opt-out"
COMMUNITIES = ANNOTATION_PREFIX + "communities"
COMMUNITY_AS = 64513  # the node's AS, as the upper half of the communities the soak sets
RSS_GROWTH_GOAL = 5.0  # %: peak RSS growth after the warm-up

# What each change does, with its weight: half creations and deletions (alternating, so N stays about
# constant), half modifications that change what FRR must hold (a prefix or its attributes).
CHANGE_WEIGHTS = {
    "create or delete": 10,
    "dual-stack <-> single-stack (IPv6 clusterIP added or removed)": 4,
    "opt-out annotation toggled (both prefixes withdrawn or announced again)": 2,
    "communities annotation changed (both prefixes announced again with new attributes)": 4,
}
KIND_NAMES = {
    "create": "created",
    "delete": "deleted",
    "stack": "dual-stack <-> single-stack",
    "opt-out": "opt-out toggled",
    "communities": "communities changed",
}


@dataclass
class SoakService:
    """One benchmark Service as the soak last wrote it."""

    index: int
    dual_stack: bool = True
    opted_out: bool = False
    community: int | None = None  # the lower half of its one community, when annotated

    def annotations(self) -> dict[str, str]:
        found = {}
        if self.opted_out:
            found[OPT_OUT] = "true"
        if self.community is not None:
            found[COMMUNITIES] = f"{COMMUNITY_AS}:{self.community}"
        return found

    def object(self) -> dict[str, Any]:
        return service_object(self.index, dual_stack=self.dual_stack, annotations=self.annotations())

    def wanted(self) -> dict[str, str]:
        """The host prefix per family this Service must have in FRR (none when opted out)."""
        if self.opted_out:
            return {}
        ipv4, ipv6 = service_addresses(self.index)
        found = {"ipv4": f"{ipv4}/32"}
        if self.dual_stack:
            found["ipv6"] = f"{ipv6}/128"
        return found


@dataclass(frozen=True)
class Change:
    """One write the soak makes: kind (a KIND_NAMES key), the Service's index, and its new state (None: deleted)."""

    kind: str
    index: int
    service: SoakService | None


class _Pool:
    """A set of indices with O(1) add, remove and uniform choice."""

    def __init__(self, indices: range) -> None:
        self.items = list(indices)
        self.positions = {index: position for position, index in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, index: int) -> None:
        self.positions[index] = len(self.items)
        self.items.append(index)

    def remove(self, index: int) -> None:
        position = self.positions.pop(index)
        last = self.items.pop()
        if last != index:
            self.items[position] = last
            self.positions[last] = position

    def choice(self, generator: random.Random) -> int:
        return self.items[generator.randrange(len(self.items))]


class SoakPopulation:
    """Services 0..size-1 to begin with (dual-stack, no annotations, as B seeds them); changes drawn at random
    (seeded) over indices 0..2*size-1; `expected()` is what FRR must hold after the changes made so far."""

    def __init__(self, size: int, seed: int = 12) -> None:
        if size < 2:
            raise ValueError("the soak needs at least 2 Services")
        self.size = size
        self.generator = random.Random(seed)  # noqa: S311  (which change comes next, not cryptography)
        self.services = {index: SoakService(index) for index in range(size)}
        self.present = _Pool(range(size))
        self.absent = _Pool(range(size, 2 * size))
        self.counts: Counter[str] = Counter()
        self._kinds = list(CHANGE_WEIGHTS)
        self._weights = list(CHANGE_WEIGHTS.values())

    def next_change(self) -> Change:
        """Draw the next change and apply it to the bookkeeping; the caller writes it to the API server."""
        drawn = self.generator.choices(self._kinds, self._weights)[0]
        if drawn == "create or delete":
            change = self._create() if len(self.present) <= self.size else self._delete()
        else:
            index = self.present.choice(self.generator)
            service = self.services[index]
            if drawn.startswith("dual-stack"):
                service.dual_stack = not service.dual_stack
                kind = "stack"
            elif drawn.startswith("opt-out"):
                service.opted_out = not service.opted_out
                kind = "opt-out"
            else:
                service.community = self._new_community(service.community)
                kind = "communities"
            change = Change(kind, index, SoakService(**vars(service)))
        self.counts[change.kind] += 1
        return change

    def _new_community(self, current: int | None) -> int:
        while True:
            value = self.generator.randrange(1, 65_536)
            if value != current:
                return value

    def _create(self) -> Change:
        index = self.absent.choice(self.generator)
        self.absent.remove(index)
        self.present.add(index)
        service = self.services[index] = SoakService(index)
        return Change("create", index, SoakService(**vars(service)))

    def _delete(self) -> Change:
        index = self.present.choice(self.generator)
        self.present.remove(index)
        self.absent.add(index)
        del self.services[index]
        return Change("delete", index, None)

    def expected(self) -> dict[str, set[str]]:
        """Every host prefix FRR must hold from the node, per family, and nothing else."""
        table: dict[str, set[str]] = {family: set() for family in FAMILIES}
        for service in self.services.values():
            for family, prefix in service.wanted().items():
                table[family].add(prefix)
        return table

    def communities(self) -> dict[str, dict[str, str]]:
        """Per family, the prefixes whose Service carries a communities annotation, and its community."""
        found: dict[str, dict[str, str]] = {family: {} for family in FAMILIES}
        for service in self.services.values():
            if service.community is None:
                continue
            for family, prefix in service.wanted().items():
                found[family][prefix] = f"{COMMUNITY_AS}:{service.community}"
        return found


@dataclass(frozen=True)
class MemorySample:
    """The announcer at one moment of the soak: seconds since the first change, VmRSS and VmHWM (MiB), CPU s."""

    at: float
    rss_mib: float
    hwm_mib: float
    cpu_s: float


@dataclass
class TableCheck:
    """FRR's table against the expected one, per family: counts, and what is missing or extra."""

    expected: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, expected: dict[str, set[str]], held: dict[str, set[str]]) -> TableCheck:
        check = cls()
        for family in FAMILIES:
            want, have = expected.get(family, set()), held.get(family, set())
            check.expected[family], check.held[family] = len(want), len(have)
            missing, extra = sorted(want - have), sorted(have - want)
            check.missing[family], check.extra[family] = len(missing), len(extra)
            check.examples += [f"missing {prefix}" for prefix in missing[:3]]
            check.examples += [f"extra {prefix}" for prefix in extra[:3]]
        return check

    @property
    def matches(self) -> bool:
        return not any(self.missing.values()) and not any(self.extra.values())


def warmup_sample(samples: list[MemorySample], warmup: float) -> MemorySample | None:
    """The first sample taken at or after the warm-up (seconds into the soak)."""
    return next((sample for sample in samples if sample.at >= warmup), None)


def peak_growth(samples: list[MemorySample], warmup: float) -> float:
    """Peak RSS growth after the warm-up in %: the largest VmRSS sampled from the warm-up on, over the VmRSS
    sampled at the warm-up (NaN without a sample at or after it)."""
    baseline = warmup_sample(samples, warmup)
    if baseline is None or baseline.rss_mib <= 0:
        return math.nan
    peak = max(sample.rss_mib for sample in samples if sample.at >= baseline.at)
    return 100.0 * (peak - baseline.rss_mib) / baseline.rss_mib
