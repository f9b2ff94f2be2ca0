"""A device's AMT round: what is uploaded, what stays."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from client_app.device import TRAINED_ROUND, Device, DeviceIdentity
from common.exchange import GlobalPayload
from common.model.factory import reference_edge_model
from common.model.state import encoder_state, initial_global_state, shared_state
from common.settings import RunSettings
from common.state import subtract


def test_only_the_shared_stage_result_is_uploaded(tiny_config: dict):
    # Prepare
    settings = RunSettings.from_run_config(
        {**tiny_config, "method": "mlecs", "amt.variant": "schedule"}
    )
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    device = Device(settings, DeviceIdentity(0, 2))
    device.restore(None, payload)
    start = device.shared_state()
    after_stage: list[dict] = []
    stage = device._stage

    def spy(*args, **kwargs):
        out = stage(*args, **kwargs)
        after_stage.append(device.shared_state())
        return out

    device._stage = spy
    # Execute
    update = device.train(payload, server_round=1)
    # Assert: two stages ran; the upload is exactly the shared stage's change; the
    # private stage went on tuning the device's own copy, which stays local
    assert len(after_stage) == 2
    expected = subtract(after_stage[0], start)
    assert update.delta.keys() == expected.keys()
    assert {k.split("/")[0] for k in expected} == {"lora", "prompt"}
    for k in expected:
        np.testing.assert_array_equal(update.delta[k], expected[k])
    assert any(np.abs(v).sum() > 0 for v in update.delta.values())
    moved = [k for k in expected if not np.array_equal(after_stage[1][k], after_stage[0][k])]
    assert moved
    local = device.local_state()
    for k in moved:
        np.testing.assert_array_equal(local["shared/" + k], after_stage[1][k])


def test_by_default_mlecs_trains_one_stage_as_no_amt_does(tiny_config: dict):
    # Since 2026-12-07 AMT's private stage is off by default (amt.variant = "off")
    updates = {}
    for method in ("mlecs", "no-amt"):
        settings = RunSettings.from_run_config({**tiny_config, "method": method})
        state = initial_global_state(settings, reference_edge_model(settings))
        device = Device(settings, DeviceIdentity(0, 2))
        device.restore(None, GlobalPayload(state=state))
        updates[method] = device.train(GlobalPayload(state=state), server_round=1)
    a, b = updates["mlecs"], updates["no-amt"]
    assert a.delta.keys() == b.delta.keys() and a.metrics.keys() == b.metrics.keys()
    for k in a.delta:
        np.testing.assert_array_equal(a.delta[k], b.delta[k])
    assert not any(k.startswith(("shared_", "private_")) for k in a.metrics)


def _trained_fedit_device(tiny_config: dict, server_round: int):
    """A FedIT device's settings, the payload it trained on and its local state after."""
    settings = RunSettings.from_run_config({**tiny_config, "method": "fedit"})
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    first = Device(settings, DeviceIdentity(1, 2))
    first.restore(None, payload)
    first.train(payload, server_round=server_round)
    return settings, payload, first.local_state()


def test_optimizer_moments_survive_a_round_trip(tiny_config: dict):
    settings, payload, saved = _trained_fedit_device(tiny_config, server_round=1)
    assert any(k.startswith("opt/") and k.endswith("/exp_avg") for k in saved)
    again = Device(settings, DeviceIdentity(1, 2))
    again.restore(saved, payload)
    restored = again.local_state()
    for k, v in saved.items():
        if k.startswith("opt/"):
            np.testing.assert_array_equal(restored[k], v)


def test_ccl_private_stage_switch_keeps_ccl_in_the_shared_stage(tiny_config: dict):
    def ccl_terms(private_stage: bool) -> set[str]:
        config = {
            **tiny_config,
            "method": "mlecs",
            "amt.variant": "schedule",
            "ccl.private-stage": private_stage,
            "ccl.weight": 0.1,
        }
        settings = RunSettings.from_run_config(config)
        payload = GlobalPayload(
            state=initial_global_state(settings, reference_edge_model(settings))
        )
        device = Device(settings, DeviceIdentity(0, 2))
        device.restore(None, payload)
        metrics = device.train(payload, server_round=1).metrics
        return {k for k in metrics if k.endswith("_loss_ccl")}

    assert ccl_terms(True) == {"shared_loss_ccl", "private_loss_ccl"}
    assert ccl_terms(False) == {"shared_loss_ccl"}


def test_unlabelled_public_share_is_anchored_but_not_trained_on(tiny_config: dict):
    def train(share: bool, unlabelled: bool) -> tuple[set[str], int]:
        config = {
            **tiny_config,
            "method": "mlecs",
            "amt.variant": "schedule",
            "data.use-public-share": share,
            "seccl.unlabelled-public": unlabelled,
        }
        settings = RunSettings.from_run_config(config)
        device = Device(settings, DeviceIdentity(0, 2))
        ids = device.data.public.ids
        anchors = np.random.default_rng(0).normal(size=(len(ids), settings.model.fused_dim))
        payload = GlobalPayload(
            state=initial_global_state(settings, reference_edge_model(settings)),
            anchor_ids=ids,
            anchors=anchors.astype(np.float32),
        )
        device.restore(None, payload)
        update = device.train(payload, server_round=1)
        return {k for k in update.metrics if k.endswith("_loss_seccl")}, update.num_examples

    with_share, n_share = train(share=True, unlabelled=False)
    without, n_private = train(share=False, unlabelled=False)
    aligned, n_aligned = train(share=False, unlabelled=True)
    assert "shared_loss_seccl" in with_share
    assert without == set()  # no public sample in the batches: no anchor matches
    # drawn from the public share at every step, the term acts in both AMT stages
    assert aligned == {"shared_loss_seccl", "private_loss_seccl"}
    # the public share adds training examples only when its labels are trained on
    assert n_aligned == n_private < n_share


