"""benchmarks.gpu_round (and the in-process runner it shares with round_profile)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from benchmarks import gpu_round, round_profile
from tests.conftest import TINY


def _sets(tmp_path: Path, cache_dir: Path) -> list[str]:
    overrides = {**TINY, "cache-dir": str(cache_dir), "output-dir": str(tmp_path / "runs")}
    overrides.pop("num-server-rounds")
    return [
        f"--set={k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()
    ]


def test_round_times_training_share_and_scores_on_this_machine(tmp_path: Path, cache_dir: Path):
    config = tmp_path / "regime.toml"
    config.write_text('dataset = "hapt"\n')
    out = tmp_path / "gpu_round.json"
    gpu_round.main(
        ["--out", str(out), "--num-nodes", "2", "--rounds", "3", "--config", str(config)]
        + _sets(tmp_path, cache_dir)
    )
    result = json.loads(out.read_text())
    assert result["rounds"] == 3 and len(result["round_seconds"]) == 3
    # the first round (loading) is left out of the median of the warm rounds
    warm = result["round_seconds"][1:]
    assert abs(result["seconds_per_round"] - statistics.median(warm)) <= 0.02
    assert 0 < result["train_seconds_per_round"] < result["seconds_per_round"]
    assert 0 <= result["final_client_f1"] <= 1 and 0 <= result["tail_server_f1"] <= 1
    if not torch.cuda.is_available():
        assert result["device"] == "cpu"
        for key in ("gpu_utilization", "gpu_utilization_round", "peak_gpu_memory_gib"):
            assert result[key] is None, key


def test_utilisation_counts_only_samples_inside_the_spans():
    samples = [(0.5, 10.0), (1.5, 90.0), (2.5, 70.0), (3.5, 20.0)]
    assert gpu_round.mean_within(samples, [(1.0, 3.0)]) == 80.0
    assert gpu_round.mean_within(samples, [(0.0, 1.0), (3.0, 4.0)]) == 15.0
    assert gpu_round.mean_within(samples, [(1.6, 2.4)]) is None  # shorter than a period


def test_round_profile_parts_fit_in_the_round(tmp_path: Path, cache_dir: Path):
    config = {**TINY, "cache-dir": str(cache_dir), "output-dir": str(tmp_path / "runs")}
    config.update({"num-server-rounds": 2, "run-name": "profile"})
    result = round_profile.profile(config, num_nodes=2)
    parts = sum(result[p] for p in round_profile.PARTS)
    assert result["train_compute"] > 0 and result["eval_compute"] > 0
    assert parts <= result["round"] + 1e-6
    assert 0 <= result["overhead_fraction"] < 1
