"""The encoder probe: a linear classifier per encoder and device (experiments.encoder_probe)."""

from __future__ import annotations

import json

import numpy as np
import torch

from common.data.views import build_client_data
from common.settings import RunSettings
from experiments import encoder_probe


def test_probe_learns_a_device_train_split_it_is_scored_on(tiny_config: dict):
    # Scored on its own training data, a probe that learns must beat chance clearly
    settings = RunSettings.from_run_config(tiny_config)
    d = build_client_data(settings, 0, 2)
    classes = len(np.unique(d.train.labels))
    f1 = encoder_probe.probe_device(d.train, d.train, "cnn1d", settings, steps=60, seed=0)
    assert classes > 1 and f1 > 0.6


def test_main_probes_every_encoder_of_the_family(tiny_config: dict, tmp_path):
    out = tmp_path / "probe.json"
    threads = torch.get_num_threads()
    encoder_probe.main(
        ["--seeds", "0", "--num-nodes", "2", "--steps", "2", "--out", str(out)]
        + [f"--set={k}={v}" for k, v in tiny_config.items() if k == "cache-dir"]
        + ["--set", "model.sensor-encoders=mlp,gru"]
    )
    assert torch.get_num_threads() == threads  # the probe's one thread does not leak
    rows = json.loads(out.read_text())
    assert set(rows["seeds"]["0"]) == {"mlp", "gru"}
    assert all(0 <= v <= 1 for v in rows["mean"].values())
