"""Encoder adapters: start as the encoder, adapt every weight, start alike within a kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.samples import ModalitySpec
from common.data.views import build_client_data
from common.model.encoder_adapters import EncoderAdapter, adapted_weights
from common.model.encoders import build_encoder
from common.model.factory import edge_model, reference_edge_model
from common.model.state import initial_global_state, load_shared_state, shared_state
from common.settings import RunSettings

SENSOR = ModalitySpec("acc", "sensor", (32, 3))


@pytest.mark.parametrize("kind", ["mlp", "cnn1d", "gru"])
def test_an_adapter_starts_as_its_encoder_and_then_adds_s_b_a(kind: str):
    # Prepare
    torch.manual_seed(0)
    enc = build_encoder(SENSOR, kind, 16)
    adapter = EncoderAdapter(enc, rank=2, alpha=4.0, seed=1)
    x = torch.randn(5, 32, 3)
    # Assert: B = 0, so the adapted encoder is the encoder
    torch.testing.assert_close(adapter(enc, x), enc(x))
    assert adapter.names == [n for n, _ in adapted_weights(enc)] and adapter.names
    # Execute: a non-zero B moves each weight by (alpha / r) B A, no more
    with torch.no_grad():
        for b in adapter.lora_B:
            b.normal_()
    moved = build_encoder(SENSOR, kind, 16)
    moved.load_state_dict(enc.state_dict())
    params = dict(moved.named_parameters())
    with torch.no_grad():
        for n, shape, a, b in zip(adapter.names, adapter.shapes, adapter.lora_A, adapter.lora_B):
            params[n].add_((2.0 * (b @ a)).view(shape))
    torch.testing.assert_close(adapter(enc, x), moved(x))
    # ... and the gradient reaches both the adapter and the encoder's own weights
    adapter(enc, x).pow(2).sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in adapter.lora_A)
    assert all(p.grad is not None for p in enc.parameters() if p.ndim >= 2)


def test_biases_and_frozen_weights_are_not_adapted():
    enc = build_encoder(SENSOR, "cnn1d", 16)
    names = [n for n, _ in adapted_weights(enc)]
    assert names == ["net.0.weight", "net.2.weight", "out.weight"]


def _encoders(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.encoders.state_dict().items()}


def test_encoders_of_one_kind_start_alike_only_when_shared(tiny_config: dict):
    # Prepare: partitions 0 and 3 get the same sensor encoders (the family has three)
    shared = RunSettings.from_run_config({**tiny_config, "lora.encoder-rank": 4})
    private = RunSettings.from_run_config(tiny_config)
    held = build_client_data(shared, 0, 4).modalities
    # Execute
    a, b = edge_model(shared, held, 0), edge_model(shared, held, 3)
    c, d = edge_model(private, held, 0), edge_model(private, held, 3)
    # Assert: shared: same start, encoders and adapters; private: each its own
    assert a.encoder_kinds == b.encoder_kinds
    for k, v in _encoders(a).items():
        np.testing.assert_array_equal(v, _encoders(b)[k])
    assert shared_state(a).keys() == shared_state(b).keys()
    for k, v in shared_state(a).items():
        if k.startswith("enclora/"):
            np.testing.assert_array_equal(v, shared_state(b)[k])
    assert any(not np.array_equal(v, _encoders(d)[k]) for k, v in _encoders(c).items())
    assert not c.encoder_adapters and not any(k.startswith("enclora/") for k in shared_state(c))


def test_the_global_state_holds_every_group_and_devices_start_from_it(tiny_config: dict):
    # Prepare
    s = RunSettings.from_run_config({**tiny_config, "lora.encoder-rank": 4})
    fams = s.model.sensor_encoders
    # Execute
    state = initial_global_state(s, reference_edge_model(s))
    # Assert: every (modality, kind) group of the family is in it ...
    groups = {"/".join(k.split("/")[1:3]) for k in state if k.startswith("enclora/")}
    assert groups == {f"{m}/{kind}" for m in ("acc", "gyro") for kind in fams}
    # ... and each device's own groups start equal to it
    for pid in range(3):
        held = build_client_data(s, pid, 3).modalities
        own = {k: v for k, v in shared_state(edge_model(s, held, pid)).items() if "enclora" in k}
        assert own and own.keys() <= state.keys()
        for k, v in own.items():
            np.testing.assert_array_equal(v, state[k])


def test_a_model_loads_its_own_groups_and_rejects_a_bad_shape(tiny_config: dict):
    s = RunSettings.from_run_config({**tiny_config, "lora.encoder-rank": 4})
    model = reference_edge_model(s)
    state = initial_global_state(s, model)
    bumped = {k: v + 1.0 for k, v in state.items()}
    load_shared_state(model, bumped)
    for k, v in shared_state(model).items():
        np.testing.assert_allclose(v, bumped[k])
    key = next(k for k in state if k.startswith("enclora/") and k in shared_state(model))
    with pytest.raises(ValueError, match="shape"):
        load_shared_state(model, {**state, key: np.zeros((1, 1), np.float32)})
    group = key.rsplit("/", 2)[0] + "/"
    partial = {k: v for k, v in state.items() if not k.startswith(group) or k == key}
    with pytest.raises(ValueError, match="missing"):
        load_shared_state(model, partial)
    # A method without the component builds no adapters at any rank
    fedit = RunSettings.from_run_config({**tiny_config, "method": "fedit", "lora.encoder-rank": 4})
    assert not reference_edge_model(fedit).encoder_adapters
