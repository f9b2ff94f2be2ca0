"""Dual LoRA: only adapters train, adapter state round-trips through an ArrayRecord."""

from __future__ import annotations

import numpy as np
import torch

from common.data.views import build_client_data
from common.learning.loop import train_steps
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
    params = adapter_parameters(model.lm, SHARED) + list(model.connector.parameters())
    # Execute
    train_steps(
        model,
        data.train,
        params,
        batch_size=8,
        epochs=1,
        max_steps=3,
        lr=1e-2,
        weight_decay=0.0,
        rng=np.random.default_rng(0),
    )
    # Assert: the backbone and the private adapter are untouched
    trained = {id(p) for p in params}
    for n, p in model.named_parameters():
        if id(p) in trained:
            continue
        assert torch.equal(p, before[n]), f"{n} changed"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(".lora_B.shared." in n for n in changed)
    assert not any(".private." in n for n in changed)


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


def test_gate_mixes_adapters_and_is_noop_at_init(tiny_config: dict):
    _, data, model = _device(tiny_config)
    for p in adapter_parameters(model.lm, PRIVATE):
        torch.nn.init.normal_(p, std=0.2)
    batch = model.make_batch(data.test, np.arange(2))
    with torch.no_grad():
        z = model.represent(batch)[1]
        base = model.lm_loss(batch, z)
        model.gate.theta[PRIVATE].fill_(-30.0)  # g_private -> 0
        off = model.lm_loss(batch, z)
    assert model.gate.values()[SHARED] == 1.0
    assert not torch.allclose(base, off)
