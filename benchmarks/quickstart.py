"""The README's quick start, measured: `flwr run . --stream` with the default configuration.

Usage::

    python -m benchmarks.quickstart --out benchmarks/results/quickstart.json \
        [--num-supernodes 10] [--set key=value ...] [--keep]

Runs the command a user runs first (10 simulated devices, the default run
config: 20 rounds of HAPT with mixed modalities) against a local simulation
SuperLink this benchmark starts on free loopback ports with its own
``FLWR_HOME`` (and stops by process group), exactly as ``flwr run`` would start
one. Keys: ``wall_seconds`` (submission to finish, the SuperLink already up),
``console_lines`` (what ``flwr run --stream`` printed, stdout and stderr),
``status``, ``rounds``, ``seconds_per_round`` (median after the first),
``final_client_f1``, ``tail_client_f1``, ``final_client_rouge_lsum``,
``final_server_f1``. The console itself is written beside ``--out``
(``<out>.console.txt``) so that a person can read what a user sees.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from common.atomic import write_text
from deploy.loopback import (
    REPO,
    Processes,
    final_status,
    free_ports,
    loopback_env,
    run_id_of,
    tail,
    wait_for,
)

CONNECTION = "local"  # the connection `flwr` creates in a fresh FLWR_HOME


def start_simulation_superlink(procs: Processes, env: dict, home: Path) -> None:
    """A simulation SuperLink on the ports ``env`` names; returns once it is healthy."""
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    state = home / "local-superlink"
    state.mkdir(parents=True, exist_ok=True)
    cmd = ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess"]
    cmd += ["--host", "127.0.0.1", "--port", port, "--database", str(state / "state.db")]
    cmd += ["--control-api-address", f"127.0.0.1:{env['FLWR_LOCAL_CONTROL_API_PORT']}"]
    procs.start("superlink", cmd)

    def healthy() -> bool:
        if procs.procs["superlink"].poll() is not None:
            raise RuntimeError(f"SuperLink exited:\n{tail(procs.log('superlink'))}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return True
        except OSError:
            return False

    wait_for("the SuperLink to be healthy", healthy, timeout=60, interval=0.3)


def measure(num_supernodes: int, overrides: list[str], tmp: Path) -> tuple[dict, str]:
    """Run the quick start once; its measurements and its console text."""
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    env, _ = loopback_env(tmp)
    http, control = free_ports(2)
    env.update(
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http),
        FLWR_LOCAL_CONTROL_API_PORT=str(control),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    )
    procs = Processes(env, tmp, tmp / "logs")
    out_dir = tmp / "out"
    run_config = " ".join([*overrides, f'output-dir="{out_dir}"', 'run-name="quickstart"'])
    federation = f"num-supernodes={num_supernodes} client-resources-num-cpus=1"
    try:
        start_simulation_superlink(procs, env, Path(env["FLWR_HOME"]))
        started = time.monotonic()
        cmd = ["flwr", "run", ".", "--federation-config", federation, "--stream"]
        run = procs.start("flwr-run", [*cmd, "--run-config", run_config], cwd=REPO)
        try:
            run.wait(timeout=3600)
        except subprocess.TimeoutExpired:
            log = tail(procs.log("flwr-run"), 80)
            raise RuntimeError(f"flwr run did not end:\n{log}") from None
        console = procs.log("flwr-run").read_text(errors="replace")
        status = final_status(env, CONNECTION, run_id_of(env, CONNECTION, console))
        wall = time.monotonic() - started
    finally:
        procs.stop_all()
    if status["status"] != "finished:completed":
        raise RuntimeError(f"run ended {status['status']}:\n{console[-5000:]}")
    return summarize(out_dir / "quickstart", status["status"], wall, console), console


def summarize(run_dir: Path, status: str, wall: float, console: str) -> dict:
    """The benchmark's keys from a finished run's records and its console."""
    records = [json.loads(r) for r in (run_dir / "rounds.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    seconds = [r["seconds"] for r in records]
    return {
        "status": status,
        "wall_seconds": round(wall, 1),
        "console_lines": len(console.splitlines()),
        "rounds": len(records),
        "seconds_per_round": round(statistics.median(seconds[1:] or seconds), 2),
        "final_client_f1": summary["final"]["client_f1"],
        "tail_client_f1": summary["tail"]["client_f1"],
        "final_client_rouge_lsum": summary["final"]["client_rouge_lsum"],
        "final_server_f1": summary["final"]["server_f1"],
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
    p.add_argument("--num-supernodes", type=int, default=10)
    p.add_argument("--set", action="append", default=[], help="run-config override key=value")
    p.add_argument("--keep", action="store_true", help="keep the logs and outputs")
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON (and the console beside it)."""
    args = build_parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mlecs-quickstart-"))
    try:
        result, console = measure(args.num_supernodes, args.set, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["overrides"] = args.set
    write_text(args.out.with_suffix(".console.txt"), console)
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
