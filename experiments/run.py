"""Experiment runner: methods x seeds (x overrides), comparison tables and plots.

Each run is a real federation: the ServerApp's strategy and the ClientApp's
handlers, driven in-process by :class:`~experiments.local_grid.InProcessGrid`
(no Ray), so a sweep of many runs fits on a laptop CPU. Each run writes its own
``<out>/runs/<method>-s<seed>/`` like ``flwr run`` does; a run whose directory
already holds a ``summary.json`` for the same configuration is not run again.

Usage::

    python -m experiments.run --methods mlecs,fedit,standalone --seeds 0,1,2,3,4 \
        --num-nodes 10 --out outputs/compare [--config FILE] [--set key=value ...] [--jobs 2]

Writes ``results.json`` (method -> run summaries), ``table.md`` (mean ± std of
the final and the tail metrics, paired differences with 95% intervals),
``curves.png`` (client macro-F1 per round) and ``diffs.png`` (paired differences
against the first method).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from common.atomic import write_text
from common.settings import RunSettings, flatten, parse_overrides, read_toml_config
from experiments import stats

TABLE_METRICS = ("client_f1", "client_rouge_lsum", "server_f1", "server_rouge_lsum")


def run_one(config: dict, num_nodes: int) -> dict:
    """Run one federation in-process; return its summary (also on disk)."""
    from client_app.app import app as client_app
    from experiments.local_grid import InProcessGrid
    from server_app.run import ServerRun

    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = InProcessGrid(client_app, config, num_nodes)
    start = time.time()
    summary = run.run(grid)
    summary["seconds"] = round(time.time() - start, 1)
    summary["num_nodes"] = num_nodes
    write_text(run.recorder.dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _worker(config: dict, num_nodes: int, threads: int) -> dict:
    import flwr.common.logger  # noqa: F401  (configures the "flwr" logger on import)
    import torch

    torch.set_num_threads(threads)
    quiet()
    return run_one(config, num_nodes)


def quiet() -> None:
    """Only warnings from Flower (one line per round is the runner's own)."""
    import flwr.common.logger  # noqa: F401

    logging.getLogger("flwr").setLevel(logging.WARNING)


def done_summary(config: dict, num_nodes: int) -> dict | None:
    """The summary of a finished run with exactly this configuration, if there is one."""
    run_dir = Path(config["output-dir"]) / config["run-name"]
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = json.loads((run_dir / "config.json").read_text())["run_config"]
    except (OSError, ValueError, KeyError):
        return None
    wanted = flatten(RunSettings.from_run_config(config))
    same = saved == json.loads(json.dumps(wanted)) and summary.get("num_nodes") == num_nodes
    return summary if same and summary.get("rounds") else None


def cells(base: dict, methods: list[str], seeds: list[int], out: Path) -> list[dict]:
    """One run config per (method, seed)."""
    return [
        {
            **base,
            "method": method,
            "seed": seed,
            "output-dir": str(out / "runs"),
            "run-name": f"{method}-s{seed}",
        }
        for method in methods
        for seed in seeds
    ]


def sweep(configs: list[dict], num_nodes: int, jobs: int) -> list[dict]:
    """Run every config not finished yet (``jobs`` processes); summaries in config order."""
    results: list[dict | None] = [done_summary(c, num_nodes) for c in configs]
    todo = [i for i, r in enumerate(results) if r is None]
    print(f"{len(configs) - len(todo)} of {len(configs)} runs already done", flush=True)
    start = time.time()
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))

    def report(i: int, k: int) -> None:
        s = results[i]
        f1 = (s.get("tail") or {}).get("client_f1")
        left = (time.time() - start) / k * (len(todo) - k)
        print(
            f"[{k}/{len(todo)}] {configs[i]['run-name']}: tail client_f1 "
            f"{'n/a' if f1 is None else f'{f1:.3f}'} ({s['seconds']}s, ~{left / 60:.0f} min left)",
            flush=True,
        )

    if jobs <= 1:
        for k, i in enumerate(todo, 1):
            results[i] = run_one(configs[i], num_nodes)
            report(i, k)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_worker, configs[i], num_nodes, threads): i for i in todo}
            for k, fut in enumerate(as_completed(futures), 1):
                i = futures[fut]
                results[i] = fut.result()
                report(i, k)
    return [r for r in results if r is not None]


def write_outputs(results: dict[str, list[dict]], out: Path) -> str:
    """``results.json``, ``table.md``, ``curves.png``, ``diffs.png``; return the table."""
    write_text(out / "results.json", json.dumps(results, indent=2))
    md = "\n\n".join(
        [
            "### Tail (mean of the last `eval.tail-rounds` rounds), mean ± std over seeds",
            stats.summary_table(results, "tail"),
            "### Final round, mean ± std over seeds",
            stats.summary_table(results, "final"),
            "### Paired differences of the tail metrics (mean [95% interval])",
            stats.diff_table(results, TABLE_METRICS),
        ]
    )
    write_text(out / "table.md", md + "\n")
    histories = {m: [_history(out, r) for r in runs] for m, runs in results.items()}
    stats.plot_curves(histories, "client_f1", out / "curves.png")
    if len(results) > 1:
        stats.plot_diffs(results, "client_f1", next(iter(results)), out / "diffs.png")
    return md


def _history(out: Path, summary: dict) -> list[dict]:
    path = out / "runs" / f"{summary['method']}-s{summary['seed']}" / "rounds.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x]


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write its tables and plots."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="mlecs,fedit,standalone")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--num-nodes", type=int, default=10)
    p.add_argument("--out", default="outputs/compare")
    p.add_argument("--config", help="a TOML override file applied to every run")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run-config override applied to every run",
    )
    args = p.parse_args(argv)
    quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = read_toml_config(args.config) if args.config else {}
    base.update(parse_overrides(args.set))
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = cells(base, methods, seeds, out)
    for config in configs:  # fail before any run on a bad override
        RunSettings.from_run_config(config)
    summaries = sweep(configs, args.num_nodes, args.jobs)
    results: dict[str, list[dict]] = {}
    for s in summaries:
        results.setdefault(s["method"], []).append(s)
    print(write_outputs(results, out))


if __name__ == "__main__":
    main()
