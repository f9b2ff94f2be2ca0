"""Device profiles (common.profiles): loading, validation, the mix, a federation of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client_app import handlers
from client_app.app import app as client_app
from client_app.handlers import device_settings
from common.profiles import (
    DEVICE_KEYS,
    Profile,
    load_profile,
    memory_note,
    mixed_profile,
    parse_mix,
    profile_names,
)
from common.run_config import ConfigError
from common.settings import RunSettings
from experiments.device_bytes import bytes_by_rank
from experiments.devices import encoder_groups
from experiments.local_grid import InProcessGrid
from server_app.checkpoint import load_checkpoint
from server_app.run import ServerRun


def test_the_shipped_profiles_load_and_set_only_device_keys():
    names = profile_names()
    assert {"sbc-2gb", "sbc-8gb", "jetson-orin", "phone"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.memory_gib > 0 and profile.description
        assert set(profile.overrides) <= set(DEVICE_KEYS)
        # every shipped profile fits the default run's encoder families
        device_settings({}, {"partition-id": 0, "profile": name})


def test_a_profile_that_sets_a_shared_key_is_refused_by_name(tmp_path: Path):
    (tmp_path / "big.toml").write_text('[profile]\nmemory-gib = 4\n[overrides]\n"lora.alpha" = 4\n')
    (tmp_path / "nomem.toml").write_text("[overrides]\nthreads = 1\n")
    with pytest.raises(ConfigError, match=r"profile 'big' sets \['lora.alpha'\]"):
        load_profile("big", tmp_path)
    with pytest.raises(ConfigError, match="needs \\[profile\\] memory-gib"):
        load_profile("nomem", tmp_path)
    with pytest.raises(ConfigError, match="unknown device profile '../x'"):
        load_profile("../x", tmp_path)


def test_the_mix_cycles_by_weight_and_a_bad_mix_fails_before_any_work():
    assert parse_mix("sbc-2gb:2, phone:1") == ["sbc-2gb", "sbc-2gb", "phone"]
    assert [mixed_profile("sbc-2gb:2,phone:1", p) for p in range(4)] == [
        "sbc-2gb", "sbc-2gb", "phone", "sbc-2gb",
    ]  # fmt: skip
    assert mixed_profile("", 3) is None
    for bad, named in (("phone:0", "WEIGHT >= 1"), ("phone", "NAME:WEIGHT"), ("x:1", "'x'")):
        with pytest.raises(ConfigError, match=named):
            RunSettings.from_run_config({"profile-mix": bad})


def test_a_node_profile_wins_over_the_mix_and_may_only_narrow_an_encoder_family():
    run = {"profile-mix": "sbc-8gb:1", "train.batch-size": 32}
    settings, profile = device_settings(run, {"partition-id": 0, "profile": "phone"})
    assert profile.name == "phone" and settings.train.batch_size == 8
    assert settings.model.sensor_encoders == ("mlp", "gru")
    assert settings.threads == 2  # a SuperNode's box: its cores
    settings, profile = device_settings(run, {"partition-id": 5})
    assert profile.name == "sbc-8gb" and settings.train.batch_size == 16
    assert settings.threads == 0  # a simulated box: the run's threads, not the box's 4
    settings, _ = device_settings({**run, "threads": 1}, {"partition-id": 5})
    assert settings.threads == 1
    settings, profile = device_settings({"train.batch-size": 32}, {"partition-id": 0})
    assert profile is None and settings.train.batch_size == 32
    with pytest.raises(ConfigError, match="outside the run's family \\['gru'\\]"):
        device_settings({"model.sensor-encoders": "gru"}, {"partition-id": 0, "profile": "phone"})


def test_a_profile_lowers_the_lora_rank_with_the_runs_alpha_per_rank():
    settings, _ = device_settings({}, {"partition-id": 0, "profile": "phone"})
    assert settings.lora.rank == 4 and settings.lora.alpha == 8.0  # 16 / 8 per component
    settings, _ = device_settings({"lora.rank": 16, "lora.alpha": 32.0}, {"profile": "sbc-2gb"})
    assert settings.lora.rank == 2 and settings.lora.alpha == 4.0
    assert settings.profile_mix == ""  # applied: other profiles no longer bind this device
    off = {"lora.profile-ranks": False}
    settings, _ = device_settings(off, {"partition-id": 0, "profile": "sbc-2gb"})
    assert settings.lora.rank == 8 and settings.lora.alpha == 16.0
    assert settings.train.batch_size == 8  # the rest of the profile still applies
    # a rank above the run's fails before any work, for the mix and for a node's profile
    with pytest.raises(ConfigError, match=r"lora.rank = 2: a profile may lower the run's"):
        RunSettings.from_run_config({"profile-mix": "sbc-2gb:1", "lora.rank": 1})
    RunSettings.from_run_config({"profile-mix": "sbc-2gb:1", "lora.rank": 1, **off})
    settings, _ = device_settings({"lora.rank": 1, **off}, {"partition-id": 0, "profile": "phone"})
    assert settings.lora.rank == 1  # the profile's rank is ignored, so it is not checked
    with pytest.raises(ConfigError, match="never raise it"):
        device_settings({"lora.rank": 1}, {"partition-id": 0, "profile": "phone"})


def test_under_hold_rest_a_profile_sets_how_many_components_its_box_trains():
    hold = {"lora.hold-rest": True}
    settings, _ = device_settings(hold, {"partition-id": 0, "profile": "phone"})
    assert settings.lora.rank == 8 and settings.lora.alpha == 16.0  # the run's, held
    assert settings.lora.trained_rank == 4 and settings.holds_rest
    settings, _ = device_settings(hold, {"partition-id": 0, "profile": "jetson-orin"})
    assert settings.lora.trained_rank == 0  # a box at the run's rank trains everything


def test_the_memory_note_speaks_only_past_its_share_of_the_box():
    assert memory_note(Profile("huge", "", 10_000.0)) is None
    note = memory_note(Profile("tiny", "", 0.001))
    assert note and "'tiny'" in note and "0.001 GiB" in note


def _federate(config: dict, num_nodes: int) -> dict:
    """An in-process federation of ``config``; its summary (devices kept in ``handlers``)."""
    handlers._DEVICES.clear()
    threads = torch.get_num_threads()
    try:
        return ServerRun(RunSettings.from_run_config(config)).run(
            InProcessGrid(client_app, config, num_nodes)
        )
    finally:
        torch.set_num_threads(threads)  # the profiles' threads must not leak into later tests


def test_a_federation_of_mixed_profiles_trains_each_device_as_its_box(tiny_config):
    config = {**tiny_config, "profile-mix": "sbc-8gb:1,jetson-orin:1,phone:1", "run-name": "mix"}
    summary = _federate(config, 3)
    assert summary["rounds"] == config["num-server-rounds"]
    built = {d.ident.partition_id: d.settings for d in handlers._DEVICES.values()}
    # a simulated box keeps the run's threads (the simulating machine's), not its cores
    assert built[0].train.batch_size == 16 and built[0].threads == 0  # sbc-8gb
    assert built[0].model.sensor_encoders == ("mlp", "cnn1d")
    assert built[1].train.batch_size == 8 and built[1].threads == 0  # jetson-orin, TINY's batch
    assert built[2].lora.rank == 4 and built[0].lora.rank == built[1].lora.rank == 8  # phone
    # each device's adapter bytes follow its rank, up and (once its rank is known) down,
    # up to each array's fixed header (a few dozen bytes; many at this tiny size)
    lines = (Path(config["output-dir"]) / "mix" / "rounds.jsonl").read_text().splitlines()
    rounds = [json.loads(line) for line in lines]
    for record in rounds:
        by_node = {d["partition_id"]: d for d in record["comm_by_device"].values()}
        assert by_node[0]["lora_up"] == by_node[1]["lora_up"]
        assert 1.8 < by_node[0]["lora_up"] / by_node[2]["lora_up"] < 2.0
    first, last = ({d["partition_id"]: d for d in r["comm_by_device"].values()} for r in rounds)
    assert first[2]["lora_down"] == first[0]["lora_down"]  # rank not known yet: all of it
    assert 1.8 < last[0]["lora_down"] / last[2]["lora_down"] < 2.0
    # the report names each device's encoders as its profile narrowed them
    for pid, kinds in encoder_groups(config, 3).items():
        families = built[pid].model.sensor_encoders
        assert all(k.split(":")[1] in families for k in kinds.split("+")), (pid, kinds)
    # the same, by rank, from the run's files (experiments.device_bytes)
    by_rank = bytes_by_rank(Path(config["output-dir"]) / "mix")
    assert sorted(by_rank) == [4, 8] and [by_rank[r]["devices"] for r in (4, 8)] == [1, 2]
    assert 0.5 < by_rank[4]["lora_up"] / by_rank[8]["lora_up"] < 0.56


def test_a_federation_of_two_ranks_runs_with_flexloras_svd(tiny_config):
    config = {
        **tiny_config,
        "profile-mix": "sbc-8gb:1,phone:1",  # ranks 8 and 4
        "lora.rank-aggregation": "svd",
        "run-name": "svd",
    }
    summary = _federate(config, 2)
    assert summary["rounds"] == config["num-server-rounds"]
    ckpt = load_checkpoint(Path(config["output-dir"]) / "svd")
    assert ckpt.strategy.refactorised_round == config["num-server-rounds"]
    state = ckpt.global_state
    a_keys = [k for k in state if k.startswith("lora/") and "lora_A" in k]
    assert a_keys
    for key in a_keys:  # every backbone adapter re-factorised: A's rows orthonormal
        a = np.asarray(state[key], np.float64)
        np.testing.assert_allclose(a @ a.T, np.eye(a.shape[0]), atol=1e-4, err_msg=key)
        assert np.isfinite(state[key.replace("lora_A", "lora_B")]).all()


def test_a_fleet_holding_the_rest_sends_every_box_the_runs_rank(tiny_config):
    config = {
        **tiny_config,
        "profile-mix": "sbc-8gb:1,phone:1",  # ranks 8 and 4
        "lora.hold-rest": True,
        "run-name": "hold",
    }
    assert RunSettings.from_run_config(config).rank_aggregation == "svd-update"
    summary = _federate(config, 2)
    assert summary["rounds"] == config["num-server-rounds"]
    built = {d.ident.partition_id: d.settings for d in handlers._DEVICES.values()}
    assert built[1].lora.rank == 8 and built[1].lora.trained_rank == 4  # the phone
    # the phone uploads half the components and downloads all of them in every round
    lines = (Path(config["output-dir"]) / "hold" / "rounds.jsonl").read_text().splitlines()
    for record in map(json.loads, lines):
        by_node = {d["partition_id"]: d for d in record["comm_by_device"].values()}
        assert 1.8 < by_node[0]["lora_up"] / by_node[1]["lora_up"] < 2.0
        assert by_node[0]["lora_down"] == by_node[1]["lora_down"]
    ckpt = load_checkpoint(Path(config["output-dir"]) / "hold")
    assert ckpt.strategy.refactorised_round == config["num-server-rounds"]
    assert all(np.isfinite(v).all() for v in ckpt.global_state.values())
