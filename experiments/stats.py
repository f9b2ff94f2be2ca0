"""Comparisons a reviewer accepts: mean ± std per method and paired per-seed differences.

Every number comes from run summaries (``summary.json``); ``tail`` values (each
metric's mean over the last ``eval.tail-rounds`` rounds) are compared, so a
method is judged at convergence and not on one noisy round.

A table's comparisons are of two kinds: the **primary** ones, named before the
runs, are read at the 95% level each; every other interval of the table is
**secondary** and corrected for multiplicity with Holm's step-down procedure
over all of them (paired t-tests), so a star survives only if it would
survive among everything else the table reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRICS = (
    "client_f1",
    "client_rank_f1",
    "client_rouge_lsum",
    "client_bertscore_f1",
    "server_f1",
    "server_rouge_lsum",
    "server_bertscore_f1",
    "cloud_on_device_f1",
)

# Two-sided 95% Student t quantiles by degrees of freedom (1..30); normal beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return math.nan
    return _T95[df - 1] if df <= len(_T95) else 1.96


@dataclass(frozen=True)
class PairedDiff:
    """``a - b`` over the seeds both methods ran, with a 95% t interval and its p-value."""

    a: str
    b: str
    metric: str
    n: int
    mean: float
    low: float
    high: float
    p: float = math.nan  # two-sided paired t-test of a mean difference of 0

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.n > 1 and excludes_zero(self.low, self.high)


def excludes_zero(low: float, high: float) -> bool:
    """Whether the interval ``[low, high]`` excludes 0 (never for NaN bounds)."""
    return low > 0 or high < 0


def format_interval(mean: float, low: float, high: float) -> str:
    """``+0.012 [-0.003, +0.027]``, with `` *`` when the interval excludes 0."""
    mark = " *" if excludes_zero(low, high) else ""
    interval = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{mean:+.3f}{interval}{mark}"


def value(summary: dict, metric: str, block: str = "tail") -> float | None:
    """``summary[block][metric]`` (``block`` "tail" or "final"), or None."""
    v = (summary.get(block) or {}).get(metric)
    return None if v is None else float(v)


def by_seed(runs: list[dict], metric: str, block: str = "tail") -> dict[int, float]:
    """Seed -> metric value of each run that has it."""
    out = {}
    for r in runs:
        v = value(r, metric, block)
        if v is not None:
            out[int(r["seed"])] = v
    return out


def paired(a: str, b: str, ra: list[dict], rb: list[dict], metric: str) -> PairedDiff | None:
    """Paired difference of ``metric`` (tail) between methods ``a`` and ``b`` per seed."""
    va, vb = by_seed(ra, metric), by_seed(rb, metric)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return None
    diffs = [va[s] - vb[s] for s in seeds]
    mean, low, high = mean_interval(diffs)
    return PairedDiff(a, b, metric, len(seeds), mean, low, high, t_test_p(diffs))


def t_test_p(values: list[float]) -> float:
    """Two-sided p-value of a one-sample t-test of mean 0 (NaN for fewer than 2 values).

    Zero spread gives 0 for a non-zero mean and 1 for a zero mean.
    """
    from scipy.stats import t

    d = np.asarray(values, dtype=float)
    if len(d) < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    stat = float(d.mean()) / (sd / math.sqrt(len(d)))
    return float(2 * t.sf(abs(stat), len(d) - 1))


def holm(pvalues: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm-Bonferroni: which hypotheses are rejected at family-wise level ``alpha``.

    Sort the p-values; the k-th smallest (k from 0) is rejected while it is at
    most ``alpha / (m - k)``; the first that is not stops the procedure. NaN
    p-values are never rejected and do not count in ``m``.
    """
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    out = [False] * len(pvalues)
    m = len(order)
    for k, (p, i) in enumerate(order):
        if p > alpha / (m - k):
            break
        out[i] = True
    return out


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean of ``values`` with its 95% t interval (NaN bounds for fewer than 2)."""
    d = np.asarray(values, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = t95(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def _fmt_stat(values: list[float]) -> str:
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {std:.3f}"


def summary_table(results: dict[str, list[dict]], block: str = "tail") -> str:
    """Markdown: mean ± sample std over seeds of each metric, per method."""
    present = [
        m
        for m in METRICS
        if any(value(r, m, block) is not None for rs in results.values() for r in rs)
    ]
    lines = [
        "| method | seeds | " + " | ".join(present) + " |",
        "|" + "---|" * (len(present) + 2),
    ]
    for method, runs in results.items():
        cells = [_fmt_stat(list(by_seed(runs, k, block).values())) for k in present]
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(
    results: dict[str, list[dict]],
    metrics: tuple[str, ...],
    primary: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """Markdown: paired differences (tail), mean and 95% interval, for every pair.

    Parameters
    ----------
    primary : tuple of (a, b, metric)
        The comparisons named before the runs; every other cell is secondary and
        Holm-corrected over all secondary cells of the table. A pair may be given
        in either order (``b - a`` is the same comparison).
    """
    methods = list(results)
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    cells = {(a, b, m): paired(a, b, results[a], results[b], m) for a, b in pairs for m in metrics}
    named = {t for a, b, m in primary for t in ((a, b, m), (b, a, m))}
    is_primary = {k: k in named for k in cells}
    secondary = [k for k, d in cells.items() if d is not None and not is_primary[k]]
    survives = dict(zip(secondary, holm([cells[k].p for k in secondary])))
    lines = [
        "| a - b | seeds | " + " | ".join(metrics) + " |",
        "|" + "---|" * (len(metrics) + 2),
    ]
    for a, b in pairs:
        row, n = [], 0
        for m in metrics:
            d = cells[(a, b, m)]
            if d is None:
                row.append("n/a")
                continue
            n = max(n, d.n)
            text = format_interval(d.mean, d.low, d.high)
            if text.endswith(" *") and not is_primary[(a, b, m)] and not survives[(a, b, m)]:
                text = text[:-2] + " (*)"
            row.append(f"**{text}**" if is_primary[(a, b, m)] else text)
        lines.append(f"| {a} - {b} | {n} | " + " | ".join(row) + " |")
    lines.append("")
    if primary:
        lines.append(
            "Bold: a primary comparison, named before the runs; `*`: its 95% interval "
            "excludes 0. Every other cell is secondary: `*` when its paired t-test "
            f"survives Holm's correction over the table's {len(secondary)} secondary "
            "cells (family-wise 5%), `(*)` when its interval excludes 0 but the "
            "correction removes the star."
        )
    else:
        lines.append(
            "`*`: the paired t-test survives Holm's correction over the table's "
            f"{len(secondary)} cells (family-wise 5%); `(*)`: the 95% interval excludes 0 "
            "but the correction removes the star."
        )
    return "\n".join(lines)


def plot_diffs(results: dict[str, list[dict]], metric: str, reference: str, path: Path) -> None:
    """Paired difference of ``metric`` of every method against ``reference``, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [m for m in results if m != reference]
    diffs = [paired(reference, m, results[reference], results[m], metric) for m in others]
    keep = [(m, d) for m, d in zip(others, diffs) if d is not None]
    if not keep:
        return
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(keep) + 1.4))
    for y, (_, d) in enumerate(keep):
        err = 0 if math.isnan(d.low) else [[d.mean - d.low], [d.high - d.mean]]
        ax.errorbar(d.mean, y, xerr=err, fmt="o", capsize=4, color="C0" if d.significant else "C7")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(keep)), [f"{reference} - {m}" for m, _ in keep])
    ax.set_xlabel(f"paired difference of {metric} (tail), 95% interval")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(histories: dict[str, list[list[dict]]], metric: str, path: Path) -> None:
    """``metric`` per round, mean over seeds per method (shaded: ± std, for up to 4 methods).

    Beyond 10 methods the colours repeat with another line style, so every line
    stays distinguishable; the legend sits beside the axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(histories) > 4
    fig, ax = plt.subplots(figsize=(8.2 if many else 6.4, 3.6))
    for i, (method, runs) in enumerate(histories.items()):
        rounds = sorted({r["round"] for h in runs for r in h})
        mean, std = [], []
        for rnd in rounds:
            vals = [r.get(metric) for h in runs for r in h if r["round"] == rnd]
            vals = [v for v in vals if v is not None]
            mean.append(np.mean(vals) if vals else np.nan)
            std.append(np.std(vals) if vals else np.nan)
        mean, std = np.array(mean), np.array(std)
        color, style = f"C{i % 10}", ("-", "--", ":")[(i // 10) % 3]
        ax.plot(rounds, mean, label=method, color=color, linestyle=style)
        if not many:
            ax.fill_between(rounds, mean - std, mean + std, alpha=0.15, color=color)
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} (mean over seeds)" if many else metric)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
