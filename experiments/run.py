"""Experiment runner: methods x seeds (x datasets x settings), tables and plots.

Each run is a real federation: the ServerApp's strategy and the ClientApp's
handlers, driven in-process by :class:`~experiments.local_grid.InProcessGrid`
(no Ray), so a sweep of many runs fits on a laptop CPU. Each run writes its own
run folder like ``flwr run`` does; a run whose folder already holds a
``summary.json`` for the same configuration is not run again, and one that
stopped part-way is resumed from its checkpoint.

Usage::

    python -m experiments.run --methods mlecs,fedit,standalone --seeds 0,1,2,3,4 \
        --num-nodes 10 --out outputs/compare [--config FILE] [--set key=value ...] [--jobs 2]
    python -m experiments.run --grid conf/grids/quick.toml --out outputs/quick --jobs 2

Writes ``results.json`` (method -> run summaries; per group for a grid),
``results.csv`` (one row per run: every final and tail metric, the ledger),
``table.md`` (mean ± std of the tail and final metrics, paired differences with
95% intervals), ``curves*.png`` (client macro-F1 per round) and ``diffs*.png``
(paired differences against the first method). ``method = "centralized"`` runs
the pooled-data ceiling (``experiments.ceilings``) as a cell.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from common.atomic import write_text
from common.methods import METHODS, Components, amt_variant
from common.run_config import flatten, parse_overrides, read_toml_config
from common.settings import ConfigError, RunSettings
from experiments.exclusive import SweepBusy, die_with_parent, exclusive
from experiments.grid import CENTRALIZED, Cell, GridError, SweepGrid, cells, check, read_grid
from experiments.report import write_outputs


def run_one(config: dict, num_nodes: int) -> dict:
    """Run one federation in-process (or the centralized ceiling); return its summary."""
    from client_app.app import app as client_app
    from experiments.ceilings import cloud_on_device
    from experiments.local_grid import InProcessGrid
    from server_app.run import ServerRun

    if config.get("method") == CENTRALIZED:
        return run_centralized(config, num_nodes)
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = InProcessGrid(client_app, config, num_nodes)
    start = time.time()
    summary = run.run(grid)
    summary["seconds"] = round(time.time() - start, 1)
    summary["num_nodes"] = num_nodes
    # The cloud-on-device ceiling of this run's final cloud (evaluation only).
    ceiling = cloud_on_device(settings, run.cloud.model, num_nodes)
    for block in ("final", "tail"):
        summary[block].update({f"cloud_on_device_{k}": v for k, v in ceiling.items()})
    write_text(run.recorder.dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def run_centralized(config: dict, num_nodes: int) -> dict:
    """The centralized ceiling as a cell of a sweep: a summary like a federation's.

    Its client metrics are the pooled model's mean scores over the devices' test
    splits after the whole step budget; ``tail`` equals ``final`` (one evaluation).
    """
    from experiments.ceilings import centralized

    settings = RunSettings.from_run_config({**config, "method": "standalone"})
    run_dir = Path(settings.output_dir).expanduser() / settings.run_name
    start = time.time()
    scores = centralized(settings, num_nodes)
    final = {f"client_{k}": v for k, v in scores.items()}
    summary = {
        "method": CENTRALIZED,
        "dataset": settings.dataset,
        "seed": settings.seed,
        "rounds": settings.num_server_rounds,
        "final": final,
        "tail": dict(final),
        "seconds": round(time.time() - start, 1),
        "num_nodes": num_nodes,
    }
    config_record = {"run_config": resolved(config)}
    write_text(run_dir / "config.json", json.dumps(config_record, indent=2))
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
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


def resolved(config: dict) -> dict:
    """The flat, resolved run config of a cell (the centralized ceiling parses as standalone).

    Raises
    ------
    ConfigError
        On an unknown key or an impossible value, naming it.
    """
    central = config.get("method") == CENTRALIZED
    settings = RunSettings.from_run_config(
        {**config, "method": "standalone"} if central else config
    )
    flat = json.loads(json.dumps(flatten(settings)))
    if central:
        flat["method"] = CENTRALIZED
    return flat


def done_summary(config: dict, num_nodes: int) -> dict | None:
    """The summary of a finished run with exactly this configuration, if there is one."""
    run_dir = Path(config["output-dir"]) / config["run-name"]
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = json.loads((run_dir / "config.json").read_text())["run_config"]
    except (OSError, ValueError, KeyError):
        return None
    same = _same_run(saved, resolved(config)) and summary.get("num_nodes") == num_nodes
    return summary if same and summary.get("rounds") else None


# Keys added after finished runs were saved, with the value those runs ran with.
ADDED_KEYS = {
    "ccl.cloud": True,
    "ccl.private-stage": True,
    "ccl.max-share": 1.0,
    "server.encoders": "",
    "seccl.unlabelled-public": False,
    "lora.encoder-rank": 0,
    "lora.encoder-alpha": 8.0,
    "lora.encoder-share": True,
    "seccl.prototype-weight": 0.0,
    "seccl.prototype-temperature": 0.1,
    "seccl.prototype-views": False,
    "seccl.modality-prototypes": False,
    "eval.decode": "generate",
    "amt.variant": "schedule",
}
# Keys that act only through CCL: they do not tell apart two runs of a method without it.
CCL_KEYS = ("ccl.weight", "ccl.cloud", "ccl.private-stage", "ccl.max-share")
# Act only where a method runs AMT's stages.
AMT_KEYS = ("amt.variant", "amt.shared-fraction")
# Acts only for a method with device anchors (SE-CCL, CreamFL) without public shares.
UNLABELLED_KEY = "seccl.unlabelled-public"
# Act only for a method that shares encoder adapters (the others only at a rank > 0).
ENCODER_KEYS = ("lora.encoder-rank", "lora.encoder-alpha", "lora.encoder-share")
# Act only for a method with SE-CCL (the temperature and views only with a weight above 0).
PROTOTYPE_KEYS = (
    "seccl.prototype-weight",
    "seccl.prototype-temperature",
    "seccl.prototype-views",
    "seccl.modality-prototypes",
)


def _identity(flat: dict) -> dict:
    merged = {**ADDED_KEYS, **flat}
    method = merged.get("method")
    comps = Components.for_method(method) if method in METHODS else None
    # Where a run is written is not what it computes: a sweep folder that was moved
    # or renamed keeps its finished runs instead of having them removed and rerun.
    inert = {"resume", "output-dir"}
    if comps is None or not comps.ccl:
        inert.update(CCL_KEYS)
    anchored = comps is not None and (comps.seccl or comps.rep_exchange)
    if not anchored or merged.get("data.use-public-share", True):
        inert.add(UNLABELLED_KEY)
    if comps is None or not comps.share_encoders:
        inert.update(ENCODER_KEYS)
    elif not merged.get("lora.encoder-rank"):
        inert.update(ENCODER_KEYS[1:])
    variant = amt_variant(method, merged.get("amt.variant", "off")) if comps else None
    if variant is None:
        inert.update(AMT_KEYS)
    else:  # the variant that runs ("off" is "schedule" for the controls)
        merged["amt.variant"] = variant
    if comps is None or not comps.seccl:
        inert.update(PROTOTYPE_KEYS)
    elif not merged.get("seccl.prototype-weight"):
        inert.update(PROTOTYPE_KEYS[1:])
    return {k: v for k, v in merged.items() if k not in inert}


def _same_run(saved: dict, wanted: dict) -> bool:
    """Whether two resolved configs describe the same run (a resumed run is the same run).

    A key the saved config lacks was added after that run and counts at the value
    it ran with (:data:`ADDED_KEYS`); keys that cannot act under the method are
    not compared.
    """
    return _identity(saved) == _identity(wanted)


def prepare(config: dict) -> dict:
    """The config to run a cell with: resume a run that stopped part-way, else start afresh.

    A run folder holding a checkpoint of the same configuration is resumed
    (``resume=true``); any other leftover folder of this cell is removed first.
    """
    run_dir = Path(config["output-dir"]) / config["run-name"]
    if not run_dir.exists():
        return config
    try:
        saved = json.loads((run_dir / "config.json").read_text())["run_config"]
    except (OSError, ValueError, KeyError):
        saved = None
    wanted = resolved(config)
    if saved is not None and (run_dir / "checkpoint.npz").exists():
        if _same_run(saved, wanted):
            return {**config, "resume": True}
    shutil.rmtree(run_dir)
    return config


def sweep(configs: list[dict], num_nodes: int, jobs: int) -> list[dict]:
    """Run every config not finished yet (``jobs`` processes); summaries in config order."""
    results: list[dict | None] = [done_summary(c, num_nodes) for c in configs]
    todo = [i for i, r in enumerate(results) if r is None]
    print(f"{len(configs) - len(todo)} of {len(configs)} runs already done", flush=True)
    start = time.time()
    # One torch thread per run whatever ``jobs``: the thread count splits floating-point
    # sums, so it changes a run's numbers; a config's ``threads`` pins another.
    threads = 1

    def report(i: int, k: int) -> None:
        s = results[i]
        f1 = (s.get("tail") or {}).get("client_f1")
        left = (time.time() - start) / k * (len(todo) - k)
        bar = "#" * round(20 * k / len(todo))
        print(
            f"[{bar:<20}] {k}/{len(todo)} {configs[i]['run-name']}: tail client_f1 "
            f"{'n/a' if f1 is None else f'{f1:.3f}'} ({s['seconds']}s, ~{left / 60:.0f} min left)",
            flush=True,
        )

    if jobs <= 1:
        import torch

        before = torch.get_num_threads()
        try:  # the caller's thread count is its own: restored after the runs
            for k, i in enumerate(todo, 1):
                torch.set_num_threads(threads)
                results[i] = run_one(prepare(configs[i]), num_nodes)
                report(i, k)
        finally:
            torch.set_num_threads(before)
    else:
        with ProcessPoolExecutor(
            jobs,
            mp_context=get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {
                pool.submit(_worker, prepare(configs[i]), num_nodes, threads): i for i in todo
            }
            for k, fut in enumerate(as_completed(futures), 1):
                i = futures[fut]
                results[i] = fut.result()
                report(i, k)
    return [r for r in results if r is not None]  # every cell ran, or sweep() raised


def _history_reader(grid_cells: list[Cell]):
    folders = {(c.group, c.method, c.seed): Path(c.config["output-dir"]) for c in grid_cells}

    def history(group: str, summary: dict) -> list[dict]:
        folder = folders.get((group, summary["method"], summary["seed"]))
        path = None if folder is None else folder / f"{summary['method']}-s{summary['seed']}"
        if path is None or not (path / "rounds.jsonl").exists():
            return []
        return [json.loads(x) for x in (path / "rounds.jsonl").read_text().splitlines() if x]

    return history


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
        "--grid", type=Path, help="a TOML grid file (methods x datasets x settings x seeds)"
    )
    p.add_argument("--methods", default="mlecs,fedit,standalone")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--num-nodes", type=int, help="devices per run (default 10, or the grid's)")
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
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write its tables and plots."""
    args = build_parser().parse_args(argv)
    quiet()
    out = Path(args.out)
    base = read_toml_config(args.config) if args.config else {}
    base.update(parse_overrides(args.set))
    try:
        if args.grid:
            sweep_grid = read_grid(args.grid, base)
        else:
            methods = [m for m in args.methods.split(",") if m]
            sweep_grid = SweepGrid(
                methods=methods, seeds=[int(s) for s in args.seeds.split(",") if s]
            )
            sweep_grid.base = base
        if args.num_nodes:
            sweep_grid.num_nodes = args.num_nodes
        grid_cells = cells(sweep_grid, out)
        check(grid_cells, resolved)  # fail before any run on a bad entry
    except (GridError, ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    try:
        with exclusive(out):
            summaries = sweep([c.config for c in grid_cells], sweep_grid.num_nodes, args.jobs)
            results: dict[str, dict[str, list[dict]]] = {}
            for c, s in zip(grid_cells, summaries):
                results.setdefault(c.group, {}).setdefault(c.method, []).append(s)
            print(write_outputs(results, out, _history_reader(grid_cells)))
    except SweepBusy as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
