"""Rows of results, the printed table and the JSON file.

A row holds raw samples (seconds, bytes, counts) for wandbfs and for its baseline.
Times are shown as rates when the row knows how many bytes moved. ``ratio`` is always
"how many times better wandbfs is" on the medians: baseline time / wandbfs time for
times (above 1 means wandbfs is faster), baseline / wandbfs for sizes and memory.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

MiB = 1 << 20


@dataclass
class Row:
    case: str                       # "R1"
    key: str                        # unique, e.g. "R1.warm"
    what: str                       # what was measured
    link: str                       # "lo", "wan" or "-"
    unit: str                       # "s" | "ms" | "MiB/s" | "MiB" | "count"
    ours: list[float]
    base: list[float] | None = None
    base_label: str = ""
    nbytes: int | None = None       # for MiB/s rows: the bytes each sample moved
    goal: str = ""                  # human text, e.g. ">= 0.8x"
    met: bool | None = None         # None: no goal, or not decidable
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- derived ----
    @property
    def ours_med(self) -> float:
        return statistics.median(self.ours) if self.ours else float("nan")

    @property
    def base_med(self) -> float:
        return statistics.median(self.base) if self.base else float("nan")

    def fmt(self, samples: list[float] | None) -> str:
        if not samples:
            return "-"
        best = min(samples) if self.unit != "count" else min(samples)
        med = statistics.median(samples)
        if self.unit == "MiB/s" and self.nbytes:
            return f"{_num(self.nbytes / best / MiB)} / {_num(self.nbytes / med / MiB)} MiB/s"
        if self.unit == "ms":
            return f"{_num(best * 1000)} / {_num(med * 1000)} ms"
        if self.unit == "s":
            return f"{_num(best)} / {_num(med)} s"
        if self.unit == "MiB":
            return f"{_num(best / MiB)} / {_num(med / MiB)} MiB"
        return f"{_num(best)} / {_num(med)}"


def _num(x: float) -> str:
    if x != x:  # nan
        return "nan"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def speed_ratio(ours: list[float], base: list[float] | None) -> float | None:
    """Baseline time / wandbfs time on the medians (> 1: wandbfs is faster)."""
    if not ours or not base:
        return None
    o, b = statistics.median(ours), statistics.median(base)
    return b / o if o > 0 else None


def table(rows: list[Row]) -> str:
    head = ["case", "link", "measure", "wandbfs best / median", "baseline best / median", "ratio", "goal", "result"]
    lines = []
    for r in rows:
        base = r.fmt(r.base)
        if r.base_label and r.base:
            base = f"{r.base_label}: {base}"
        elif r.base_label:
            base = r.base_label
        result = {True: "met", False: "MISSED", None: ""}[r.met]
        ratio = f"{r.ratio:.3g}x" if r.ratio is not None else "-"
        lines.append([r.case, r.link, r.what, r.fmt(r.ours), base, ratio, r.goal, result])
    widths = [max(len(head[i]), *(len(line[i]) for line in lines)) if lines else len(head[i])
              for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    """The same table as GitHub markdown (for the README's Performance section)."""
    out = ["| case | link | measure | wandbfs best / median | baseline best / median | ratio | goal | result |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = f"{r.base_label}: {r.fmt(r.base)}" if r.base else (r.base_label or "-")
        ratio = f"{r.ratio:.3g}x" if r.ratio is not None else "-"
        result = {True: "met", False: "**missed**", None: ""}[r.met]
        out.append(f"| {r.case} | {r.link} | {r.what} | {r.fmt(r.ours)} | {base} | {ratio} | {r.goal} | {result} |")
    return "\n".join(out)


def to_json(rows: list[Row], **extra: Any) -> str:
    d = dict(extra)
    d["rows"] = [asdict(r) | {"ours_median": r.ours_med if r.ours else None,
                              "base_median": r.base_med if r.base else None} for r in rows]
    return json.dumps(d, indent=1, default=str)
