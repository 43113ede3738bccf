"""The benchmark judges issue 12's goals from the figures of one run (no lab: the figures are given)."""

from __future__ import annotations

import re

from bench.report import MB, goals, issue_20_goals, render, rss_slopes
from bench.scenarios import Latencies
from bench.stats import Series
from bench.suite import SizeResult, SuiteResult


def series(**figures: float) -> Series:
    """Three runs with the given medians (the other two runs one above and one below; counts exact)."""
    result = Series()
    for offset in (-0.01, 0.0, 0.01):
        result.add({key: value + (offset if key != "changes" else 0) for key, value in figures.items()})
    return result


def size_result(size: int, floor: float, announcer: float, cpu: float, hwm_mb: float) -> SizeResult:
    entry = SizeResult(size)
    entry.floor_best = series(exabgp_to_full=floor, api_to_full=floor)
    entry.announcer = series(exabgp_to_full=announcer, api_to_full=announcer, announcer_cpu=cpu,
                             announcer_hwm=hwm_mb * MB)  # fmt: skip
    return entry


def steady(create_ms: float, delete_ms: float) -> Latencies:
    return Latencies(create=[create_ms / 1000] * 100, delete=[delete_ms / 1000] * 100)


def meeting_run() -> SuiteResult:
    """A run meeting every goal: B/A 1.4 at 1k and 1.05 above, 1.2-1.4 CPU s per 10k, RSS 40 + 3.6 MB per 1k."""
    sizes = [
        size_result(1000, 0.6, 0.84, 0.5, 43.6),
        size_result(10_000, 3.5, 3.675, 1.4, 76.0),
        size_result(25_000, 8.7, 9.135, 3.0, 130.0),
        size_result(50_000, 17.0, 17.85, 6.0, 220.0),
    ]
    for entry in sizes:
        entry.steady = steady(6.0, 5.0)
        entry.steady_floor = steady(4.5, 4.0)
    sizes[1].churn = series(after_last_write=0.3, from_first_write=1.3, write_seconds=1.0, changes=5000)
    return SuiteResult(sizes, runs=3, started=0.0, finished=600.0)


def verdicts(lines: list[str]) -> list[str]:
    found = [re.search(r": (MET|MISSED|n/a) \(", line) for line in lines]
    return [match[1] if match else line for match, line in zip(found, lines, strict=True)]


def test_a_run_meeting_every_goal_is_judged_met_on_every_line() -> None:
    lines = goals(meeting_run())
    assert len(lines) == 8
    assert verdicts(lines) == ["MET"] * 8, "\n".join(lines)
    text = "\n".join(lines)
    assert "N=1k 1.40" in text
    assert "N=50k 1.05" in text
    assert "N=10k 1.40 CPU s" in text
    assert "N=50k 1.20 CPU s" in text


def test_each_goal_is_missed_by_the_figure_that_breaks_it() -> None:
    run = meeting_run()
    one_k, ten_k, twenty_five_k, fifty_k = run.sizes
    one_k.announcer = series(exabgp_to_full=0.95, announcer_cpu=0.5, announcer_hwm=43.6 * MB)  # B/A 1.58 at 1k
    fifty_k.announcer = series(exabgp_to_full=19.0, announcer_cpu=8.0, announcer_hwm=240 * MB)  # 1.12, 1.6 CPU s
    ten_k.announcer = series(exabgp_to_full=3.675, announcer_cpu=1.4, announcer_hwm=81 * MB)  # RSS 81 MB
    twenty_five_k.steady = steady(6.0, 6.1)  # delete p99 6.1 ms against the floor's 4.0: x1.53
    ten_k.churn = series(after_last_write=0.6, write_seconds=1.0, changes=5000)
    lines = goals(run)
    assert verdicts(lines) == ["MISSED", "MISSED", "MISSED", "MISSED", "MET", "MISSED", "MISSED", "MISSED"], "\n".join(
        lines
    )
    text = "\n".join(lines)
    assert "N=1k 1.58" in text
    assert "N=50k 1.12" in text
    assert "N=50k 1.60 CPU s" in text
    assert "N=10k 81 MB" in text
    assert "N=25k delete 6.1/4.0 ms = 1.52" in text
    assert "N=10k 0.60 s" in text


def test_rss_growth_per_10k_is_given_between_consecutive_sizes_and_judged_linear_only_within_the_spread() -> None:
    run = meeting_run()
    assert [(label, round(slope, 1)) for label, slope in rss_slopes(run)] == [
        ("1k->10k", 36.0),
        ("10k->25k", 36.0),
        ("25k->50k", 36.0),
    ]
    line = goals(run)[5]
    assert line.startswith("- peak RSS linear in N")
    assert ": MET (" in line
    run.sizes[0].announcer = series(exabgp_to_full=0.84, announcer_cpu=0.5, announcer_hwm=63.6 * MB)
    line = goals(run)[5]
    assert ": MISSED (1k->10k 14 MB, 10k->25k 36 MB, 25k->50k 36 MB; max/min 2.61)" in line


