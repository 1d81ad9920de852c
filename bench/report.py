"""Figures: repeated measurements, their median with min and max, and a ratio to a reference.

Every figure is printed as one JSON line when it is measured (so a partial run still leaves
its figures behind) and again in the table at the end.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; nan when there is nothing."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Figure:
    """One measured quantity: its runs, and optionally a reference measured in the same run."""

    name: str
    unit: str
    runs: list[float]
    ref_name: str | None = None
    ref_runs: list[float] = field(default_factory=list)
    target: str = ""
    note: str = ""
    higher_is_better: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def ref_median(self) -> float | None:
        return statistics.median(self.ref_runs) if self.ref_runs else None

    @property
    def ratio(self) -> float | None:
        ref = self.ref_median
        if ref is None or ref == 0 or not self.runs:
            return None
        return self.median / ref

    def to_dict(self) -> dict:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "figure": self.name,
            "unit": self.unit,
            "median": r(self.median),
            "min": r(min(self.runs)) if self.runs else None,
            "max": r(max(self.runs)) if self.runs else None,
            "n": len(self.runs),
            "ref": self.ref_name,
            "ref_median": r(self.ref_median),
            "ref_min": r(min(self.ref_runs)) if self.ref_runs else None,
            "ref_max": r(max(self.ref_runs)) if self.ref_runs else None,
            "ratio": r(self.ratio),
            "target": self.target or None,
            "note": self.note or None,
        }


class Report:
    """Collects figures; prints each as a JSON line at once and a table at the end."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.figures: list[Figure] = []

    def add(self, figure: Figure) -> Figure:
        """Record a figure and print its JSON line."""
        self.figures.append(figure)
        print(json.dumps(figure.to_dict()), file=self.out, flush=True)
        return figure

    def fig(self, name: str, unit: str, runs: list[float], **kwargs) -> Figure:
        """Shorthand for add(Figure(...))."""
        return self.add(Figure(name, unit, list(runs), **kwargs))

    def note(self, text: str) -> None:
        """A line of context (machine, sizes) printed as a JSON line too."""
        print(json.dumps({"note": text}), file=self.out, flush=True)

    def table(self) -> str:
        """Every figure as a fixed-width table."""
        head = ("figure", "median [min..max]", "reference", "ref median", "ratio", "target")
        rows = [head]
        for f in self.figures:
            spread = f"{_n(f.median)} [{_n(min(f.runs))}..{_n(max(f.runs))}] {f.unit}"
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
            ref = "" if f.ref_median is None else _n(f.ref_median)
            rows.append((f.name, spread, f.ref_name or "", ref, ratio, f.target))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


def _n(x: float) -> str:
    if x != x:  # nan
        return "nan"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
