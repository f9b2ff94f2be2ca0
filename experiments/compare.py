"""Paired comparison of runs from different sweeps: variants beside a sweep's methods.

A sweep's ``results.json`` holds the runs of its methods; a variant run with other
settings (``--set ...``) lands in a sweep of its own under the same method name. This
puts them side by side under labels and writes the summary and the paired-difference
tables (per seed, from ``tail`` values), e.g. ``python -m experiments.compare
mlecs=outputs/private/results.json:mlecs r16=outputs/private_r16/results.json:mlecs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.atomic import write_text
from experiments import stats
from experiments.report import TABLE_METRICS


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


def load(specs: list[str]) -> dict[str, list[dict]]:
    """Label -> the run summaries of that method in that ``results.json``.

    Raises
    ------
    ValueError
        If a file lacks the method, or a label is given twice.
    """
    out: dict[str, list[dict]] = {}
    for spec in specs:
        label, path, method = parse_source(spec)
        if label in out:
            raise ValueError(f"label {label!r} given twice")
        runs = json.loads(path.read_text()).get(method)
        if not runs:
            raise ValueError(f"{path} has no runs of method {method!r}")
        out[label] = runs
    return out


def markdown(results: dict[str, list[dict]], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """The summary table and the paired-difference table of ``results``."""
    return stats.summary_table(results) + "\n\n" + stats.diff_table(results, metrics) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: print (and with ``--out`` write) the tables of the given sources."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", help="LABEL=PATH/results.json:METHOD")
    p.add_argument("--out", type=Path, help="write the tables here (markdown)")
    args = p.parse_args(argv)
    text = markdown(load(args.sources))
    if args.out:
        write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
