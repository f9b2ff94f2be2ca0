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
``rounds`` (every round's seconds) and ``wall`` (submission to finish).

Then, on the same SuperLink and SuperNodes, it runs the floor: a bare Flower app
(``benchmarks/echo_app``: Flower's ``FedAvg``, devices that echo the arrays they
receive) for as many rounds, sending each device as many bytes as ML-ECS did.
``floor_seconds_per_round`` (and ``floor_first_round``, ``floor_rounds``) is
Flower's own cost of a round here (polling, a ClientApp process per message,
messaging); ``ratio`` is ``seconds_per_round / floor_seconds_per_round``.
``--no-floor`` skips it. Every process it starts is stopped by its process
group, also on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from common.atomic import write_text
from deploy.loopback import REPO, Processes, loopback_env, start_federation, submit_run

ECHO_APP = REPO / "benchmarks" / "echo_app"


def measure(num_nodes: int, rounds: int, overrides: list[str], tmp: Path, floor: bool) -> dict:
    """Run ML-ECS for ``rounds`` rounds (then, with ``floor``, the echo app) on one deployment."""
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    env, node_env = loopback_env(tmp)
    procs = Processes(env, tmp, tmp / "logs")
    timeout = 60 * (5 + 2 * rounds)
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
        wall, _ = submit_run(procs, fed["connection"], "flwr-run", run_config, timeout)
        records = [
            json.loads(line)
            for line in (out_dir / "deploy-round" / "rounds.jsonl").read_text().splitlines()
        ]
        result = {"num_nodes": num_nodes, **_summary([r["seconds"] for r in records])}
        result.update(accepted=[r["aggregation"]["accepted"] for r in records], wall=round(wall, 1))
        if floor:
            result.update(_floor(procs, fed, num_nodes, rounds, records, tmp, timeout))
            ratio = result["seconds_per_round"] / result["floor_seconds_per_round"]
            result["ratio"] = round(ratio, 2)
    finally:
        procs.stop_all()
    return result


def _summary(seconds: list[float], prefix: str = "") -> dict:
    """Median seconds over the rounds after the first (which also builds and fills caches)."""
    return {
        f"{prefix}seconds_per_round": statistics.median(seconds[1:] or seconds),
        f"{prefix}first_round": seconds[0],
        f"{prefix}rounds": seconds,
    }


def _floor(
    procs: Processes,
    fed: dict,
    num_nodes: int,
    rounds: int,
    records: list[dict],
    tmp: Path,
    timeout: float,
) -> dict:
    """The echo app on the same nodes, echoing as many bytes as ML-ECS sent each device."""
    payload = int(max(r["comm"].get("bytes_down_per_client_round", 0) for r in records))
    out_file = tmp / "floor.json"
    config = (
        f"num-server-rounds={rounds} min-nodes={num_nodes} payload-bytes={max(payload, 4)} "
        f'out-file="{out_file}"'
    )
    submit_run(procs, fed["connection"], "flwr-run-floor", config, timeout, app=ECHO_APP)
    seconds = json.loads(out_file.read_text())["rounds"]
    return {**_summary(seconds, "floor_"), "floor_payload_bytes": payload}


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
    p.add_argument(
        "--no-floor", action="store_true", help="skip the bare Flower echo app (the floor)"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    args = build_parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mlecs-deploy-round-"))
    try:
        result = measure(args.num_nodes, args.rounds, args.set, tmp, floor=not args.no_floor)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["overrides"] = args.set
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
