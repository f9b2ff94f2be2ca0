"""Where a round's time goes: build/restore, training, evaluation, server step, aggregation.

Usage::

    python -m benchmarks.round_profile --out benchmarks/results/round_profile_tiny.json \
        [--num-nodes 10] [--rounds 3] [--config FILE] [--set key=value ...] [--smollm2]

``--smollm2`` puts the SmolLM2-135M architecture (random weights,
``benchmarks.smollm2``) in as the devices' and the cloud's backbone, with LoRA
r=8 on ``q_proj,v_proj``.

Runs the in-process federation (the real strategy and ClientApp handlers) with
timers around each part and writes, per round on average: ``build_restore``
(building or resetting a device from its state), ``train_compute`` (local
training), ``eval_compute`` (device and cloud evaluation), ``server_step`` (the
cloud's training, representations, distillation), ``aggregation`` (validation and
MMA), ``other`` (serialisation, manifests, the Flower message layer, records) and
``overhead_fraction`` = other / round.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from common.atomic import write_text
from common.run_config import parse_overrides, read_toml_config

PARTS = {
    "build_restore": [
        "client_app.handlers._device",
        "client_app.device.Device.restore",
        "client_app.handlers.read_device_state",
        "client_app.handlers.write_device_state",
    ],
    "train_compute": ["client_app.device.Device.train"],
    "eval_compute": ["client_app.device.Device.evaluate", "server_app.cloud.Cloud.evaluate"],
    "server_step": [
        "server_app.cloud.Cloud.step",
        "server_app.cloud.Cloud.representations",
        "server_app.cloud.Cloud.distill",
    ],
    "aggregation": [
        "server_app.replies.check_contribution",
        "server_app.strategy.aggregate_shared",
        "server_app.strategy.mma_weights",
        "server_app.strategy.representation_consensus",
    ],
}


def spanned(target: str, on_call):
    """Patch ``target`` (``pkg.mod.func`` or ``pkg.mod.Class.method``) to report its calls.

    ``on_call(start, end)`` gets each call's ``time.monotonic`` stamps; the patch
    lasts while the returned context manager is entered.
    """
    module, _, name = target.rpartition(".")
    try:
        owner = importlib.import_module(module)
    except ModuleNotFoundError:  # a class attribute: "pkg.mod.Class.method"
        mod, _, cls = module.rpartition(".")
        owner = getattr(importlib.import_module(mod), cls)
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            on_call(start, time.monotonic())

    return mock.patch.object(owner, name, wrapper)


def timed(target: str, part: str, totals: dict[str, float]):
    """:func:`spanned`, adding each call's seconds to ``totals[part]``."""

    def add(start: float, end: float) -> None:
        totals[part] += end - start

    return spanned(target, add)


def federate(config: dict, num_nodes: int, started=None, round_ended=None) -> tuple[float, dict]:
    """Run ``config`` in-process with the real strategy and ClientApp handlers.

    Parameters
    ----------
    config : dict
        The flat run config.
    num_nodes : int
        Virtual devices, called one after another in this process.
    started : callable, optional
        Called once the server and the devices' grid are built, before round 1.
    round_ended : callable, optional
        Called with the round number after each round's record is written.

    Returns
    -------
    tuple of (float, dict)
        Wall seconds of the rounds (setup excluded; the cloud's round-0 tuning
        is not run) and the run's summary (``summary.json``).
    """
    from client_app.app import app as client_app
    from common.settings import RunSettings
    from experiments.local_grid import InProcessGrid
    from proto.records import to_record
    from server_app.run import ServerRun

    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = InProcessGrid(client_app, config, num_nodes)

    def end_round(flower_round, arrays):
        result = run.end_round(flower_round, arrays)
        if flower_round and round_ended is not None:
            round_ended(flower_round)
        return result

    if started is not None:
        started()
    start = time.perf_counter()
    run.strategy.start(
        grid=grid,
        initial_arrays=to_record(run.initial_state),
        num_rounds=settings.num_server_rounds,
        timeout=settings.strategy.round_timeout,
        evaluate_fn=end_round,
    )
    wall = time.perf_counter() - start
    return wall, run.finish()


def profile(config: dict, num_nodes: int) -> dict:
    """Run ``config`` in-process with timers; per-round seconds of each part."""
    totals: dict[str, float] = defaultdict(float)
    with ExitStack() as stack:
        for part, targets in PARTS.items():
            for target in targets:
                stack.enter_context(timed(target, part, totals))
        # setup (data, models, round 0) is not a round
        wall, _ = federate(config, num_nodes, started=totals.clear)
    from common.settings import RunSettings

    rounds = RunSettings.from_run_config(config).num_server_rounds
    out = {part: totals[part] / rounds for part in PARTS}
    out["round"] = wall / rounds
    out["other"] = max(0.0, out["round"] - sum(out[p] for p in PARTS))
    out["overhead_fraction"] = out["other"] / out["round"]
    return out


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
    p.add_argument("--num-nodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-shaped backbone")
    return p


def main(argv: list[str] | None = None) -> None:
    """Profile and write the JSON."""
    args = build_parser().parse_args(argv)
    config = read_toml_config(args.config) if args.config else {}
    config.update(parse_overrides(args.set))
    if args.smollm2:
        from benchmarks.smollm2 import smollm2_dir
        from common.settings import RunSettings

        path = smollm2_dir(RunSettings.from_run_config(config))
        config.update(
            {"model.backbone": str(path), "lora.rank": 8, "lora.targets": "q_proj,v_proj"}
        )
    config.setdefault("output-dir", "/tmp/mlecs-bench")
    config.setdefault("run-name", f"profile-{int(time.time())}")
    config["num-server-rounds"] = args.rounds
    result = {"config": config, "num_nodes": args.num_nodes, **profile(config, args.num_nodes)}
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
