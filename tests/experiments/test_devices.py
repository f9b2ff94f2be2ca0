"""Per-device breakdown of a difference between two methods (experiments.devices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.devices import compare, device_tail, encoder_groups, profile_groups, table


def _run(root: Path, method: str, seed: int, per_round: list[dict[int, float]]) -> None:
    folder = root / f"{method}-s{seed}"
    folder.mkdir(parents=True)
    rounds = [
        {
            "round": i + 1,
            "clients": {str(100 + p): {"f1": v, "partition_id": p} for p, v in scores.items()},
        }
        for i, scores in enumerate(per_round)
    ]
    rounds.insert(1, {"round": 0, "clients": {}})  # a round without device scores is skipped
    (folder / "rounds.jsonl").write_text("\n".join(json.dumps(r) for r in rounds) + "\n")
    (folder / "config.json").write_text(json.dumps({"run_config": {"seed": seed}}))
    (folder / "summary.json").write_text(json.dumps({"num_nodes": 2}))


def _groups(run_config: dict, num_nodes: int) -> dict[int, str]:
    return {0: "multimodal", 1: "unimodal"}


def test_device_tail_averages_the_last_scored_rounds():
    rounds = [
        {"clients": {"a": {"f1": 0.0, "partition_id": 0}}},
        {"clients": {"a": {"f1": 0.4, "partition_id": 0}, "b": {"f1": 1.0, "partition_id": 1}}},
        {"clients": {}},
        {"clients": {"a": {"f1": 0.6, "partition_id": 0}}},
    ]
    assert device_tail(rounds, "f1", tail=2) == {0: pytest.approx(0.5), 1: pytest.approx(1.0)}


def test_compare_pairs_devices_within_seeds_and_groups_them(tmp_path):
    # Method a is +0.2 on device 0 and -0.1 on device 1 on every seed but one
    # (seed 2: +0.4 / -0.1); seed 3 of b is missing, so seed 3 is not paired.
    for seed, gain in [(0, 0.2), (1, 0.2), (2, 0.4), (3, 0.2)]:
        _run(tmp_path, "a", seed, [{0: 0.1, 1: 0.9}, {0: 0.3 + gain, 1: 0.5}])
        if seed != 3:
            _run(tmp_path, "b", seed, [{0: 0.0, 1: 0.0}, {0: 0.3, 1: 0.6}])
    out = compare(tmp_path, "a", "b", tail=1, groups=_groups)
    assert out["multimodal"]["seeds"] == 3
    assert out["multimodal"]["mean"] == pytest.approx((0.2 + 0.2 + 0.4) / 3)
    assert out["multimodal"]["low"] < out["multimodal"]["mean"] < out["multimodal"]["high"]
    assert out["unimodal"]["mean"] == pytest.approx(-0.1)
    assert out["unimodal"]["low"] == pytest.approx(-0.1)  # no spread over seeds
    assert out["all"]["mean"] == pytest.approx((0.05 + 0.05 + 0.15) / 3)  # per-seed device means
    assert (out["all"]["devices"], out["all"]["better"], out["all"]["worse"]) == (6, 3, 3)
    text = table(out, "a", "b", "f1")
    assert text.splitlines()[2].startswith("| all | 3 | 6 |")
    assert "| unimodal | 3 | 3 | -0.100 [-0.100, -0.100] * |" in text


def test_compare_without_common_seeds_is_empty(tmp_path):
    _run(tmp_path, "a", 0, [{0: 0.5, 1: 0.5}])
    _run(tmp_path, "b", 1, [{0: 0.5, 1: 0.5}])
    assert compare(tmp_path, "a", "b", groups=_groups) == {}


def test_encoder_groups_follow_the_devices_encoder_cycle(tiny_config: dict):
    config = {**tiny_config, "model.sensor-encoders": "gru,mlp", "modality.scenario": "full"}
    assert encoder_groups(config, 3) == {0: "sensor:gru", 1: "sensor:mlp", 2: "sensor:gru"}


def test_two_sweeps_pair_the_same_method_name_by_seed(tmp_path):
    # Two arms of one method in separate sweeps: a fleet and the same fleet at one rank
    _run(tmp_path / "fleet", "mlecs", 0, [{0: 0.5, 1: 0.9}])
    _run(tmp_path / "one-rank", "mlecs", 0, [{0: 0.7, 1: 0.9}])
    out = compare(
        tmp_path / "fleet", "mlecs", "mlecs", tail=1, groups=_groups, runs_b=tmp_path / "one-rank"
    )
    assert out["multimodal"]["mean"] == pytest.approx(-0.2)
    assert out["unimodal"]["mean"] == pytest.approx(0.0)


def test_profile_groups_name_each_boxs_profile_and_rank(tiny_config: dict):
    config = {**tiny_config, "profile-mix": "sbc-2gb:1,jetson-orin:1", "lora.rank": 8}
    groups = profile_groups(config, 3)
    assert groups == {0: "sbc-2gb (rank 2)", 1: "jetson-orin (rank 8)", 2: "sbc-2gb (rank 2)"}
    assert set(profile_groups(tiny_config, 2).values()) == {"no profile (rank 8)"}
    # a box that holds the rest computes with rank 8 and trains its first 2
    held = profile_groups({**config, "lora.hold-rest": True}, 2)
    assert held == {0: "sbc-2gb (rank 2 of 8)", 1: "jetson-orin (rank 8)"}
