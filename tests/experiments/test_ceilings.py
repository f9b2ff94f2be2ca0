"""The ceilings: pooled data, both ceilings on tiny settings, the CLI's rows and threads."""

from __future__ import annotations

import json

import numpy as np
import torch

from common.data.views import build_client_data, build_server_data, task_info
from common.settings import RunSettings
from experiments import ceilings

NODES = 3


def test_pooled_holds_every_train_split_and_each_public_sample_once(tiny_config: dict):
    settings = RunSettings.from_run_config(tiny_config)
    devices = [build_client_data(settings, p, NODES) for p in range(NODES)]
    train, tests = ceilings.pooled(settings, NODES)
    public = {int(i) for d in devices for i in d.public.ids}
    assert len(train) == sum(len(d.train) for d in devices) + len(public)
    assert [len(t) for t in tests] == [len(d.test) for d in devices]
    assert len(np.unique(train.ids)) == len(train)
    # without public shares the devices train on their train splits only, and so does the pool
    private = RunSettings.from_run_config({**tiny_config, "data.use-public-share": False})
    train, _ = ceilings.pooled(private, NODES)
    assert len(train) == sum(len(d.train) for d in devices)


def test_window_features_zero_an_absent_modality(tiny_config: dict):
    settings = RunSettings.from_run_config(tiny_config)
    train, _ = ceilings.pooled(settings, NODES)
    feats = ceilings.window_features(train)
    sensors = [j for j, spec in enumerate(train.specs) if spec.kind == "sensor"]
    per_modality = feats.shape[1] // len(sensors)
    assert feats.shape[0] == len(train)
    for k, j in enumerate(sensors):
        block = feats[:, k * per_modality : (k + 1) * per_modality]
        absent = ~train.mask[:, j].astype(bool)
        assert np.all(block[absent] == 0)
        np.testing.assert_array_equal(block[:, -1], train.mask[:, j].astype(np.float32))


def test_the_centralized_ceiling_scores_f1_and_rouge(tiny_config: dict):
    settings = RunSettings.from_run_config(tiny_config)
    central = ceilings.centralized(settings, 2)
    assert set(central) == {"f1", "rouge_lsum"} and all(0 <= v <= 1 for v in central.values())


def test_both_forests_score_1_when_a_window_statistic_gives_the_label(
    tiny_config: dict, monkeypatch
):
    # Prepare: the window "statistics" are the one-hot label, so the forest can be exact
    settings = RunSettings.from_run_config(tiny_config)
    classes = len(task_info(settings).class_names)
    monkeypatch.setattr(ceilings, "window_features", lambda s: np.eye(classes)[s.labels])
    # Execute / Assert: trained, predicted and scored right, both forests are perfect
    assert ceilings.forest(settings, 2) == {"f1": 1.0}
    assert ceilings.forest_own(settings, 2) == {"f1": 1.0}
    # and a statistic unrelated to the label scores less than that
    monkeypatch.setattr(ceilings, "window_features", lambda s: np.zeros((len(s), 1)))
    assert ceilings.forest(settings, 2)["f1"] < 1.0


def test_forest_own_trains_each_device_on_its_own_data(tiny_config: dict, monkeypatch):
    fits = []

    def record(settings, train, tests):
        fits.append((len(train), [len(t) for t in tests]))
        return [0.5] * len(tests)

    monkeypatch.setattr(ceilings, "_forest_f1", record)
    for share in (True, False):
        fits.clear()
        settings = RunSettings.from_run_config({**tiny_config, "data.use-public-share": share})
        assert ceilings.forest_own(settings, NODES) == {"f1": 0.5}
        devices = [build_client_data(settings, p, NODES) for p in range(NODES)]
        own = [len(d.train) + (len(d.public) if share else 0) for d in devices]
        assert fits == [(n, [len(d.test)]) for n, d in zip(own, devices)]


def test_main_writes_a_row_per_seed_under_the_pinned_threads(tmp_path, monkeypatch):
    seen = []

    def fake(settings, num_nodes):
        seen.append((settings.seed, num_nodes, torch.get_num_threads()))
        return {"f1": 0.5, "rouge_lsum": 0.5}

    monkeypatch.setattr(ceilings, "centralized", fake)
    monkeypatch.setattr(ceilings, "forest", fake)
    monkeypatch.setattr(ceilings, "forest_own", fake)
    monkeypatch.setattr(ceilings, "centralized_ft", fake)
    monkeypatch.setattr(ceilings, "cloud_public", fake)
    monkeypatch.setattr(ceilings, "cloud_pooled", fake)
    before = torch.get_num_threads()
    try:
        ceilings.main(
            ["--seeds", "3,4", "--num-nodes", "2", "--out", str(tmp_path), "--set", "threads=1"]
        )
    finally:
        torch.set_num_threads(before)
    assert {s for s, _, _ in seen} == {3, 4} and all(t == 1 for _, _, t in seen)
    rows = json.loads((tmp_path / "ceilings.json").read_text())
    assert set(rows) == {"3", "4"} and rows["3"]["centralized"]["f1"] == 0.5
    assert set(rows["3"]) == {*ceilings.CEILINGS, "seconds"}


