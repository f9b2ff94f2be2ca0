"""Bytes on the wire per transport dtype, for SmolLM2-135M, and what each dtype costs.

Usage::

    python -m benchmarks.comm --out benchmarks/results/comm.json \
        [--f1-seeds 0,1,2] [--jobs 2] [--no-f1]

``bytes``: per device per round, by kind, and the ratio to the edge model's fp32
parameter bytes, for SmolLM2-135M in the configuration of
``conf/smollm2_comm.toml`` (no weights needed), for ``float32``, ``float16`` and
``int8``. ``f1``: the default setting's tail client macro-F1 with each dtype
(in-process runs through the sweep runner, seeds given; finished runs in
``--runs-dir`` are reused), and its relative cost against ``float32``, paired by
seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.atomic import write_text
from common.run_config import read_toml_config
from common.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "float16", "int8")


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
    p.add_argument("--f1-seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--runs-dir", default="/tmp/mlecs-bench/comm", help="finished runs are kept")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="dtypes of the F1 runs")
    p.add_argument("--no-f1", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    from experiments.comm_report import report
    from experiments.run import quiet, sweep

    p = build_parser()
    args = p.parse_args(argv)
    quiet()
    base = read_toml_config(str(ROOT / "conf" / "smollm2_comm.toml"))
    result: dict[str, dict] = {"bytes": {}, "f1": {}}
    for dtype in DTYPES:
        settings = RunSettings.from_run_config({**base, "transport.dtype": dtype})
        result["bytes"][dtype] = report(settings, "smollm2-135m", public_share=58)
        print(dtype, "ratio", result["bytes"][dtype]["ratio"], flush=True)
    if not args.no_f1:
        seeds = [int(s) for s in args.f1_seeds.split(",") if s]
        dtypes = ["float32", *(d for d in args.dtypes.split(",") if d and d != "float32")]
        unknown = set(dtypes) - set(DTYPES)
        if unknown:
            p.error(f"unknown --dtypes {sorted(unknown)}; choose from {DTYPES}")
        configs = [
            {
                "transport.dtype": dtype,
                "seed": seed,
                "num-server-rounds": args.rounds,
                "output-dir": args.runs_dir,
                "run-name": f"{dtype}-s{seed}",
            }
            for dtype in dtypes
            for seed in seeds
        ]
        tails = [s["tail"]["client_f1"] for s in sweep(configs, 10, args.jobs)]
        by_dtype = {d: tails[i * len(seeds) : (i + 1) * len(seeds)] for i, d in enumerate(dtypes)}
        ref = np.asarray(by_dtype["float32"])
        for dtype, values in by_dtype.items():
            # Paired by seed: the same data, model and batches, only the wire dtype differs.
            cost = (ref - np.asarray(values)) / ref
            result["f1"][dtype] = {
                "seeds": seeds,
                "tail_client_f1": values,
                "mean": float(np.mean(values)),
                "relative_cost": float(cost.mean()),
                "relative_cost_per_seed": cost.tolist(),
            }
            print(dtype, "tail F1", result["f1"][dtype]["mean"], flush=True)
    write_text(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