def test_sizes_not_run_are_named_not_judged() -> None:
    run = meeting_run()
    run.sizes = run.sizes[:2]
    text = "\n".join(goals(run))
    assert "not run: N=25k, N=50k" in text
    assert "<= 150 MB at 25k Services: n/a" in text
    assert "n/a (needs three sizes" in text


def test_e_reports_writes_slower_than_asked() -> None:
    run = meeting_run()
    run.sizes[1].churn = series(after_last_write=0.3, write_seconds=1.4, changes=5000)
    line = goals(run)[-1]
    assert "5,000 changes written in 1.40 s, slower than asked" in line


def test_the_table_carries_the_goals_block_and_the_e_figures() -> None:
    text = render(meeting_run())
    assert "Goals (issue 12), judged from this run:" in text
    assert "Targets:" not in text
    assert "| E churn 5,000 changes in 1 s: first write -> FRR matches |" in text
    assert "| E churn: the writes took | - | 1.00 s (0.99-1.01) | - | - |" in text


def family_run(ipv4: tuple[float, float], ipv6: tuple[float, float], e: tuple[float, float]) -> SuiteResult:
    """meeting_run with per-family times (floor, announcer) at every size and E (announcer, floor) at 10k and 25k."""
    run = meeting_run()
    for entry in run.sizes:
        scale = entry.size / 10_000
        entry.floor_best = series(
            exabgp_to_full=ipv6[0] * scale,
            api_to_full=ipv6[0] * scale,
            exabgp_to_full_ipv4=ipv4[0] * scale,
            exabgp_to_full_ipv6=ipv6[0] * scale,
        )
        entry.announcer = series(exabgp_to_full=ipv6[1] * scale, api_to_full=ipv6[1] * scale, announcer_cpu=1.0,
                                 announcer_hwm=60 * MB, exabgp_to_full_ipv4=ipv4[1] * scale,
                                 exabgp_to_full_ipv6=ipv6[1] * scale)  # fmt: skip
    for entry in run.sizes[1:3]:
        entry.churn = series(after_last_write=e[0], from_first_write=1 + e[0], write_seconds=1.0, changes=5000)
        entry.churn_floor = series(after_last_write=e[1], from_first_write=1 + e[1], write_seconds=1.0, changes=5000)
    return run


def test_issue_20_goals_judge_each_family_the_10k_total_and_e_against_its_floor() -> None:
    lines = issue_20_goals(family_run(ipv4=(1.4, 1.5), ipv6=(2.6, 2.8), e=(0.3, 0.25)))
    assert verdicts(lines) == ["MET"] * 4, "\n".join(lines)
    text = "\n".join(lines)
    assert "IPv4" in lines[0] and "N=10k 1.07, N=25k 1.07, N=50k 1.07" in lines[0]
    assert "IPv6" in lines[1] and "N=10k 1.08" in lines[1]
    assert "N=10k 1.08" in lines[2]
    assert "N=10k 0.30/0.25 s = 1.20" in lines[3]
    assert "N=25k 0.30/0.25 s = 1.20 (not judged)" in text


def test_issue_20_goals_are_missed_by_the_family_or_the_burst_that_breaks_them() -> None:
    lines = issue_20_goals(family_run(ipv4=(1.4, 2.8), ipv6=(2.6, 2.8), e=(0.8, 0.25)))
    assert verdicts(lines) == ["MISSED", "MET", "MET", "MISSED"], "\n".join(lines)
    assert "N=10k 2.00" in lines[0]
    assert "N=10k 0.80/0.25 s = 3.20" in lines[3]


def test_the_table_carries_per_family_ratios_e_against_its_floor_and_issue_20_s_goals() -> None:
    text = render(family_run(ipv4=(1.4, 1.5), ipv6=(2.6, 2.8), e=(0.3, 0.25)))
    assert "| B/A IPv4 complete (from ExaBGP start, medians) | 1.07 | 1.07 | 1.07 | 1.07 |" in text
    assert "| B/A IPv6 complete (from ExaBGP start, medians) | 1.08 | 1.08 | 1.08 | 1.08 |" in text
    assert "| E / E floor (last write -> FRR matches, medians) | - | 1.20 | 1.20 | - |" in text
    assert "Goals (issue 20), judged from this run:" in text
