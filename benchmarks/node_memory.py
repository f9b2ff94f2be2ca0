"""Peak memory of one SuperNode, with its ClientApps and warm worker, over back-to-back runs.

Usage::

    python -m benchmarks.node_memory --out benchmarks/results/node_memory.json \
        [--runs 3] [--rounds 2] [--profiles NAME,...] [--set key=value ...]

Starts a deployment on loopback through the ``deploy/`` scripts (SuperLink, Fleet
proxy, two SuperNodes, TLS and node authentication; ``deploy.loopback``), then
submits ``--runs`` runs of the default (tiny) configuration one after another, as
an operator would. Every 0.5 s it sums the proportional set size (PSS, from
``/proc/<pid>/smaps_rollup``: shared pages counted once across the processes) of
every process in the first SuperNode's process group: the SuperNode, its
SuperExec, the ClientApp processes and the warm worker. Keys:
``peak_gib_per_run`` (each run's peak), ``peak_gib_first_run``,
``peak_gib_all_runs``, ``ratio`` (all runs over the first: 1.0 means later runs
add nothing), ``workers_per_run`` (warm worker processes alive in the group at
the end of each run) and ``seconds_per_run``. ``--profiles sbc-2gb,phone,none``
measures each device profile in a deployment of its own (the measured SuperNode
started with ``--profile``; ``none``: the run's keys) and writes one entry per
profile under ``profiles``. Every process it starts is stopped
by its process group, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from common.atomic import write_text
from common.profiles import load_profile
from deploy.loopback import Processes, loopback_env, start_federation, submit_run

NODES = 2


def group_members(pgid: int) -> list[int]:
    """The PIDs of the processes in process group ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return out


def pss_bytes(pid: int) -> int:
    """The proportional set size of ``pid`` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def is_worker(pid: int) -> bool:
    """Whether ``pid`` is a warm worker (``python -m client_app.worker``)."""
    try:
        return b"client_app.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Sampler(threading.Thread):
    """Samples the PSS of a process group; :attr:`peaks` holds each phase's peak."""

    def __init__(self, pgid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pgid, self.interval = pgid, interval
        self.phase, self.peaks = 0, [0]
        self.done = threading.Event()

    def next_phase(self) -> None:
        self.peaks.append(0)  # before the index moves: the thread never indexes past the end
        self.phase += 1

    def run(self) -> None:
        while not self.done.is_set():
            total = sum(pss_bytes(pid) for pid in group_members(self.pgid))
            self.peaks[self.phase] = max(self.peaks[self.phase], total)
            time.sleep(self.interval)


def measure(
    runs: int, rounds: int, overrides: list[str], tmp: Path, profile: str | None = None
) -> dict:
    """Start the deployment, submit ``runs`` runs, and sample the first SuperNode.

    With ``profile``, the first SuperNode runs that device profile (``--profile``).
    """
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    env, node_env = loopback_env(tmp)
    procs = Processes(env, tmp, tmp / "logs")
    try:
        profiles = {0: profile} if profile else None
        fed = start_federation(procs, tmp, NODES, node_env, profiles=profiles)
        sampler = Sampler(procs.procs["supernode-0"].pid)  # its own session: pgid == pid
        sampler.start()
        seconds, workers = [], []
        for i in range(runs):
            config = " ".join(
                [f"num-server-rounds={rounds}", f"strategy.min-nodes={NODES}"]
                + ["eval.bertscore=false", *overrides, f'cache-dir="{tmp / "cache"}"']
                + [f'output-dir="{tmp / "out"}"', f'run-name="run-{i}"']
            )
            timeout = 60 * (5 + 2 * rounds)
            took, _ = submit_run(procs, fed["connection"], f"flwr-run-{i}", config, timeout)
            seconds.append(took)
            time.sleep(2 * sampler.interval)  # a last sample of this run
            workers.append(sum(is_worker(p) for p in group_members(sampler.pgid)))
            if i < runs - 1:
                sampler.next_phase()
        sampler.done.set()
        sampler.join()
    finally:
        procs.stop_all()
    peaks = [p / 2**30 for p in sampler.peaks]
    return {
        "profile": profile,
        "runs": runs,
        "rounds": rounds,
        "peak_gib_per_run": [round(p, 3) for p in peaks],
        "peak_gib_first_run": round(peaks[0], 3),
        "peak_gib_all_runs": round(max(peaks), 3),
        "ratio": round(max(peaks) / peaks[0], 3),
        "workers_per_run": workers,
        "seconds_per_run": [round(s, 1) for s in seconds],
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
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="run-config override key=value")
    p.add_argument(
        "--profiles",
        default="",
        help="comma-separated device profiles for the measured SuperNode, one deployment "
        "each ('none' = the run's keys); default: the run's keys only",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    args = build_parser().parse_args(argv)
    names = [p.strip() for p in args.profiles.split(",") if p.strip()] or ["none"]
    for name in names:
        if name != "none":
            load_profile(name)  # an unknown name fails before any deployment starts
    per_profile = {}
    for name in names:
        tmp = Path(tempfile.mkdtemp(prefix="mlecs-node-memory-"))
        try:
            profile = None if name == "none" else name
            per_profile[name] = measure(args.runs, args.rounds, args.set, tmp, profile)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # One profile: its keys at the top level; several: one entry per profile.
    result = per_profile[names[0]] if len(names) == 1 else {"profiles": per_profile}
    result["overrides"] = args.set
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
