"""Communication accounting: the SmolLM2-135M edge configuration meets the paper's 0.65%."""

from __future__ import annotations

import pytest

from common.settings import ConfigError, RunSettings
from experiments.comm_report import report


def test_smollm2_edge_configuration_is_within_paper_budget():
    settings = RunSettings.from_run_config(
        {"method": "mlecs", "lora.targets": "q_proj,v_proj", "transport.dtype": "float16"}
    )
    out = report(settings, "smollm2-135m", public_share=58)
    assert 134_000_000 < out["edge_model_params"] < 135_000_000
    assert out["bytes_lora_up"] > 0 and out["bytes_reps_up"] > 0 and out["bytes_prompt_up"] > 0
    # up + down per device per round, over the edge model's fp32 parameter bytes
    total = out["bytes_up_per_client_round"] + out["bytes_down_per_client_round"]
    assert out["ratio"] == total / (out["edge_model_params"] * 4)
    assert out["ratio"] <= 0.0065


def test_fp32_transport_doubles_the_adapter_bytes():
    base = {"method": "fedit", "lora.targets": "q_proj,v_proj"}
    f32 = report(RunSettings.from_run_config(base), "smollm2-135m", 0)
    f16 = report(
        RunSettings.from_run_config({**base, "transport.dtype": "float16"}), "smollm2-135m", 0
    )
    assert 1.9 < f32["bytes_lora_up"] / f16["bytes_lora_up"] < 2.01
    assert f32["bytes_reps_up"] == 0  # fedit exchanges no representations


def test_encoder_adapters_are_refused_rather_than_left_uncounted():
    settings = RunSettings.from_run_config({"method": "mlecs", "lora.encoder-rank": 4})
    with pytest.raises(ConfigError, match="lora.encoder-rank"):
        report(settings, "smollm2-135m", public_share=0)
