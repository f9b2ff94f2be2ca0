"""Rounds of the real-model regime on one accelerator: time, GPU utilisation, GPU memory.

Usage::

    python -m benchmarks.gpu_round --out FILE [--num-nodes 10] [--rounds 3] \
        [--config conf/regimes/easyvqa_real.toml] [--set key=value ...] [--sample-ms 100]

Runs the in-process federation (the real strategy and ClientApp handlers,
``benchmarks.round_profile.federate``; the devices one after another in this
process, sharing the frozen weights) on ``device`` (``auto`` picks CUDA) and
writes:

* ``seconds_per_round``: median wall seconds of the rounds after the first (the
  first loads and converts the models); ``round_seconds`` lists every round.
* ``train_seconds_per_round``: the devices' training (``Device.train``) per round.
* ``gpu_utilization``: mean of ``nvidia-smi`` utilisation samples (percent, every
  ``--sample-ms``) taken while a device was training, rounds after the first;
  ``gpu_utilization_round`` the same over whole rounds. None without a GPU.
* ``peak_gpu_memory_gib``: the largest memory torch reserved on the GPU (all
  devices, the cloud and evaluation); ``peak_gpu_memory_allocated_gib`` beside it.
* the run's final and tail client/server scores from its summary.

With ``--set device=cpu`` (or on a machine without a GPU) the same command is the
regime's CPU smoke: every GPU key is None and the times are the CPU's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common.atomic import write_text
from common.run_config import parse_overrides, read_toml_config

DEFAULT_CONFIG = "conf/regimes/easyvqa_real.toml"


class GpuSampler:
    """``nvidia-smi`` utilisation samples in a background thread, stamped with ``time.monotonic``.

    Without ``nvidia-smi`` on the PATH it records nothing.
    """

    def __init__(self, every_ms: int) -> None:
        self.samples: list[tuple[float, float]] = []  # (monotonic seconds, percent)
        self._proc = None
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return
        cmd = [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        self._proc = subprocess.Popen([*cmd, f"-lms={every_ms}"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:  # one line per GPU; the first GPU is the one torch uses by default
                self.samples.append((time.monotonic(), float(line.split(",")[0])))
            except ValueError:
                continue

    def stop(self) -> None:
        """End the sampling process."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def mean_within(
    samples: list[tuple[float, float]], spans: list[tuple[float, float]]
) -> float | None:
    """Mean of the ``(time, value)`` samples whose time falls in any of ``spans``.

    Returns None when no sample falls in a span (a span shorter than the sampling
    period, or no GPU).
    """
    inside = [u for t, u in samples if any(a <= t <= b for a, b in spans)]
    return round(statistics.fmean(inside), 1) if inside else None


def measure(config: dict, num_nodes: int, sample_ms: int) -> dict:
    """Run the federation with the sampler and timers; the benchmark's keys."""
    import torch

    from benchmarks.round_profile import federate, spanned

    cuda = torch.cuda.is_available() and config.get("device", "auto") != "cpu"
    train_spans: list[tuple[float, float]] = []
    round_ends: list[float] = []
    sampler = GpuSampler(sample_ms) if cuda else None
    try:
        on_train = lambda start, end: train_spans.append((start, end))  # noqa: E731
        with spanned("client_app.device.Device.train", on_train):
            _, summary = federate(
                config,
                num_nodes,
                started=lambda: round_ends.append(time.monotonic()),
                round_ended=lambda _r: round_ends.append(time.monotonic()),
            )
    finally:
        if sampler is not None:
            sampler.stop()
    rounds = list(zip(round_ends, round_ends[1:]))
    warm = rounds[1:] or rounds  # the first round loads the models
    train = [s for s in train_spans if s[0] >= warm[0][0]]
    out = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "num_nodes": num_nodes,
        "rounds": len(rounds),
        "round_seconds": [round(b - a, 2) for a, b in rounds],
        "seconds_per_round": round(statistics.median(b - a for a, b in warm), 2),
        "train_seconds_per_round": round(sum(b - a for a, b in train) / len(warm), 2),
        "gpu_utilization": mean_within(sampler.samples, train) if sampler else None,
        "gpu_utilization_round": mean_within(sampler.samples, warm) if sampler else None,
        "peak_gpu_memory_gib": None,
        "peak_gpu_memory_allocated_gib": None,
    }
    if cuda:
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        out["peak_gpu_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    for block in ("final", "tail"):
        for key in ("client_f1", "client_rouge_lsum", "server_f1"):
            out[f"{block}_{key}"] = summary.get(block, {}).get(key)
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
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--set", action="append", default=[], help="run-config override key=value")
    p.add_argument("--sample-ms", type=int, default=100, help="nvidia-smi sampling period")
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    args = build_parser().parse_args(argv)
    config = read_toml_config(args.config)
    config.update(parse_overrides(args.set))
    config["num-server-rounds"] = args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="mlecs-gpu-round-"))
    config.setdefault("output-dir", str(tmp))
    config.setdefault("run-name", "gpu-round")
    started = time.monotonic()
    try:
        result = measure(config, args.num_nodes, args.sample_ms)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["config"] = args.config
    result["overrides"] = args.set
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
