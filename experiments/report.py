"""What a sweep writes: results.json, results.csv, table.md, plots and report.html.

A group is one (dataset, setting) of a grid; a sweep given by flags has one group.
As a command it writes the HTML report of a run's or a sweep's folder again, from
the files there (``experiments.html_report``)::

    python -m experiments.report outputs/hapt_scarce_skew --out reports/hapt_scarce_skew
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from common.atomic import write_text
from experiments import stats
from experiments.html_report import write_report
from experiments.report_sources import read_source

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
    write_report(read_source(out), out, out)  # from the files just written, never from memory
    return md


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "source", type=Path, help="a run's folder or a sweep's (--out of experiments.run)"
    )
    p.add_argument("--out", type=Path, required=True, help="where report.html is written")
    return p


def main(argv: list[str] | None = None) -> None:
    """Write ``--out/report.html`` for a run's or a sweep's folder."""
    args = build_parser().parse_args(argv)
    try:
        groups = read_source(args.source)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    path = write_report(groups, args.source, args.out)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
