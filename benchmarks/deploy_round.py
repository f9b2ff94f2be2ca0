"""Seconds per round in deployment: SuperLink, Fleet proxy and SuperNodes on loopback.

Usage::

    python -m benchmarks.deploy_round --out benchmarks/results/deploy_round.json \
        [--num-nodes 3] [--rounds 6] [--set key=value ...]

Starts a whole deployment through the ``deploy/`` scripts (TLS, SuperNode
authentication, the Fleet proxy; ``deploy.loopback``), submits the app with
``flwr run`` like an operator, with the default (tiny) configuration, one
device per SuperNode, and reads each round's wall time from the run's
``rounds.jsonl``. Keys: ``seconds_per_round`` (median over the rounds after the
first, which also builds each device and fills the caches), ``first_round``,
``rounds`` (every round's seconds) and ``wall`` (submission to finish). Every
process it starts is stopped by its process group, also on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common.atomic import write_text
from deploy.loopback import (
    REPO,
    Processes,
    final_status,
    loopback_env,
    run_id_of,
    start_federation,
    tail,
)


def measure(num_nodes: int, rounds: int, overrides: list[str], tmp: Path) -> dict:
    """Run one deployment of ``rounds`` rounds; per-round seconds from its records."""
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    env, node_env = loopback_env(tmp)
    procs = Processes(env, tmp, tmp / "logs")
    try:
        fed = start_federation(procs, tmp, num_nodes, node_env)
        out_dir = tmp / "out"
        run_config = " ".join(
            [
                f"num-server-rounds={rounds}",
                f"strategy.min-nodes={num_nodes}",
                "eval.bertscore=false",
                *overrides,
                f'cache-dir="{tmp / "cache"}"',
                f'output-dir="{out_dir}"',
                'run-name="deploy-round"',
            ]
        )
        started = time.monotonic()
        run = procs.start(
            "flwr-run",
            ["flwr", "run", ".", fed["connection"], "--run-config", run_config, "--stream"],
            cwd=REPO,
        )
        try:
            run.wait(timeout=60 * (5 + 2 * rounds))
        except subprocess.TimeoutExpired:
            log = tail(procs.log("flwr-run"), 80)
            raise RuntimeError(f"flwr run did not end:\n{log}") from None
        text = procs.log("flwr-run").read_text(errors="replace")
        status = final_status(env, fed["connection"], run_id_of(env, fed["connection"], text))
        wall = time.monotonic() - started
        if status["status"] != "finished:completed":
            raise RuntimeError(f"run ended {status['status']}:\n{text[-5000:]}")
        records = (out_dir / "deploy-round" / "rounds.jsonl").read_text().splitlines()
        seconds = [json.loads(line)["seconds"] for line in records]
        accepted = [json.loads(line)["aggregation"]["accepted"] for line in records]
    finally:
        procs.stop_all()
    return {
        "num_nodes": num_nodes,
        "seconds_per_round": statistics.median(seconds[1:] or seconds),
        "first_round": seconds[0],
        "rounds": seconds,
        "accepted": accepted,
        "wall": round(wall, 1),
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
    p.add_argument("--num-nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--set", action="append", default=[], help="run-config override key=value")
    p.add_argument("--keep", action="store_true", help="keep the logs and outputs")
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    args = build_parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mlecs-deploy-round-"))
    try:
        result = measure(args.num_nodes, args.rounds, args.set, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["overrides"] = args.set
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
