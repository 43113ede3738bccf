"""The one table: every figure per size, the ratios within the run, and each target met or missed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.settings import ANNOUNCER_BEST, FLOOR_BEST, FLOOR_DEFAULT
from bench.stats import Series, Summary, percentile
from bench.suite import SizeResult, SuiteResult

MB = 1_000_000 / (1024 * 1024)  # MiB per MB: VmHWM is in KiB, targets are in MB


def _size_label(size: int) -> str:
    return f"N={size // 1000}k" if size % 1000 == 0 else f"N={size}"


def _summary_text(summary: Summary | None, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
    if summary is None:
        return "-"
    scaled = Summary(summary.median * scale, summary.low * scale, summary.high * scale, summary.count)
    return scaled.text(unit, digits)


def _cell(series: Series, key: str, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
    if any("timeout" in run for run in series.runs):
        timeouts = sum(1 for run in series.runs if "timeout" in run)
        text = _summary_text(series.summary(key), scale, unit, digits)
        return f"{text} [{timeouts} timed out]"
    return _summary_text(series.summary(key), scale, unit, digits)


def _ratio(numerator: Series, denominator: Series, key_n: str, key_d: str) -> float:
    top, bottom = numerator.median(key_n), denominator.median(key_d)
    return top / bottom if bottom and not math.isnan(bottom) else math.nan


def _ratio_text(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _percentiles(values: list[float] | None) -> str:
    if not values:
        return "-"
    return "/".join(f"{percentile(values, fraction) * 1000:.1f}" for fraction in (0.5, 0.95, 0.99)) + " ms"


@dataclass(frozen=True)
class Row:
    label: str
    cell: Callable[[SizeResult], str]


def _rows(result: SuiteResult) -> list[Row]:
    rows = [
        Row("A floor, fastest: ExaBGP start -> FRR holds all", lambda s: _cell(s.floor_best, "exabgp_to_full")),
        Row("A floor, fastest: API process start -> FRR holds all", lambda s: _cell(s.floor_best, "api_to_full")),
        Row("A floor, fastest: IPv4 / IPv6 complete (from ExaBGP start)",
            lambda s: f"{_cell(s.floor_best, 'exabgp_to_full_ipv4')} / {_cell(s.floor_best, 'exabgp_to_full_ipv6')}"),
        Row("A floor, 500/line + ExaBGP defaults: ExaBGP start -> all",
            lambda s: _cell(s.floor_default, "exabgp_to_full")),
        Row("B announcer: ExaBGP start -> FRR holds all", lambda s: _cell(s.announcer, "exabgp_to_full")),
        Row("B announcer: API process start -> FRR holds all", lambda s: _cell(s.announcer, "api_to_full")),
        Row("B announcer: IPv4 / IPv6 complete (from ExaBGP start)",
            lambda s: f"{_cell(s.announcer, 'exabgp_to_full_ipv4')} / {_cell(s.announcer, 'exabgp_to_full_ipv6')}"),
        Row("B announcer log: process start -> Services listed", lambda s: _cell(s.announcer, "api_to_listed")),
        Row("B announcer log: process start -> first sync planned", lambda s: _cell(s.announcer, "api_to_first_sync")),
        Row("B announcer, shipped defaults: ExaBGP start -> all",
            lambda s: _cell(s.announcer_shipped, "exabgp_to_full")),
        Row("B/A (ExaBGP start -> all, medians)",
            lambda s: _ratio_text(_ratio(s.announcer, s.floor_best, "exabgp_to_full", "exabgp_to_full"))),
        Row("B/A (API process start -> all, medians)",
            lambda s: _ratio_text(_ratio(s.announcer, s.floor_best, "api_to_full", "api_to_full"))),
    ]  # fmt: skip
    if result.bird_missing is not None:
        rows.append(Row("C BIRD 1.6", lambda s: f"not measured: {result.bird_missing}"))
    else:
        rows += [
            Row("C BIRD: birdc configure -> FRR holds all", lambda s: _cell(s.bird, "configure_to_full")),
            Row("C BIRD: cold start -> FRR holds all", lambda s: _cell(s.bird, "cold_to_full")),
            Row("B/C (cold starts: ExaBGP start vs BIRD start)",
                lambda s: _ratio_text(_ratio(s.announcer, s.bird, "exabgp_to_full", "cold_to_full"))),
            Row("B/C (B from ExaBGP start vs birdc configure)",
                lambda s: _ratio_text(_ratio(s.announcer, s.bird, "exabgp_to_full", "configure_to_full"))),
        ]  # fmt: skip
    rows += [
        Row("D announcer: create -> both prefixes in FRR, p50/p95/p99",
            lambda s: _percentiles(s.steady.create if s.steady else None) + _lost(s.steady)),
        Row("D announcer: delete -> both gone from FRR, p50/p95/p99",
            lambda s: _percentiles(s.steady.delete if s.steady else None)),
        Row("D floor (ExaBGP alone, 1 route per family): announce p50/p95/p99",
            lambda s: _percentiles(s.steady_floor.create if s.steady_floor else None) + _lost(s.steady_floor)),
        Row("D floor: withdraw p50/p95/p99",
            lambda s: _percentiles(s.steady_floor.delete if s.steady_floor else None)),
        Row("E churn 1000 changes in 1 s: first write -> FRR matches", lambda s: _cell(s.churn, "from_first_write")),
        Row("E churn: last write -> FRR matches", lambda s: _cell(s.churn, "after_last_write")),
        Row("F announcer peak RSS (VmHWM) during B", lambda s: _cell(s.announcer, "announcer_hwm", 1 / MB, "MB", 0)),
        Row("F peak RSS growth per 10k Services (from the smallest N)", lambda s: _rss_growth(result, s)),
        Row("F announcer CPU during B", lambda s: _cell(s.announcer, "announcer_cpu", unit="CPU s")),
        Row("F announcer CPU per 10k Services",
            lambda s: _cell(s.announcer, "announcer_cpu", 10_000 / s.size, "CPU s")),
        Row("F ExaBGP CPU during B / during A (medians)",
            lambda s: f"{s.announcer.median('exabgp_cpu'):.2f} / {s.floor_best.median('exabgp_cpu'):.2f} CPU s"),
        Row("stand-in API server CPU during B (in the benchmark's process) / its share of all three",
            lambda s: f"{_cell(s.announcer, 'standin_cpu', unit='CPU s')} / {_share(s.announcer)}"),
        Row("UPDATEs FRR received, IPv4 / IPv6 (B; BIRD cold start)",
            lambda s: f"{s.announcer.median('updates_ipv4'):.0f} / {s.announcer.median('updates_ipv6'):.0f}; "
            f"{s.bird.median('updates_ipv4'):.0f} / {s.bird.median('updates_ipv6'):.0f}"),
        Row("other processes' CPU during each B run (machine noise, approximate)",
            lambda s: _cell(s.announcer, "background_cpu", unit="CPU s")),
    ]  # fmt: skip
    return rows


def _share(series: Series) -> str:
    """The stand-in API server's CPU as a share of its, the announcer's and ExaBGP's together (medians)."""
    standin = series.median("standin_cpu")
    total = standin + series.median("announcer_cpu") + series.median("exabgp_cpu")
    return "-" if math.isnan(total) or not total else f"{100 * standin / total:.1f} %"


