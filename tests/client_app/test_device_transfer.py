"""A device's controls and transfer terms: fedit-ft, the paper's gated AMT, class prototypes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from client_app.device import Device, DeviceIdentity
from common.exchange import GlobalPayload
from common.learning.evaluation import fused_representations
from common.learning.prototypes import class_prototypes, view_prototype_term
from common.model.factory import reference_edge_model
from common.model.state import initial_global_state
from common.settings import RunSettings


def _device(tiny_config: dict, **overrides) -> tuple[Device, GlobalPayload]:
    settings = RunSettings.from_run_config({**tiny_config, **overrides})
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    device = Device(settings, DeviceIdentity(0, 2))
    device.restore(None, payload)
    return device, payload


@pytest.mark.parametrize(
    ("method", "stages"), [("fedit-ft", 2), ("standalone-ft", 2), ("fedit", 1), ("standalone", 1)]
)
def test_controls_end_with_the_personal_stage_of_amt(tiny_config, method, stages):
    # Prepare: a step budget AMT splits 3 + 3
    device, payload = _device(tiny_config, method=method, **{"train.steps": 6})
    # Execute
    metrics = device.train(payload, server_round=1).metrics
    # Assert: the -ft controls spend the same budget in AMT's two stages, the others in one
    spent = {k: v for k, v in metrics.items() if k.endswith("_steps")}
    if stages == 2:
        assert spent == {"shared_steps": 3.0, "private_steps": 3.0}
    else:
        assert spent == {"train_steps": 6.0}
    comps = device.settings.components
    assert not (comps.ccl or comps.seccl or comps.mma)


def test_fedit_ft_uploads_the_shared_stage_and_keeps_its_personal_copy(tiny_config):
    device, payload = _device(tiny_config, method="fedit-ft", **{"train.steps": 4})
    start = device.shared_state()
    update = device.train(payload, server_round=1)
    personal = device.shared_state()
    local = device.local_state()
    # The personal stage moved the adapters after the upload was taken...
    uploaded = {k: start[k] + update.delta[k] for k in update.delta}
    assert any(not np.allclose(uploaded[k], personal[k]) for k in uploaded)
    # ...and the personal copy is what the device keeps (and is scored with).
    for k, v in personal.items():
        np.testing.assert_array_equal(local["shared/" + k], v)


def test_gated_amt_tunes_a_private_adapter_that_never_travels(tiny_config):
    # Prepare
    device, payload = _device(tiny_config, method="mlecs", **{"amt.variant": "gate"})
    m = device.model
    assert m.gate is not None and device.private_params
    before_private = {k: v for k, v in device.local_state().items() if k.startswith("private/")}
    assert before_private
    # Execute
    update = device.train(payload, server_round=1)
    local = device.local_state()
    # Assert: nothing private in the upload; the shared adapters end as uploaded (the
    # private stage tunes the private adapter and the gate only); both are kept locally
    assert not any("private" in k or k.startswith("gate/") for k in update.delta)
    start = initial_global_state(device.settings, reference_edge_model(device.settings))
    shared_now = device.shared_state()
    for k, d in update.delta.items():
        np.testing.assert_allclose(shared_now[k], start[k] + d, atol=1e-6)
    assert any(not np.array_equal(local[k], v) for k, v in before_private.items())
    assert {"gate_shared", "gate_private"} <= set(update.metrics)
    assert any(k.startswith("gate/") for k in local)
    # Restored in a fresh device, the private adapter and the gate come back as they were
    again = Device(device.settings, DeviceIdentity(0, 2))
    again.restore(local, payload)
    restored = again.local_state()
    for k, v in local.items():
        if k.startswith(("private/", "gate/")):
            np.testing.assert_array_equal(restored[k], v)
    assert again.model.gate.values() == pytest.approx(m.gate.values())


def test_the_gate_scales_the_adapters_output(tiny_config):
    device, payload = _device(tiny_config, method="mlecs", **{"amt.variant": "gate"})
    m = device.model
    batch = m.make_batch(device.data.train, np.arange(4))
    with torch.no_grad():
        for p in device.private_params[:-2]:  # give the private adapter a non-zero output
            p.add_(0.5)
        _, z = m.represent(batch)
        base = m.lm_loss(batch, z)
        m.gate.theta["private"].fill_(-30.0)  # gate ~ 0: the private adapter is off
        off = m.lm_loss(batch, z)
        m.gate.theta["private"].fill_(0.0)
        again = m.lm_loss(batch, z)
    assert not torch.isclose(base, off) and torch.isclose(base, again)


def test_prototypes_pull_a_devices_samples_toward_their_class(tiny_config):
    # Prepare: prototypes from the device's own z (so they are reachable), one class each
    def train_with(weight: float) -> float:
        device, payload = _device(
            tiny_config,
            method="mlecs",
            **{
                "amt.variant": "schedule",
                "seccl.prototype-weight": weight,
                "train.steps": 8,
                "ccl.weight": 0.0,
            },
        )
        data = device.held
        ids, z = fused_representations(device.model, data)
        rng = np.random.default_rng(0)
        protos = rng.normal(size=(len(device.task.class_names), z.shape[1])).astype(np.float32)
        classes = np.arange(len(protos))
        payload.prototype_classes, payload.prototypes = classes, protos
        update = device.train(payload, server_round=1)
        if weight > 0:
            assert "shared_loss_proto" in update.metrics
            assert "private_loss_proto" in update.metrics
        _, z_after = fused_representations(device.model, data)
        unit = z_after / np.linalg.norm(z_after, axis=1, keepdims=True)
        p = protos / np.linalg.norm(protos, axis=1, keepdims=True)
        labelled = data.labels >= 0
        return float((unit[labelled] * p[data.labels[labelled]]).sum(1).mean())

    # Assert: with the term, the samples' z point more toward their class's prototype
    assert train_with(2.0) > train_with(0.0) + 0.05


def test_class_prototypes_are_unit_mean_directions():
    # Class 0's raw mean (1, 1.5) points elsewhere than its unit mean (0.5, 0.5).
    z = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [0.0, 4.0], [9.0, 9.0]])
    labels = np.array([0, 0, 2, 2, -1])
    classes, protos = class_prototypes(z, labels)
    assert classes.tolist() == [0, 2]
    np.testing.assert_allclose(protos[0], [2**-0.5, 2**-0.5], atol=1e-6)
    np.testing.assert_allclose(protos[1], [0.0, 1.0], atol=1e-6)
    assert protos.dtype == np.float32


def test_view_prototypes_score_each_single_modality_view_of_multimodal_samples():
    # Prepare: three samples, two modalities; sample 1 has one modality, sample 2 no prototype
    torch.manual_seed(0)
    e = torch.randn(3, 2, 4, requires_grad=True)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    batch = SimpleNamespace(labels=np.array([0, 1, 7]), mask=mask)
    protos = np.eye(2, 4, dtype=np.float32)  # classes 0 and 1

    def fuse(emb: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # mean over present rows
        w = m.float().unsqueeze(-1)
        return (emb * w).sum(1) / w.sum(1)

    term = view_prototype_term(np.array([0, 1]), protos, 2.0, 0.5, fuse)
    # Execute
    value = term(batch, e, fuse(e, mask))
    # Assert: the views are sample 0 with modality 0 alone and with modality 1 alone
    views = torch.nn.functional.normalize(e[0], dim=1)  # each view's z is that row
    logits = views @ torch.as_tensor(protos).T / 0.5
    want = 2.0 * torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0]))
    torch.testing.assert_close(value, want)
    value.backward()
    assert e.grad[0].abs().sum() > 0 and not e.grad[1:].any()  # only sample 0's views
    # no multimodal sample with a prototype: no term; one prototype: no contrast
    single = SimpleNamespace(labels=np.array([0]), mask=torch.tensor([[True, False]]))
    assert term(single, e[:1], e[:1, 0]) is None
    assert view_prototype_term(np.array([0]), protos[:1], 1.0, 0.5, fuse) is None


def test_view_prototypes_train_under_the_key(tiny_config):
    device, payload = _device(
        tiny_config,
        method="mlecs",
        **{"seccl.prototype-views": True, "train.steps": 4, "modality.scenario": "full"},
    )
    classes = np.arange(len(device.task.class_names))
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(len(classes), device.settings.model.fused_dim)).astype(np.float32)
    payload.prototype_classes, payload.prototypes = classes, protos
    update = device.train(payload, server_round=1)
    assert "train_loss_proto_views" in update.metrics and "train_loss_proto" in update.metrics


def test_samples_missing_a_modality_train_toward_their_subsets_prototypes(tiny_config):
    # Prepare: the same device and prototypes, with and without a table for its modality
    def proto_loss(by_subset: bool) -> float:
        device, payload = _device(
            tiny_config,
            method="mlecs",
            **{"seccl.modality-prototypes": True, "train.steps": 2, "ccl.weight": 0.0},
        )
        held = device.model.held
        rng = np.random.default_rng(0)
        classes = np.arange(len(device.task.class_names))
        protos = rng.normal(size=(len(classes), device.settings.model.fused_dim))
        payload.prototype_classes, payload.prototypes = classes, protos.astype(np.float32)
        if by_subset:
            payload.modality_prototypes = {
                tuple(sorted(s)): -payload.prototypes for s in [held[:1], held[1:]] if s
            }
        return device.train(payload, server_round=1).metrics["train_loss_proto"]

    # Assert: the subset tables change what the term measures
    assert proto_loss(True) != proto_loss(False)
