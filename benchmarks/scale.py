"""Many simulated devices: N devices x R rounds of the tiny configuration, partial participation.

Usage::

    python -m benchmarks.scale --out benchmarks/results/scale.json [--num-nodes 100] [--rounds 3] \
        [--fraction 1.0] [--set key=value ...]

Runs the in-process federation (the real strategy and ClientApp handlers, every
device in this process, built when first sampled and reset from its state for each
message) on easy-VQA (a Dirichlet split serves any number of devices; HAPT has 24
private users). ``--fraction`` samples that share of the devices each round for
training and for evaluation (``strategy.fraction-train``,
``strategy.fraction-evaluate``). Keys: ``seconds`` (wall time of the whole run,
setup included), ``peak_rss_gib`` (the process's peak resident memory),
``seconds_per_round`` (mean of the rounds' own times in ``rounds.jsonl``),
``devices_per_round`` (devices that trained in a round, mean) and ``server``: the
server's own cost per round in seconds, by part (``accept``: validating each
contribution; ``aggregation``: MMA weights and the shared deltas; ``consensus``:
the representation consensus; ``cloud_step``: the cloud's SE-CCL training,
representations and distillation; ``cloud_evaluate``; ``checkpoint``), so that
its growth with the number of devices shows beside the devices' cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

from benchmarks.round_profile import timed
from common.atomic import write_text
from common.run_config import parse_overrides

SERVER_PARTS = {
    "accept": ["server_app.strategy.MlEcsStrategy._accept"],
    "aggregation": ["server_app.strategy.aggregate_shared", "server_app.strategy.mma_weights"],
    "consensus": ["server_app.strategy.representation_consensus"],
    "cloud_step": [
        "server_app.cloud.Cloud.step",
        "server_app.cloud.Cloud.representations",
        "server_app.cloud.Cloud.distill",
    ],
    "cloud_evaluate": ["server_app.cloud.Cloud.evaluate"],
    "checkpoint": ["server_app.run.save_checkpoint"],
}


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
    p.add_argument("--fraction", type=float, default=1.0, help="devices sampled per round")
    p.add_argument("--set", action="append", default=[])
    return p


def run(config: dict, num_nodes: int) -> tuple[dict, dict[str, float], list[dict]]:
    """Run the federation with timers on the server's parts.

    Returns
    -------
    tuple
        The run's summary, the seconds spent in each of ``SERVER_PARTS`` over the
        whole run, and the run's round records.
    """
    from client_app.app import app as client_app
    from common.settings import RunSettings
    from experiments.local_grid import InProcessGrid
    from server_app.run import ServerRun

    totals: dict[str, float] = defaultdict(float)
    with ExitStack() as stack:
        for part, targets in SERVER_PARTS.items():
            for target in targets:
                stack.enter_context(timed(target, part, totals))
        server = ServerRun(RunSettings.from_run_config(config))
        summary = server.run(InProcessGrid(client_app, config, num_nodes))
    lines = (server.recorder.dir / "rounds.jsonl").read_text().splitlines()
    return summary, dict(totals), [json.loads(x) for x in lines if x]


def main(argv: list[str] | None = None) -> None:
    """Run the federation and write the JSON."""
    from experiments.run import quiet

    args = build_parser().parse_args(argv)
    quiet()
    config = {
        "dataset": "easyvqa",
        "num-server-rounds": args.rounds,
        "eval.bertscore": False,
        "strategy.fraction-train": args.fraction,
        "strategy.fraction-evaluate": args.fraction,
        "output-dir": "/tmp/mlecs-bench",
        "run-name": f"scale-{args.num_nodes}-{int(time.time())}",
        **parse_overrides(args.set),
    }
    start = time.time()
    summary, totals, rounds = run(config, args.num_nodes)
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    trained = [r["aggregation"]["accepted"] for r in rounds if "aggregation" in r]
    result = {
        "num_nodes": args.num_nodes,
        "rounds": args.rounds,
        "fraction": args.fraction,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak, 2),
        "seconds_per_round": round(sum(r["seconds"] for r in rounds) / len(rounds), 1),
        "devices_per_round": sum(trained) / max(1, len(trained)),
        "server": {part: round(totals.get(part, 0.0) / args.rounds, 4) for part in SERVER_PARTS},
        "final": summary["final"],
    }
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
