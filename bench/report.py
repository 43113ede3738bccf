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


def _short(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def _size_label(size: int) -> str:
    return f"N={_short(size)}"


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
        _family_ratio_row("ipv4"),
        _family_ratio_row("ipv6"),
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
        Row(f"E churn {_churn_changes(result)} changes in 1 s: first write -> FRR matches",
            lambda s: _cell(s.churn, "from_first_write")),
        Row("E churn: the writes took", lambda s: _cell(s.churn, "write_seconds")),
        Row("E churn: last write -> FRR matches", lambda s: _cell(s.churn, "after_last_write")),
        Row("E floor (ExaBGP alone, the same changes as bulk lines): first write -> FRR matches",
            lambda s: _cell(s.churn_floor, "from_first_write")),
        Row("E floor: last write -> FRR matches", lambda s: _cell(s.churn_floor, "after_last_write")),
        Row("E: ExaBGP CPU / its run-queue wait, first write -> FRR matches (announcer; floor)",
            lambda s: f"{_pair(s.churn, 'exabgp_cpu', 'exabgp_wait')}; "
            f"{_pair(s.churn_floor, 'exabgp_cpu', 'exabgp_wait')}"),
        Row("E: announcer CPU / its run-queue wait, first write -> FRR matches",
            lambda s: _pair(s.churn, "announcer_cpu", "announcer_wait")),
        Row("E: CPU of the benchmark's process (stand-in API server, writes) / the whole machine (announcer; floor)",
            lambda s: f"{_pair(s.churn, 'bench_cpu', 'machine_cpu')}; "
            f"{_pair(s.churn_floor, 'bench_cpu', 'machine_cpu')}"),
        Row("E / E floor (last write -> FRR matches, medians)",
            lambda s: _ratio_text(_ratio(s.churn, s.churn_floor, "after_last_write", "after_last_write"))),
        Row("F announcer peak RSS (VmHWM) during B", lambda s: _cell(s.announcer, "announcer_hwm", 1 / MB, "MB", 0)),
        Row("F peak RSS growth per 10k Services (from the previous N)", lambda s: _rss_growth(result, s)),
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


def _pair(series: Series, first: str, second: str) -> str:
    """Two medians in CPU s, 'a / b CPU s' ('-' when not measured)."""
    a, b = series.median(first), series.median(second)
    return "-" if math.isnan(a) else f"{a:.2f} / {b:.2f} CPU s"


def _family_ratio_row(family: str) -> Row:
    """B/A for one family: B's and A's 'IPv4 (IPv6) complete, from ExaBGP start' medians."""
    key = f"exabgp_to_full_{family}"
    return Row(f"B/A {family.replace('ip', 'IP')} complete (from ExaBGP start, medians)",
               lambda s: _ratio_text(_ratio(s.announcer, s.floor_best, key, key)))  # fmt: skip


def _share(series: Series) -> str:
    """The stand-in API server's CPU as a share of its, the announcer's and ExaBGP's together (medians)."""
    standin = series.median("standin_cpu")
    total = standin + series.median("announcer_cpu") + series.median("exabgp_cpu")
    return "-" if math.isnan(total) or not total else f"{100 * standin / total:.1f} %"


def _rss_growth(result: SuiteResult, entry: SizeResult) -> str:
    index = result.sizes.index(entry)
    slope = math.nan if index == 0 else _slope(result.sizes[index - 1], entry)
    return "-" if math.isnan(slope) else f"{slope:.0f} MB"


def _churn_changes(result: SuiteResult) -> str:
    counts = {int(run["changes"]) for entry in result.sizes for run in entry.churn.runs if "changes" in run}
    return "/".join(f"{count:,}" for count in sorted(counts)) or "-"


def _lost(latencies: object) -> str:
    lost = getattr(latencies, "lost", 0)
    return f" [{lost} lost]" if lost else ""


def _find(result: SuiteResult, size: int) -> SizeResult | None:
    return next((entry for entry in result.sizes if entry.size == size), None)


# The goals of issue 12, each judged from the figures of this one run.
RATIO_BOUND_SMALL = 1.5  # B/A below 10k Services, where the announcer's start-up weighs against a short floor
RATIO_BOUND = 1.10  # B/A at 10k Services and more
RATIO_SMALL_BELOW = 10_000
CPU_PER_10K_BOUND = 1.5  # announcer CPU s of a first sync per 10k Services, at every N >= 10k
RSS_BOUNDS_MB = {10_000: 80.0, 25_000: 150.0}  # peak RSS (VmHWM) of the announcer during B
RSS_LINEAR_SPREAD = 1.25  # MB per 10k Services between consecutive sizes: the largest over the smallest
D_FACTOR = 1.5  # D p99 against the floor's D p99 (creates vs announce, deletes vs withdraw)
E_AFTER_LAST_BOUND = 0.5  # seconds from E's last write until FRR matches
E_SPREAD = 1.0  # seconds E's writes are spread over
GOAL_SIZES = (1000, 10_000, 25_000, 50_000)  # B/A is named at each of these (n/a when not run)


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _judged(want: str, values: list[tuple[str, float, bool]], unit: str = "", digits: int = 2) -> str:
    """One goal line: MET when every measured value meets it, with every value shown."""
    if not values:
        return f"- {want}: n/a (not measured in this run)"
    shown = ", ".join(f"{label} {value:.{digits}f}{unit}" for label, value, _ in values)
    return f"- {want}: {_verdict(all(ok for _, _, ok in values))} ({shown})"


def _ratio_goals(result: SuiteResult) -> list[str]:
    lines = []
    for small in (True, False):
        bound = RATIO_BOUND_SMALL if small else RATIO_BOUND
        values = []
        for entry in result.sizes:
            if (entry.size < RATIO_SMALL_BELOW) != small:
                continue
            ratio = _ratio(entry.announcer, entry.floor_best, "exabgp_to_full", "exabgp_to_full")
            if not math.isnan(ratio):
                values.append((_size_label(entry.size), ratio, ratio <= bound))
        where = "below 10k Services" if small else "at 10k Services and more"
        missing = [
            _size_label(size)
            for size in GOAL_SIZES
            if (size < RATIO_SMALL_BELOW) == small and _find(result, size) is None
        ]
        line = _judged(
            f"B/A <= {bound:.2f} {where} (ExaBGP start -> FRR holds all, B over the fastest floor, medians; "
            "the announcer's start-up included)",
            values,
        )
        if missing and not values:
            line = line.replace("n/a (not measured in this run)", f"n/a (not run: {', '.join(missing)})")
        elif missing:
            line += f"; not run: {', '.join(missing)}"
        lines.append(line)
    return lines


def _cpu_goal(result: SuiteResult) -> str:
    values = []
    for entry in result.sizes:
        cpu = entry.announcer.median("announcer_cpu")
        if entry.size >= RATIO_SMALL_BELOW and not math.isnan(cpu):
            per_10k = cpu * 10_000 / entry.size
            values.append((_size_label(entry.size), per_10k, per_10k <= CPU_PER_10K_BOUND))
    return _judged(
        f"announcer CPU for a first sync <= {CPU_PER_10K_BOUND} CPU s per 10k Services at every N >= 10k "
        "(user+system at the moment FRR holds all, medians)",
        values,
        " CPU s",
    )


def _slope(low: SizeResult, high: SizeResult) -> float:
    """Peak RSS growth in MB per 10k Services from one size to a larger one (medians of VmHWM during B)."""
    grown = high.announcer.median("announcer_hwm") - low.announcer.median("announcer_hwm")
    return grown / MB / ((high.size - low.size) / 10_000)


def rss_slopes(result: SuiteResult) -> list[tuple[str, float]]:
    """The slope between each pair of consecutive sizes, labelled '10k->25k' (pairs missing a figure left out)."""
    slopes = []
    for low, high in zip(result.sizes, result.sizes[1:], strict=False):
        slope = _slope(low, high)
        if not math.isnan(slope):
            slopes.append((f"{_short(low.size)}->{_short(high.size)}", slope))
    return slopes


def _rss_goals(result: SuiteResult) -> list[str]:
    lines = []
    for size, bound in RSS_BOUNDS_MB.items():
        entry = _find(result, size)
        value = math.nan if entry is None else entry.announcer.median("announcer_hwm") / MB
        values = [] if math.isnan(value) else [(_size_label(size), value, value <= bound)]
        lines.append(_judged(f"announcer peak RSS (VmHWM during B) <= {bound:.0f} MB at {size // 1000}k Services",
                             values, " MB", 0))  # fmt: skip
    slopes = rss_slopes(result)
    want = (f"peak RSS linear in N: MB per 10k Services between consecutive sizes within a factor "
            f"{RSS_LINEAR_SPREAD} of each other")  # fmt: skip
    shown = ", ".join(f"{label} {slope:.0f} MB" for label, slope in slopes)
    if len(slopes) < 2:
        lines.append(f"- {want}: n/a (needs three sizes{'; ' + shown if shown else ''})")
    else:
        low, high = min(slope for _, slope in slopes), max(slope for _, slope in slopes)
        linear = low > 0 and high / low <= RSS_LINEAR_SPREAD
        spread = f"max/min {high / low:.2f}" if low > 0 else "a slope <= 0"
        lines.append(f"- {want}: {_verdict(linear)} ({shown}; {spread})")
    return lines


def _d_goal(result: SuiteResult) -> str:
    values = []
    for entry in result.sizes:
        if not (entry.steady and entry.steady_floor):
            continue
        for kind, ours, floor in (("create", entry.steady.create, entry.steady_floor.create),
                                  ("delete", entry.steady.delete, entry.steady_floor.delete)):  # fmt: skip
            if ours and floor:
                ratio = percentile(ours, 0.99) / percentile(floor, 0.99)
                label = (f"{_size_label(entry.size)} {kind} {percentile(ours, 0.99) * 1000:.1f}/"
                         f"{percentile(floor, 0.99) * 1000:.1f} ms =")  # fmt: skip
                values.append((label, ratio, ratio <= D_FACTOR))
    return _judged(
        f"D p99 <= {D_FACTOR}x the floor's D p99 at every N (creates vs the floor's announce, deletes vs its withdraw)",
        values,
    )


def _e_goal(result: SuiteResult) -> str:
    values = []
    notes = []
    for entry in result.sizes:
        after = entry.churn.median("after_last_write")
        if math.isnan(after):
            continue
        values.append((_size_label(entry.size), after, after <= E_AFTER_LAST_BOUND))
        written = entry.churn.median("write_seconds")
        changes = entry.churn.median("changes")
        floor = entry.churn_floor.median("after_last_write")
        if not math.isnan(written):
            notes.append(f"{_size_label(entry.size)}: {changes:,.0f} changes written in {written:.2f} s"
                         + ("" if written <= E_SPREAD * 1.05 else ", slower than asked")
                         + ("" if math.isnan(floor) else f"; ExaBGP alone (E floor): {floor:.2f} s"))  # fmt: skip
    line = _judged(f"E: FRR matches the API server (full table) <= {E_AFTER_LAST_BOUND} s after the last of the "
                   f"changes written within {E_SPREAD:.0f} s", values, " s")  # fmt: skip
    timeouts = sum(1 for entry in result.sizes for run in entry.churn.runs if "timeout" in run)
    extra = notes + ([f"{timeouts} run(s) timed out"] if timeouts else [])
    return line + (f"; {'; '.join(extra)}" if extra else "")


def goals(result: SuiteResult) -> list[str]:
    """Issue 12's goals, each MET or MISSED with the figures of this run (n/a when not measured)."""
    return [*_ratio_goals(result), _cpu_goal(result), *_rss_goals(result), _d_goal(result), _e_goal(result)]


# The goals of issue 20, each judged from the figures of this one run.
FAMILY_RATIO_BOUND = 1.10  # B/A per family (IPv4 complete, IPv6 complete, from ExaBGP start)
FAMILY_GOAL_SIZES = (10_000, 25_000, 50_000)
TOTAL_RATIO_SIZE = 10_000  # B/A (ExaBGP start -> all) <= RATIO_BOUND named at this size on its own
E_FLOOR_FACTOR = 1.5  # E (last write -> FRR matches) against the E floor of the same run
E_FLOOR_SIZE = 10_000  # where E is judged against its floor; other sizes are shown beside it


def _not_run(sizes: tuple[int, ...], result: SuiteResult) -> str:
    missing = [_size_label(size) for size in sizes if _find(result, size) is None]
    return f"; not run: {', '.join(missing)}" if missing else ""


def _family_goals(result: SuiteResult) -> list[str]:
    lines = []
    for family in ("ipv4", "ipv6"):
        key = f"exabgp_to_full_{family}"
        values = []
        for size in FAMILY_GOAL_SIZES:
            entry = _find(result, size)
            ratio = math.nan if entry is None else _ratio(entry.announcer, entry.floor_best, key, key)
            if not math.isnan(ratio):
                values.append((_size_label(size), ratio, ratio <= FAMILY_RATIO_BOUND))
        want = (
            f"B/A <= {FAMILY_RATIO_BOUND:.2f} for {family.replace('ip', 'IP')} at 10k, 25k and 50k Services "
            f"({family.replace('ip', 'IP')} complete from ExaBGP start, B over the fastest floor, medians)"
        )
        lines.append(_judged(want, values) + _not_run(FAMILY_GOAL_SIZES, result))
    return lines


def _total_goal(result: SuiteResult) -> str:
    entry = _find(result, TOTAL_RATIO_SIZE)
    ratio = math.nan if entry is None else _ratio(entry.announcer, entry.floor_best, "exabgp_to_full", "exabgp_to_full")
    values = [] if math.isnan(ratio) else [(_size_label(TOTAL_RATIO_SIZE), ratio, ratio <= RATIO_BOUND)]
    return _judged(f"B/A <= {RATIO_BOUND:.2f} at {_short(TOTAL_RATIO_SIZE)} Services (ExaBGP start -> FRR holds all, "
                   "medians)", values)  # fmt: skip


def _e_floor_goal(result: SuiteResult) -> str:
    values: list[tuple[str, float, bool]] = []
    shown = []
    for entry in result.sizes:
        ours, floor = entry.churn.median("after_last_write"), entry.churn_floor.median("after_last_write")
        if math.isnan(ours) or math.isnan(floor) or not floor:
            continue
        label = f"{_size_label(entry.size)} {ours:.2f}/{floor:.2f} s ="
        if entry.size == E_FLOOR_SIZE:
            values.append((label, ours / floor, ours / floor <= E_FLOOR_FACTOR))
        else:
            shown.append(f"{label} {ours / floor:.2f} (not judged)")
    line = _judged(f"E <= {E_FLOOR_FACTOR}x the E floor at {_short(E_FLOOR_SIZE)} Services (last write -> FRR "
                   "matches, the announcer over ExaBGP alone, medians of the same run)", values)  # fmt: skip
    return line + (f"; {'; '.join(shown)}" if shown else "")


def issue_20_goals(result: SuiteResult) -> list[str]:
    """Issue 20's goals (each family at ExaBGP's floor, bursts at ExaBGP's pace), MET or MISSED from this run."""
    return [*_family_goals(result), _total_goal(result), _e_floor_goal(result)]


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
    lines += ["", "Goals (issue 12), judged from this run:", *goals(result), ""]
    lines += ["Goals (issue 20), judged from this run:", *issue_20_goals(result), ""]
    lines.append(f"A fastest: {FLOOR_BEST.per_line}/line, {FLOOR_BEST.window or 'no'} ack window, "
                 f"{FLOOR_BEST.describe()}. "
                 f"A reference: {FLOOR_DEFAULT.per_line}/line, {FLOOR_DEFAULT.describe()}.")  # fmt: skip
    speaker = ", ".join(f"speaker.{key}={value}" for key, value in sorted(ANNOUNCER_BEST.speaker.items()))
    lines.append(f"B: {speaker}, speaker.environment {ANNOUNCER_BEST.describe()}; shipped defaults row: "
                 "the announcer's config defaults and DEFAULT_ENVIRONMENT.")  # fmt: skip
    lines.append("Machine: " + ", ".join(f"{key} {value}" for key, value in result.environment.items()))
    lines += result.notes
    return "\n".join(lines) + "\n"
