"""Many simulated devices: 100 devices x 3 rounds of the tiny configuration.

Usage::

    python -m benchmarks.scale --out benchmarks/results/scale.json [--num-nodes 100] [--rounds 3]

Runs the in-process federation (the real strategy and ClientApp handlers, every
device in this process, built once and reset from its state for each message) on
easy-VQA (a Dirichlet split serves any number of devices; HAPT has 24 private
users). Keys: ``seconds`` (wall time of the whole run, setup included),
``peak_rss_gib`` (the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from common.atomic import write_text
from common.run_config import parse_overrides


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-nodes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--set", action="append", default=[])
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the federation and write the JSON."""
    from experiments.run import quiet, run_one

    args = build_parser().parse_args(argv)
    quiet()
    config = {
        "dataset": "easyvqa",
        "num-server-rounds": args.rounds,
        "eval.bertscore": False,
        "output-dir": "/tmp/mlecs-bench",
        "run-name": f"scale-{args.num_nodes}-{int(time.time())}",
        **parse_overrides(args.set),
    }
    start = time.time()
    summary = run_one(config, args.num_nodes)
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    result = {
        "num_nodes": args.num_nodes,
        "rounds": args.rounds,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak, 2),
        "final": summary["final"],
    }
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