def _rss_growth(result: SuiteResult, entry: SizeResult) -> str:
    smallest = result.sizes[0]
    if entry.size == smallest.size:
        return "-"
    grown = entry.announcer.median("announcer_hwm") - smallest.announcer.median("announcer_hwm")
    per_10k = grown / MB / ((entry.size - smallest.size) / 10_000)
    return "-" if math.isnan(per_10k) else f"{per_10k:.0f} MB"


def _lost(latencies: object) -> str:
    lost = getattr(latencies, "lost", 0)
    return f" [{lost} lost]" if lost else ""


def _find(result: SuiteResult, size: int) -> SizeResult | None:
    return next((entry for entry in result.sizes if entry.size == size), None)


def _targets(result: SuiteResult) -> list[str]:
    lines: list[str] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    ten, twenty_five = _find(result, 10_000), _find(result, 25_000)
    for entry, size, bound in ((ten, 10_000, 2.0), (twenty_five, 25_000, 5.0)):
        want = f"B {2 * size} prefixes ({size // 1000}k Services) in FRR within {bound:.0f} s (from ExaBGP start)"
        if entry is None:
            lines.append(f"- {want}: n/a (size not run)")
            continue
        value = entry.announcer.median("exabgp_to_full")
        lines.append(f"- {want}: {verdict(value <= bound)} ({value:.2f} s)")
    ratios = [(entry.size, _ratio(entry.announcer, entry.floor_best, "exabgp_to_full", "exabgp_to_full"))
              for entry in result.sizes]  # fmt: skip
    shown = ", ".join(f"{_size_label(size)} {ratio:.2f}" for size, ratio in ratios)
    lines.append(f"- B/A <= 1.15 at every N: {verdict(all(r <= 1.15 for _, r in ratios))} ({shown})")
    p99s = [(entry.size, percentile(entry.steady.create + entry.steady.delete, 0.99))
            for entry in result.sizes if entry.steady and (entry.steady.create or entry.steady.delete)]  # fmt: skip
    if p99s:
        shown = ", ".join(f"{_size_label(size)} {value * 1000:.1f} ms" for size, value in p99s)
        lines.append(f"- D p99 <= 50 ms (creates and deletes): {verdict(all(v <= 0.05 for _, v in p99s))} ({shown})")
        if len(p99s) > 1:
            spread = max(v for _, v in p99s) / min(v for _, v in p99s)
            lines.append(f"- D flat from smallest to largest N (p99 max/min <= 1.5): {verdict(spread <= 1.5)} "
                         f"(max/min {spread:.2f})")  # fmt: skip
        else:
            lines.append("- D flat across N: n/a (one size measured)")
    else:
        lines.append("- D p99 <= 50 ms: n/a (not measured)")
    if ten is not None and ten.announcer.summary("announcer_hwm") is not None:
        value = ten.announcer.median("announcer_hwm") / MB
        lines.append(f"- F <= 150 MB peak RSS at 10k Services: {verdict(value <= 150)} ({value:.0f} MB)")
    else:
        lines.append("- F <= 150 MB peak RSS at 10k Services: n/a (10k not run)")
    return lines