def test_centralized_ft_pools_per_architecture_then_tunes_each_device(tiny_config, monkeypatch):
    # Prepare: five devices over three architectures (slots 0 and 3, 1 and 4, 2)
    config = {**tiny_config, "num-server-rounds": 3, "train.steps": 4}
    settings = RunSettings.from_run_config(config)
    calls = []

    def record(settings, model, data, steps, seed):
        calls.append((len(data), steps, seed))

    monkeypatch.setattr(ceilings, "_train", record)
    # Execute
    scores = ceilings.centralized_ft(settings, 5)
    # Assert: one pooled model per architecture with its devices' budget less their
    # personal stages, then one personal stage (2 of 4 steps) per device on its train split
    train, _ = ceilings.pooled(settings, 5)
    pooled_calls = [c for c in calls if c[2][1] == 78]
    assert [(n, steps) for n, steps, _ in pooled_calls] == [
        (len(train), 2 * (3 * 4 - 2)),
        (len(train), 2 * (3 * 4 - 2)),
        (len(train), 1 * (3 * 4 - 2)),
    ]
    personal = [c for c in calls if c[2][1] == 79]
    devices = [build_client_data(settings, p, 5) for p in range(5)]
    assert sorted((c[2][2], c[0], c[1]) for c in personal) == [
        (p, len(d.train), 2) for p, d in enumerate(devices)
    ]
    assert set(scores) == {"f1", "rouge_lsum"}


def test_architecture_follows_the_devices_encoder_and_fusion_cycle(tiny_config):
    settings = RunSettings.from_run_config(tiny_config)
    names = ("acc", "gyro")
    arch = [ceilings.architecture(settings, names, p) for p in range(6)]
    assert arch[0] == arch[3] and arch[1] == arch[4] and len(set(arch)) == 3
    assert arch[0][-1] == "mean" and arch[1][-1] == "attention"


def test_cloud_on_device_scores_the_cloud_on_each_devices_own_test(tiny_config, monkeypatch):
    settings = RunSettings.from_run_config(tiny_config)
    seen = []

    def fake_evaluate(model, data, task, cfg, batch_size, max_new_tokens):
        seen.append((model, data.ids.tolist(), data.mask.tolist()))
        return {"f1": float(len(seen)), "rouge_lsum": 1.0}

    monkeypatch.setattr(ceilings, "evaluate", fake_evaluate)
    model = object()
    scores = ceilings.cloud_on_device(settings, model, NODES)
    devices = [build_client_data(settings, p, NODES) for p in range(NODES)]
    assert [(ids, mask) for _, ids, mask in seen] == [
        (d.test.ids.tolist(), d.test.mask.tolist()) for d in devices
    ]
    assert all(m is model for m, _, _ in seen)
    assert scores == {"f1": 2.0, "rouge_lsum": 1.0}


def test_the_cloud_ceilings_train_a_lone_cloud_on_public_data_and_on_the_pool(
    tiny_config, monkeypatch
):
    # Prepare: record what each round of the cloud's training sees
    config = {**tiny_config, "num-server-rounds": 2, "method": "mlecs"}
    settings = RunSettings.from_run_config(config)
    steps = []
    real_step = ceilings.Cloud.step

    def record(cloud, ids, z, server_round):
        steps.append((cloud.settings.method, cloud.uses_global, len(cloud.data.public_train)))
        return real_step(cloud, ids, z, server_round)

    monkeypatch.setattr(ceilings.Cloud, "step", record)
    # Execute
    public = ceilings.cloud_public(settings, NODES)
    pooled = ceilings.cloud_pooled(settings, NODES)
    # Assert: a standalone cloud (no global adapters), one step per round, on the public
    # train split, then on it with every device's training data added
    n_public = len(build_server_data(settings).public_train)
    n_pool = len(ceilings.pooled(settings, NODES)[0])
    assert (
        steps
        == [("standalone", False, n_public)] * 2 + [("standalone", False, n_public + n_pool)] * 2
    )
    for scores in (public, pooled):
        assert set(scores) == {"f1", "rouge_lsum"} and all(0 <= v <= 1 for v in scores.values())
