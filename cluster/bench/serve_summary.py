"""The method of `switchyard bench serve`, as pure functions: the order of the runs, and their summary.

A single run of a served system on a shared 2-core machine is not a measurement: vLLM's own figure moved 2x
between runs of the same command. So every system runs several times, interleaved (A B A B A B), so that a
slow spell of the machine falls on both sides rather than on one; each figure is reported as the median of the
runs with its spread (min-max), and the ratios are ratios of medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

MIN_RUNS = 3  # fewer give a median that is one of two numbers, and no spread worth the name


def run_order(systems: list[str], runs: int) -> list[tuple[int, str]]:
    """(run index, system) in the order to run them: every system once per round, `runs` rounds."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    return [(r, system) for r in range(runs) for system in systems]


@dataclass(frozen=True)
class Spread:
    """One figure over the runs: the median and the lowest and highest run."""
    median: float
    low: float
    high: float
    runs: int

    def __str__(self) -> str:
        if not self.runs:
            return "-"
        return f"{_num(self.median)} ({_num(self.low)}-{_num(self.high)})"

    @property
    def relative_range(self) -> float:
        """(max - min) / median: 0.5 means the runs span half the median."""
        return (self.high - self.low) / self.median if self.runs and self.median else float("nan")


def spread(values: list[float]) -> Spread:
    """Median and min-max of the runs that measured the figure (a NaN is a run that did not)."""
    measured = [v for v in values if not math.isnan(v)]
    if not measured:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(median(measured), min(measured), max(measured), len(measured))


# The figures summarised: (column title, LevelResult attribute, higher is better)
FIGURES = [("output tok/s", "output_tps", True), ("ITL p50 ms", "itl_p50", False),
           ("TTFT p50 ms", "ttft_p50", False)]


def summary_table(results: list, reference: str | None) -> tuple[list[str], list[list]]:
    """One row per (system, concurrency) over all runs' `LevelResult`s, in first-seen order: each figure as
    "median (min-max)", the errors summed, and the ratios of medians against `reference` (output tok/s:
    system / reference; ITL p50: reference / system, so that above 1 is better for both)."""
    groups: dict[tuple[str, int], list] = {}
    for r in results:
        groups.setdefault((r.system, r.concurrency), []).append(r)
    medians = {key: {attr: spread([getattr(r, attr) for r in rows]) for _, attr, _ in FIGURES}
               for key, rows in groups.items()}
    headers = ["system", "concurrency", "runs"] + [title for title, _, _ in FIGURES] + ["errors"]
    has_reference = any(system == reference for system, _ in groups)
    if has_reference:
        headers += [f"tok/s vs {reference}", f"ITL p50 vs {reference}"]
    rows = []
    for (system, concurrency), level_rows in groups.items():
        figures = medians[(system, concurrency)]
        row = [system, concurrency, len(level_rows)] + [str(figures[attr]) for _, attr, _ in FIGURES]
        row.append(sum(r.errors for r in level_rows))
        if has_reference:
            base = medians.get((reference, concurrency))
            row += [_ratio(figures["output_tps"].median, base["output_tps"].median) if base else "-",
                    _ratio(base["itl_p50"].median, figures["itl_p50"].median) if base else "-"]
        rows.append(row)
    return headers, rows


def _ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
