"""Result rows and their markdown table, for one benchmark session or several.

One session prints its table at the end (conftest.py). For steadier numbers on a shared machine,
run the suite a few times with ``--benchmark-json`` and merge the runs (median of the runs'
medians, and their range):

    for i in 1 2 3; do
        PYTHONPATH=src python -m pytest benchmarks -p no:cacheprovider --run-slow --benchmark-json=/tmp/bench-$i.json
    done
    python benchmarks/report.py /tmp/bench-*.json

The scaling benchmarks (test_scaling.py) are not held to targets; they get their own table after
the results table, merged the same way (median of the runs' median rounds).
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    name: str
    value: float            # median round, in ``unit`` (over runs: median of the runs' medians)
    best: float             # best round, in ``unit``
    unit: str
    target: float | None
    higher_is_better: bool
    note: str = ""
    runs: list[float] = field(default_factory=list)  # each run's median, when merged

    def verdict(self) -> str:
        if self.target is None:
            return "-"
        ratio = self.value / self.target if self.higher_is_better else self.target / self.value
        # ratio > 1: better than the target by that factor; < 1: short of it
        return f"{'pass' if ratio >= 1 else 'MISS'} ({ratio:.2f}x target)"

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<='} {fmt(self.target)} {self.unit}"

    def to_json(self) -> dict:
        return asdict(self)


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3g}"


def load_text(before: tuple, after: tuple) -> str:
    """A line for reports: the load average around the run (the run itself counts for ~1)."""
    text = (f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in before)}, "
            f"after: {' '.join(f'{x:.2f}' for x in after)}")
    if max(before[0], after[0]) > 1.5:
        text += " -- other processes were busy on this machine: numbers may be low; run again"
    return text


def results_markdown(rows: list[Row]) -> str:
    merged = any(len(r.runs) > 1 for r in rows)
    head = "| benchmark | median | best round |" + (" runs (min - max of medians) |" if merged else "")
    lines = [head + " target | result |",
             "|---|---:|---:|" + ("---|" if merged else "") + "---|---|"]
    for r in rows:
        name = r.name + (f" ({r.note})" if r.note else "")
        spread = ""
        if merged:
            spread = f" {len(r.runs)}: {fmt(min(r.runs))} - {fmt(max(r.runs))} |" if r.runs else " - |"
        lines.append(f"| {name} | {fmt(r.value)} {r.unit} | {fmt(r.best)} {r.unit} |{spread} "
                     f"{r.target_text()} | {r.verdict()} |")
    return "\n".join(lines)


def merge(runs: list[list[Row]]) -> list[Row]:
    """One row per benchmark name (first-seen order) over several sessions."""
    by_name: dict[str, list[Row]] = {}
    for rows in runs:
        for row in rows:
            by_name.setdefault(row.name, []).append(row)
    out = []
    for name, rows in by_name.items():
        last = rows[-1]
        values = [r.value for r in rows]
        best = max(r.best for r in rows) if last.higher_is_better else min(r.best for r in rows)
        out.append(Row(name, statistics.median(values), best, last.unit, last.target, last.higher_is_better,
                       last.note, values))
    return out


@dataclass
class ScalingRow:
    """One case of a scaling benchmark (test_scaling.py): its own table, apart from the targets."""

    group: str              # e.g. "append vs partitions"
    case: str               # e.g. "8 partitions", "1 KiB values"
    records: int            # records per timed round
    payload_bytes: int      # key + value bytes per round
    log_bytes: int          # bytes the log grew by (or read) per round
    median_s: float         # median round (over runs: median of the runs' medians)
    best_s: float
    runs: list[float] = field(default_factory=list)  # each run's median round, when merged

    def to_json(self) -> dict:
        return asdict(self)


def scaling_markdown(rows: list[ScalingRow]) -> str:
    merged = any(len(r.runs) > 1 for r in rows)
    lines = ["| scaling | case | records/s | payload MB/s | log MB/s | best round |"
             + (" runs (min - max of records/s) |" if merged else ""),
             "|---|---|---:|---:|---:|---:|" + ("---|" if merged else "")]
    for r in rows:
        spread = ""
        if merged:
            rates = [r.records / s for s in r.runs]
            spread = f" {len(rates)}: {fmt_rate(min(rates))} - {fmt_rate(max(rates))} |"
        lines.append(f"| {r.group} | {r.case} | {fmt_rate(r.records / r.median_s)} "
                     f"| {r.payload_bytes / r.median_s / 1e6:,.0f} | {r.log_bytes / r.median_s / 1e6:,.0f} "
                     f"| {fmt_rate(r.records / r.best_s)} |{spread}")
    return "\n".join(lines)


def fmt_rate(rps: float) -> str:
    return f"{rps / 1e6:.2f} M/s" if rps >= 1e5 else f"{rps / 1e3:.1f} k/s"


def merge_scaling(runs: list[list[ScalingRow]]) -> list[ScalingRow]:
    by_key: dict[tuple[str, str], list[ScalingRow]] = {}
    for rows in runs:
        for row in rows:
            by_key.setdefault((row.group, row.case), []).append(row)
    out = []
    for rows in by_key.values():
        last = rows[-1]
        medians = [r.median_s for r in rows]
        out.append(ScalingRow(last.group, last.case, last.records, last.payload_bytes, last.log_bytes,
                              statistics.median(medians), min(r.best_s for r in rows), medians))
    return out


def scaling_from_benchmark_json(path: str) -> list[ScalingRow]:
    with open(path) as f:
        data = json.load(f)
    return [ScalingRow(**r) for bench in data.get("benchmarks", [])
            for r in bench.get("extra_info", {}).get("scaling", [])]


def rows_from_benchmark_json(path: str) -> list[Row]:
    with open(path) as f:
        data = json.load(f)
    rows = []
    for bench in data.get("benchmarks", []):
        for r in bench.get("extra_info", {}).get("rows", []):
            rows.append(Row(**r))
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    runs = [rows_from_benchmark_json(p) for p in argv]
    print(f"Merged {len(runs)} run(s): {', '.join(argv)}\n")
    print(results_markdown(merge(runs)))
    scaling = merge_scaling([scaling_from_benchmark_json(p) for p in argv])
    if scaling:
        print("\nScaling (test_scaling.py):\n")
        print(scaling_markdown(scaling))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