def render(result: SuiteResult) -> str:
    """The table (Markdown, readable as plain text), its targets and the settings it was measured with."""
    sizes = [entry.size for entry in result.sizes]
    header = "| figure | " + " | ".join(_size_label(size) for size in sizes) + " |"
    lines = [
        f"Benchmark {time.strftime('%Y-%m-%d %H:%M', time.localtime(result.started))}, "
        f"{result.runs} run(s) per figure, median (min-max); N dual-stack Services = 2N prefixes; "
        f"took {(result.finished - result.started) / 60:.1f} min",
        "",
        header,
        "|" + "---|" * (len(sizes) + 1),
    ]
    for row in _rows(result):
        lines.append(f"| {row.label} | " + " | ".join(row.cell(entry) for entry in result.sizes) + " |")
    lines += ["", "Targets:", *_targets(result), ""]
    lines.append(f"A fastest: {FLOOR_BEST.per_line}/line, {FLOOR_BEST.window or 'no'} ack window, "
                 f"{FLOOR_BEST.describe()}. "
                 f"A reference: {FLOOR_DEFAULT.per_line}/line, {FLOOR_DEFAULT.describe()}.")  # fmt: skip
    speaker = ", ".join(f"speaker.{key}={value}" for key, value in sorted(ANNOUNCER_BEST.speaker.items()))
    lines.append(f"B: {speaker}, speaker.environment {ANNOUNCER_BEST.describe()}; shipped defaults row: "
                 "the announcer's config defaults and DEFAULT_ENVIRONMENT.")  # fmt: skip
    lines.append("Machine: " + ", ".join(f"{key} {value}" for key, value in result.environment.items()))
    lines += result.notes
    return "\n".join(lines) + "\n"
