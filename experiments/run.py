"""Experiment runner: methods x seeds (x overrides), comparison table and plot.

Each run is a real federation: the ServerApp's strategy and the ClientApp's
handlers, driven in this process by :class:`~experiments.local_grid.InProcessGrid`
(no Ray), so a sweep of many runs fits on a laptop CPU. Each run writes its own
``<output-dir>/<run-name>/`` like ``flwr run`` does.

Usage::

    python -m experiments.run --methods mlecs,fedit,standalone --seeds 0,1,2 \
        --num-nodes 10 --out outputs/compare [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from client_app.app import app as client_app
from common.settings import RunSettings, parse_overrides, read_toml_config
from experiments.local_grid import InProcessGrid
from server_app.run import ServerRun

METRICS = (
    "client_rouge_lsum",
    "client_bertscore_f1",
    "client_f1",
    "server_rouge_lsum",
    "server_bertscore_f1",
    "server_f1",
)


def run_one(config: dict, num_nodes: int) -> dict:
    """Run one federation in-process; return its summary (also on disk)."""
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = InProcessGrid(client_app, config, num_nodes)
    start = time.time()
    summary = run.run(grid)
    summary["seconds"] = round(time.time() - start, 1)
    return summary


def table(results: dict[str, list[dict]]) -> str:
    """Markdown table: mean ± sample std over seeds, per method and metric."""
    head = "| method | seeds | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for method, runs in results.items():
        cells = []
        for key in METRICS:
            vals = [r["final"][key] for r in runs if r["final"].get(key) is not None]
            if not vals:
                cells.append("n/a")
                continue
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            cells.append(f"{np.mean(vals):.4f} ± {std:.4f}")
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Bar chart of client and server ROUGE-Lsum per method (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 3.4))
    x = np.arange(len(methods))
    for off, key in ((-0.2, "client_rouge_lsum"), (0.2, "server_rouge_lsum")):
        vals = [[r["final"][key] or 0.0 for r in results[m]] for m in methods]
        ax.bar(
            x + off,
            [np.mean(v) for v in vals],
            0.4,
            yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals],
            label=key.replace("_", " "),
            capsize=3,
        )
    ax.set_xticks(x, methods)
    ax.set_ylabel("ROUGE-Lsum")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write ``results.json``, ``table.md`` and ``comparison.png``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="mlecs,fedit,standalone")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--num-nodes", type=int, default=10)
    p.add_argument("--out", default="outputs/compare")
    p.add_argument("--config", help="a TOML override file applied to every run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run-config override applied to every run",
    )
    args = p.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = read_toml_config(args.config) if args.config else {}
    base.update(parse_overrides(args.set))
    RunSettings.from_run_config(base)  # fail before any run on a bad override
    results: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            config = {
                **base,
                "method": method,
                "seed": seed,
                "output-dir": str(out / "runs"),
                "run-name": f"{method}-s{seed}",
            }
            summary = run_one(config, args.num_nodes)
            results.setdefault(method, []).append(summary)
            f = summary["final"]
            print(
                f"{method} seed {seed}: client rougeLsum {f['client_rouge_lsum']:.4f} "
                f"server rougeLsum {f['server_rouge_lsum']:.4f} ({summary['seconds']}s)",
                flush=True,
            )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    plot(results, out / "comparison.png")
    print(md)


if __name__ == "__main__":
    main()
