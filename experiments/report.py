"""What a sweep writes: results.json, results.csv, table.md and plots, per group of cells.

A group is one (dataset, setting) of a grid; a sweep given by flags has one group.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from common.atomic import write_text
from experiments import stats

TABLE_METRICS = ("client_f1", "client_rouge_lsum", "server_f1", "server_rouge_lsum")
COMM_KEYS = ("bytes_up_per_client_round", "bytes_down_per_client_round", "ratio")

Results = dict[str, dict[str, list[dict]]]  # group -> method -> run summaries


def rows(results: Results) -> list[dict]:
    """One flat row per run: group, method, seed, every final and tail metric, the ledger."""
    out = []
    for group, by_method in results.items():
        for method, runs in by_method.items():
            for s in runs:
                row = {"group": group, "method": method, "seed": s.get("seed")}
                row.update(rounds=s.get("rounds"), seconds=s.get("seconds"))
                for block in ("final", "tail"):
                    for k, v in (s.get(block) or {}).items():
                        row[f"{block}_{k}"] = v
                for k in COMM_KEYS:
                    row[f"comm_{k}"] = (s.get("comm") or {}).get(k)
                out.append(row)
    return out


def csv_text(table: list[dict]) -> str:
    """The rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    columns: list[str] = []
    for row in table:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def group_tables(by_method: dict[str, list[dict]]) -> str:
    """Markdown: tail and final means ± std, and the paired differences of the tail."""
    return "\n\n".join(
        [
            "Tail (mean of the last `eval.tail-rounds` rounds), mean ± std over seeds:",
            stats.summary_table(by_method, "tail"),
            "Final round, mean ± std over seeds:",
            stats.summary_table(by_method, "final"),
            "Paired differences of the tail metrics, mean [95% interval]:",
            stats.diff_table(by_method, TABLE_METRICS),
        ]
    )


def write_outputs(results: Results, out: Path, history) -> str:
    """Write every output of a sweep; return ``table.md``'s text.

    Parameters
    ----------
    history : callable
        ``history(group, summary) -> list of round records`` (for the curves).
    """
    single = list(results) == ["default"]
    write_text(
        out / "results.json", json.dumps(results["default"] if single else results, indent=2)
    )
    write_text(out / "results.csv", csv_text(rows(results)))
    parts = []
    for group, by_method in results.items():
        if not single:
            parts.append(f"## {group}")
        parts.append(group_tables(by_method))
        tag = "" if single else "-" + group.replace("/", "-")
        curves = {m: [history(group, s) for s in runs] for m, runs in by_method.items()}
        stats.plot_curves(curves, "client_f1", out / f"curves{tag}.png")
        if len(by_method) > 1:
            first = next(iter(by_method))
            stats.plot_diffs(by_method, "client_f1", first, out / f"diffs{tag}.png")
    md = "\n\n".join(parts)
    write_text(out / "table.md", md + "\n")
    return md
