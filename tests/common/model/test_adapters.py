"""Dual LoRA: only adapters train, adapter state round-trips through an ArrayRecord."""

from __future__ import annotations

import numpy as np
import torch

from common.data.views import build_client_data
from common.learning.loop import Trainer
from common.model.adapters import (
    PRIVATE,
    SHARED,
    adapter_parameters,
    adapter_state,
    load_adapter_state,
)
from common.model.factory import edge_model
from common.settings import RunSettings
from proto.records import from_record, to_record


def _device(config: dict, slot: int = 0):
    s = RunSettings.from_run_config(config)
    data = build_client_data(s, slot, 4)
    return s, data, edge_model(s, data.modalities, slot)


def test_local_step_changes_only_trained_parameters(tiny_config: dict):
    # Prepare
    s, data, model = _device(tiny_config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = adapter_parameters(model.lm, SHARED) + model.connector.private_parameters()
    params += model.connector.shared_parameters()
    # Execute
    Trainer(model, params, lr=1e-2).run(data.train, params, 3, 8, np.random.default_rng(0))
    # Assert: the backbone and the private adapter are untouched
    trained = {id(p) for p in params}
    for n, p in model.named_parameters():
        if id(p) in trained:
            continue
        assert torch.equal(p, before[n]), f"{n} changed"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(".lora_B.shared." in n for n in changed)
    assert not any(".private." in n for n in changed)


def test_the_trainer_forgets_the_moments_of_the_parameters_it_is_told(tiny_config: dict):
    s, data, model = _device(tiny_config)
    shared = adapter_parameters(model.lm, SHARED)
    params = shared + model.connector.private_parameters()
    trainer = Trainer(model, params, lr=1e-2)
    trainer.run(data.train, params, 2, 8, np.random.default_rng(0))
    kept = trainer.state()
    trainer.forget(shared)  # as a device does under FlexLoRA's re-factorised adapters
    left = trainer.state()
    assert len(left) < len(kept) and left and set(left) < set(kept)
    assert not any(".shared." in k for k in left)


def test_lora_state_round_trips_through_arrayrecord(tiny_config: dict):
    _, data, a = _device(tiny_config)
    for p in adapter_parameters(a.lm, SHARED):
        torch.nn.init.normal_(p, std=0.1)
    _, _, b = _device(tiny_config)
    state = adapter_state(a.lm, SHARED)
    record = to_record(state)
    assert all(arr.dtype == "float32" for arr in record.values() for arr in [arr])
    back = from_record(record)
    load_adapter_state(b.lm, SHARED, back)
    for k, v in adapter_state(b.lm, SHARED).items():
        np.testing.assert_array_equal(v, state[k])
    batch = a.make_batch(data.test, np.arange(2))
    a.connector.load_state_dict(b.connector.state_dict())
    a.encoders.load_state_dict(b.encoders.state_dict())
    with torch.no_grad():
        za, zb = a.represent(batch)[1], b.represent(batch)[1]
        assert torch.allclose(a.lm_loss(batch, za), b.lm_loss(batch, zb))


def test_adapter_state_rejects_foreign_keys(tiny_config: dict):
    _, _, model = _device(tiny_config)
    state = adapter_state(model.lm, SHARED)
    state["base_model.model.nonexistent.lora_A.weight"] = np.zeros((1, 1), np.float32)
    try:
        load_adapter_state(model.lm, SHARED, state)
    except ValueError as err:
        assert "unexpected keys" in str(err)
    else:
        raise AssertionError("foreign key accepted")


def test_edge_models_have_the_shared_adapter_and_the_cloud_its_own_too(tiny_config: dict):
    from common.model.factory import cloud_model

    s, data, edge = _device(tiny_config)
    assert set(edge.lm.peft_config) == {SHARED}
    cloud = cloud_model(s)
    assert set(cloud.lm.peft_config) == {SHARED, PRIVATE}
    batch = cloud.make_batch(data.test, np.arange(2))
    with torch.no_grad():
        z = cloud.represent(batch)[1]
        base = cloud.lm_loss(batch, z)
        for p in adapter_parameters(cloud.lm, PRIVATE):
            torch.nn.init.normal_(p, std=0.2)
        moved = cloud.lm_loss(batch, z)
    assert not torch.allclose(base, moved)  # both adapters are active in the cloud


def test_prompt_map_starts_alike_on_every_model_of_a_run(tiny_config: dict):
    _, _, a = _device(tiny_config, slot=0)
    _, _, b = _device(tiny_config, slot=1)
    for name in ("weight", "bias", "lora_A", "lora_B"):
        assert torch.equal(
            getattr(a.connector.to_prompt, name), getattr(b.connector.to_prompt, name)
        )
    assert torch.equal(a.connector.to_fused[1].weight, b.connector.to_fused[1].weight)
    # only the low-rank update trains; it starts as no change (B = 0)
    assert not a.connector.to_prompt.weight.requires_grad
    assert {id(p) for p in a.connector.shared_parameters()} == {
        id(a.connector.to_prompt.lora_A),
        id(a.connector.to_prompt.lora_B),
    }
    other = RunSettings.from_run_config({**tiny_config, "seed": 1})
    c = edge_model(other, build_client_data(other, 0, 4).modalities, 0)
    assert not torch.equal(a.connector.to_prompt.weight, c.connector.to_prompt.weight)
