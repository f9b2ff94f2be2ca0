"""What a run computed on is recorded: threads, torch, the kernels' instruction set."""

from __future__ import annotations

import torch

from common.reproducibility import ISA_VARIABLES, environment, pin
from common.settings import RunSettings


def test_environment_names_threads_capability_and_the_isa_caps_in_force(monkeypatch):
    for name in ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    before = torch.get_num_threads()
    try:
        pin(RunSettings.from_run_config({"threads": 1}))
        env = environment()
    finally:
        torch.set_num_threads(before)
    assert env["threads"] == 1 and env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["isa_variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert isinstance(env["cpu"], str)