def test_encoder_adapters_of_the_devices_own_groups_are_uploaded(tiny_config: dict):
    # Prepare
    settings = RunSettings.from_run_config(
        {**tiny_config, "lora.encoder-rank": 4, "amt.variant": "schedule"}
    )
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    device = Device(settings, DeviceIdentity(2, 3))
    device.restore(None, payload)
    groups = set(device.model.encoder_groups().values())
    # Execute
    update = device.train(payload, server_round=1)
    # Assert: the upload holds whole groups of its own encoders, and they learned
    sent = {k for k in update.delta if k.startswith("enclora/")}
    assert sent == {k for k in payload.state if k.startswith(tuple(groups))}
    assert all(np.abs(update.delta[k]).max() > 0 for k in sent if k.endswith("lora_B"))
    # ... and the device keeps its own copy after AMT's private stage
    local = device.local_state()
    assert {k[len("shared/") :] for k in local if k.startswith("shared/enclora/")} == sent


def test_unshared_encoder_adapters_stay_on_the_device_across_rounds(tiny_config: dict):
    # Prepare: the control, adapters kept by each device; no-amt keeps no adapter copy
    config = {**tiny_config, "method": "no-amt", "lora.encoder-rank": 4}
    settings = RunSettings.from_run_config({**config, "lora.encoder-share": False})
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    assert not any(k.startswith("enclora/") for k in payload.state)
    device = Device(settings, DeviceIdentity(0, 3))
    device.restore(None, payload)
    # Execute: a round, then a fresh device object restored from what stayed local
    update = device.train(payload, server_round=1)
    trained = {k: v for k, v in encoder_state(device.model).items() if k.startswith("enclora/")}
    again = Device(settings, DeviceIdentity(0, 3))
    again.restore(device.local_state(), payload)
    # Assert: nothing of them is uploaded; they learned and come back as trained
    assert update.delta and not any(k.startswith("enclora/") for k in update.delta)
    assert trained and any(np.abs(v).max() > 0 for k, v in trained.items() if "lora_B" in k)
    for k, v in encoder_state(again.model).items():
        if k.startswith("enclora/"):
            np.testing.assert_array_equal(v, trained[k])


def test_moments_of_adapters_refactorised_since_the_device_trained_are_dropped(
    tiny_config: dict,
):
    # Prepare: a device that trained in round 3
    settings, payload, saved = _trained_fedit_device(tiny_config, server_round=3)
    assert int(saved[TRAINED_ROUND]) == 3
    moments = {k for k in saved if k.startswith("opt/")}
    for refactorised, kept in ((0, True), (2, True), (3, False), (5, False)):
        # Execute: restored under a server whose last re-factorisation was `refactorised`
        again = Device(settings, DeviceIdentity(1, 2))
        again.restore(saved, replace(payload, refactorised_round=refactorised))
        left = {k for k in again.local_state() if k.startswith("opt/")}
        # Assert: moments of the old basis go (the shared adapters' only), others stay
        if kept:
            assert left == moments, refactorised
        else:
            gone = moments - left
            assert gone and left, refactorised  # encoders' and connector's own stay
            assert not any("encoder" in k for k in gone), sorted(gone)


def test_a_device_holding_the_rest_trains_and_uploads_only_its_first_components(
    tiny_config: dict,
):
    # Prepare: a device of the run's rank 8 that trains its first 2 components
    settings = RunSettings.from_run_config({**tiny_config, "lora.trained-rank": 2})
    state = initial_global_state(settings, reference_edge_model(settings))
    rng = np.random.default_rng(0)  # a global with every component non-zero
    state = {k: (v + rng.normal(0, 0.1, v.shape)).astype(np.float32) for k, v in state.items()}
    device = Device(settings, DeviceIdentity(0, 2))
    device.restore(None, GlobalPayload(state=state))
    # Execute
    update = device.train(GlobalPayload(state=state), server_round=1)
    # Assert: the upload is rank 2; the device computes with all 8 components, of which
    # the first 2 moved and the other 6 are exactly as the server sent them
    held = shared_state(device.model)
    adapters = [k for k in state if k.startswith(("lora/", "prompt/")) and "lora_" in k]
    assert adapters
    for key in adapters:
        axis = 0 if "lora_A" in key else 1
        assert update.delta[key].shape[axis] == 2 and held[key].shape == state[key].shape
        rest = np.take(held[key], range(2, 8), axis=axis)
        np.testing.assert_array_equal(rest, np.take(state[key], range(2, 8), axis=axis))
    moved = [
        k
        for k in adapters
        if not np.array_equal(np.take(held[k], [0, 1], axis=0 if "lora_A" in k else 1),
                              np.take(state[k], [0, 1], axis=0 if "lora_A" in k else 1))
    ]  # fmt: skip
    assert moved
