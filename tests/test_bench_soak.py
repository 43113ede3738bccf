"""The soak mode: its bookkeeping against a real stand-in (no lab), its verdicts, and one short real soak."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.lab_env import NAMESPACES
from bench.markdown import BEGIN as RESULTS_BEGIN
from bench.markdown import END as RESULTS_END
from bench.markdown import replace_results
from bench.soak import BEGIN, END, SoakResult, render_soak
from bench.soak_model import (
    COMMUNITIES,
    OPT_OUT,
    MemorySample,
    SoakPopulation,
    TableCheck,
    peak_growth,
)
from lab.fakeapi import FakeApiServer
from tests.lab_support import require_lab_prerequisites
from tests.test_bench_teardown import leftovers


def listed_services(api: FakeApiServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{api.url}/api/v1/services", timeout=10) as response:  # noqa: S310  (loopback)
        items: list[dict[str, Any]] = json.load(response)["items"]
    return items


def wanted_from_objects(items: list[dict[str, Any]]) -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
    """What the Services the API server holds ask for, read from the objects themselves: every clusterIP as a
    host prefix unless opted out, and the communities annotation per prefix."""
    table: dict[str, set[str]] = {"ipv4": set(), "ipv6": set()}
    communities: dict[str, dict[str, str]] = {"ipv4": {}, "ipv6": {}}
    for item in items:
        annotations = item["metadata"].get("annotations", {})
        if annotations.get(OPT_OUT) == "true":
            continue
        for address in item["spec"]["clusterIPs"]:
            family, length = ("ipv6", 128) if ":" in address else ("ipv4", 32)
            table[family].add(f"{address}/{length}")
            if COMMUNITIES in annotations:
                communities[family][f"{address}/{length}"] = annotations[COMMUNITIES]
    return table, communities


def test_the_bookkeeping_expects_exactly_what_the_written_services_ask_for() -> None:
    """500 changes written to a real stand-in API server as the soak writes them: the table the soak expects
    FRR to hold is the one the stored Services ask for, every kind of change was made, N stays about constant."""
    size = 60
    population = SoakPopulation(size, seed=3)
    with FakeApiServer() as api:
        for service in population.services.values():
            api.apply(service.object())
        for _ in range(500):
            change = population.next_change()
            if change.service is None:
                assert api.delete("Service", f"bench-{change.index % NAMESPACES:02d}", f"svc-{change.index:05d}")
            else:
                api.apply(change.service.object())
            assert size <= len(population.services) <= size + 1
        items = listed_services(api)
    table, communities = wanted_from_objects(items)
    assert population.expected() == table
    assert population.communities() == communities
    assert len(items) == len(population.services)
    assert sum(population.counts.values()) == 500
    assert set(population.counts) == {"create", "delete", "stack", "opt-out", "communities"}
    assert population.counts["create"] + population.counts["delete"] > 200  # half of the changes, about
    assert len(table["ipv6"]) < len(table["ipv4"]) < size  # single-stack and opted-out Services exist
    assert communities["ipv4"]


def test_the_same_seed_makes_the_same_changes() -> None:
    first, second = SoakPopulation(40, seed=9), SoakPopulation(40, seed=9)
    assert [first.next_change() for _ in range(100)] == [second.next_change() for _ in range(100)]


def test_a_table_check_counts_what_is_missing_and_extra_per_family() -> None:
    expected = {"ipv4": {"198.18.0.1/32", "198.18.0.2/32"}, "ipv6": {"2001:db8:96::1/128"}}
    assert TableCheck.of(expected, {family: set(prefixes) for family, prefixes in expected.items()}).matches
    held = {"ipv4": {"198.18.0.1/32", "198.18.0.9/32"}, "ipv6": {"2001:db8:96::1/128"}}
    check = TableCheck.of(expected, held)
    assert not check.matches
    assert check.missing == {"ipv4": 1, "ipv6": 0}
    assert check.extra == {"ipv4": 1, "ipv6": 0}
    assert check.examples == ["missing 198.18.0.2/32", "extra 198.18.0.9/32"]


def test_peak_growth_counts_from_the_sample_at_the_warmup_to_the_largest_after_it() -> None:
    samples = [
        MemorySample(0.0, 150.0, 150.0, 0.0),  # before the warm-up: not counted, even when larger
        MemorySample(298.0, 100.0, 150.0, 1.0),
        MemorySample(300.0, 100.0, 150.0, 1.0),  # the baseline
        MemorySample(600.0, 104.0, 150.0, 2.0),
        MemorySample(900.0, 103.0, 150.0, 3.0),
    ]
    assert peak_growth(samples, 300.0) == pytest.approx(4.0)
    assert peak_growth(samples, 299.0) == pytest.approx(4.0)
    assert peak_growth(samples[:2], 300.0) != peak_growth(samples[:2], 300.0)  # NaN: no sample after it


def test_the_soak_report_says_mismatch_and_names_the_differences() -> None:
    result = SoakResult(size=200, minutes=1.0, rate=10.0, warmup=30.0)
    result.samples = [MemorySample(0.0, 70.0, 75.0, 1.0), MemorySample(30.0, 70.0, 75.0, 1.5),
                      MemorySample(60.0, 77.0, 77.0, 2.0)]  # fmt: skip
    result.changes = {"created": 150, "deleted": 150, "dual-stack <-> single-stack": 300}
    result.writing_seconds = 60.0
    result.table = TableCheck.of({"ipv4": {"198.18.0.1/32"}, "ipv6": set()}, {"ipv4": set(), "ipv6": set()})
    assert not result.matches
    text = render_soak(result)
    assert "MISMATCH: IPv4 0 held of 1, 1 missing, 0 extra" in text
    assert "missing 198.18.0.1/32" in text
    assert "<= 5 %: MISSED (10.0 %)" in text
    assert "| changes made | 600 in 60 s (10.0/s)" in text


def test_the_soak_section_is_replaced_between_its_own_markers_and_the_table_is_left_alone(tmp_path: Path) -> None:
    document = tmp_path / "BENCHMARKS.md"
    document.write_text(f"# B\n\n{RESULTS_BEGIN}\ntable\n{RESULTS_END}\n\n{BEGIN}\nold soak\n{END}\n\ntail\n")
    replace_results(document, "new soak\n", BEGIN, END)
    assert document.read_text() == f"# B\n\n{RESULTS_BEGIN}\ntable\n{RESULTS_END}\n\n{BEGIN}\nnew soak\n{END}\n\ntail\n"


@pytest.fixture
def world_searchable_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="announcer-bench-soak-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.lab
def test_a_short_real_soak_ends_with_frr_holding_exactly_what_the_services_want(world_searchable_dir: Path) -> None:
    """`python3 -m bench soak` for 12 s at 20 changes/s against 200 Services (the lab, the announcer, FRR): exit
    0, FRR matches, every change made, the announcer sampled, its results in the run directory, nothing left."""
    require_lab_prerequisites()
    command = [sys.executable, "-m", "bench", "--no-renice", "soak", "--minutes", "0.2", "--rate", "20",
               "--size", "200", "--workdir", str(world_searchable_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "at the end FRR holds exactly what the Services want" in done.stdout
    assert ": MATCH" in done.stdout
    document = json.loads((world_searchable_dir / "soak.json").read_text(encoding="utf-8"))
    assert document["matches"] is True
    assert sum(document["changes"].values()) == 240
    assert all(count > 0 for count in document["changes"].values()), document["changes"]
    assert document["table"]["missing"] == {"ipv4": 0, "ipv6": 0}
    assert document["table"]["extra"] == {"ipv4": 0, "ipv6": 0}
    assert document["table"]["held"]["ipv6"] < document["table"]["held"]["ipv4"] <= 201
    assert document["communities_checked"] > 0
    assert len(document["samples"]) >= 6
    assert document["restarts"] == 0
    assert leftovers(world_searchable_dir) == {}
