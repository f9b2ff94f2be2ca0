"""Paired comparison of runs from different sweeps: variants beside a sweep's methods.

A sweep's ``results.json`` holds the runs of its methods; a variant run with other
settings (``--set ...``) lands in a sweep of its own under the same method name. This
puts them side by side under labels and writes the summary and the paired-difference
tables (per seed, from ``tail`` values), e.g. ``python -m experiments.compare
mlecs=outputs/private/results.json:mlecs r16=outputs/private_r16/results.json:mlecs``.

A source may also name a sweep's ``runs`` folder instead of its ``results.json``: a
sweep run in pieces (``--seeds 10,11``, then ``--seeds 12,13``, ...) rewrites
``results.json`` with each piece's cells, while every finished run keeps its
``summary.json`` there. ``--seeds`` restricts every source to the given seeds, so a
replication on fresh seeds is tested on those alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.atomic import write_text
from experiments import stats
from experiments.grid import finished_runs
from experiments.report import TABLE_METRICS, csv_text, rows


def parse_source(spec: str) -> tuple[str, Path, str]:
    """``LABEL=PATH:METHOD`` -> (label, path, method).

    Raises
    ------
    ValueError
        If the spec does not have that form.
    """
    label, sep, rest = spec.partition("=")
    path, sep2, method = rest.rpartition(":")
    if not (sep and sep2 and label and path and method):
        raise ValueError(f"expected LABEL=PATH:METHOD, got {spec!r}")
    return label, Path(path), method


def parse_seeds(text: str) -> set[int]:
    """``"0,1,5-9"`` -> {0, 1, 5, 6, 7, 8, 9}.

    Raises
    ------
    ValueError
        If an entry is neither an integer nor a range ``a-b`` with ``a <= b``.
    """
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        try:
            lo, hi = int(first), int(last if dash else first)
        except ValueError:
            raise ValueError(f"seeds: expected integers or ranges a-b, got {part!r}") from None
        if lo > hi:
            raise ValueError(f"seeds: empty range {part!r}")
        seeds.update(range(lo, hi + 1))
    return seeds


def load(specs: list[str], seeds: set[int] | None = None) -> dict[str, list[dict]]:
    """Label -> the run summaries of that method in that ``results.json`` or ``runs`` folder.

    Parameters
    ----------
    specs
        ``LABEL=PATH:METHOD`` each; PATH a sweep's ``results.json`` or its ``runs`` folder.
    seeds
        Keep only these seeds (None: every seed).

    Raises
    ------
    ValueError
        If a source has no runs of the method (on those seeds), or a label is given twice.
    """
    out: dict[str, list[dict]] = {}
    for spec in specs:
        label, path, method = parse_source(spec)
        if label in out:
            raise ValueError(f"label {label!r} given twice")
        if path.is_dir():
            runs = [
                json.loads((run / "summary.json").read_text())
                for run in finished_runs(path, method).values()
            ]
        else:
            runs = json.loads(path.read_text()).get(method) or []
        if seeds is not None:
            runs = [r for r in runs if r["seed"] in seeds]
        if not runs:
            on = "" if seeds is None else " on the seeds asked for"
            raise ValueError(f"{path} has no runs of method {method!r}{on}")
        out[label] = runs
    return out


def parse_primary(specs: list[str], labels: list[str]) -> tuple[tuple[str, str, str], ...]:
    """``["A:B", ...]`` -> ``((A, B, "client_f1"), ...)``, the primary comparisons.

    Raises
    ------
    ValueError
        If a spec is not ``A:B`` or names a label that is not among ``labels``.
    """
    out = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not (sep and a and b):
            raise ValueError(f"--primary: expected A:B, got {spec!r}")
        unknown = [x for x in (a, b) if x not in labels]
        if unknown:
            raise ValueError(f"--primary: {unknown} not among the labels {labels}")
        out.append((a, b, PRIMARY_METRIC))
    return tuple(out)


PRIMARY_METRIC = "client_f1"


def markdown(
    results: dict[str, list[dict]],
    metrics: tuple[str, ...] = TABLE_METRICS,
    primary: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """The summary table and the paired-difference table of ``results``."""
    diffs = stats.diff_table(results, metrics, primary)
    return stats.summary_table(results) + "\n\n" + diffs + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", help="LABEL=PATH:METHOD (a results.json or runs folder)")
    p.add_argument("--seeds", help="only these seeds, e.g. 10-29 or 0,1,2 (default: all)")
    p.add_argument("--out", type=Path, help="write the tables here (markdown)")
    p.add_argument("--csv", type=Path, help="write one row per run here, under its label")
    p.add_argument(
        "--plot", type=Path, help="write the paired differences against the first label here (png)"
    )
    p.add_argument("--metric", default="client_f1", help="the metric of --plot")
    p.add_argument(
        "--primary",
        action="append",
        default=[],
        metavar="A:B",
        help="a primary comparison (client macro-F1), named before the runs; the others "
        "are Holm-corrected",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Command line: print (and with ``--out`` write) the tables of the given sources."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        results = load(args.sources, parse_seeds(args.seeds) if args.seeds else None)
        primary = parse_primary(args.primary, list(results))
    except ValueError as e:
        p.error(str(e))  # exits 2 with the problem named, no traceback
    text = markdown(results, primary=primary)
    if args.out:
        write_text(args.out, text)
    if args.csv:
        write_text(args.csv, csv_text(rows({"compare": results})))
    if args.plot:
        stats.plot_diffs(results, args.metric, next(iter(results)), args.plot)
    print(text)


if __name__ == "__main__":
    main()
