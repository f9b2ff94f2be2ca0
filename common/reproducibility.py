"""The one place that pins what makes two runs of the same seed give the same numbers.

Every random draw of the project is seeded from the run seed and a purpose (data
splits, model initialisation, batch order; see ``common.data.partition.rng``,
``common.model.factory`` and ``client_app.device``), and the server aggregates in
partition order, whatever order replies arrive in. What is left is the process:
the number of intra-op threads (floating-point sums are split by thread), pinned
here by the ServerApp, the ClientApp and the experiment runner, and the machine:
torch, MKL and oneDNN pick kernels by the CPU's instruction set (AVX2, AVX-512,
AMX), which round differently, so the same seed reruns to the bit on one machine
and drifts by a few thousandths of a score over a long run on another CPU
generation. :func:`environment` records what a run computed on. (On CPU, torch's
kernels are deterministic for a fixed thread count and instruction set; on CUDA
some are not.)
"""

from __future__ import annotations

import os
import platform

import torch

from common.settings import RunSettings


def pin(settings: RunSettings) -> None:
    """Pin torch's intra-op threads to ``threads`` (0 = leave torch's default)."""
    if settings.threads and torch.get_num_threads() != settings.threads:
        torch.set_num_threads(settings.threads)


# Variables that cap the instruction set of torch's own kernels, MKL's and oneDNN's.
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def environment() -> dict[str, object]:
    """What this process computes on: torch, threads, CPU and its kernels' instruction set.

    Recorded in every run's summary, so that a rerun on another machine can tell
    whether a difference may come from the machine rather than the code.
    """
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "isa_variables": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
