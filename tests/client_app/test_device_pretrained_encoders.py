"""A device with pretrained encoders: their frozen weights are never trained, kept or sent."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from client_app.device import Device, DeviceIdentity
from common.exchange import GlobalPayload
from common.model import pretrained_encoders as pe
from common.model.factory import reference_edge_model
from common.model.sharing import freeze
from common.model.state import initial_global_state
from common.settings import RunSettings


def test_frozen_encoder_weights_stay_out_of_optimiser_state_and_update(tiny_config, monkeypatch):
    # Prepare: easy-VQA with EfficientNet-Lite0 images and LoRA-tuned MiniLM questions
    if importlib.util.find_spec(pe.EFFNET_PACKAGE) is None:
        stand_in = freeze(pe.EfficientNetLite0()).eval()
        monkeypatch.setattr(pe, "effnet_lite0", lambda: stand_in)
    config = {
        **tiny_config,
        "dataset": "easyvqa",
        "data.easyvqa.pool-size": 400,
        "modality.scenario": "full",
        "model.image-encoders": "effnet-lite0",
        "model.text-encoders": "minilm-lora",
        "train.batch-size": 4,
    }
    settings = RunSettings.from_run_config(config)
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    device = Device(settings, DeviceIdentity(0, 2))
    device.restore(None, payload)
    encoders = device.model.encoders
    frozen = pe.frozen_keys(encoders)
    frozen_params = {id(p) for n, p in encoders.named_parameters() if n in frozen}
    stem = encoders["image"].pretrained._conv_stem.weight.detach().clone()
    # Execute
    update = device.train(payload, server_round=1)
    local = device.local_state()
    # Assert: the frozen weights are not optimised and did not move
    assert {
        "image.pretrained._conv_stem.weight",
        "question.pretrained.embeddings.word_embeddings.weight",
    } <= frozen
    in_opt = {id(p) for g in device.trainer.opt.param_groups for p in g["params"]}
    assert frozen_params and not frozen_params & in_opt
    assert torch.equal(encoders["image"].pretrained._conv_stem.weight, stem)
    # ... are neither kept in the local state nor sent; the trainable parts are kept
    assert not [k for k in local if k.startswith("enc/") and k[4:] in frozen]
    assert not [
        k for k in local if k.startswith("opt/enc") and ".pretrained." in k and "lora_" not in k
    ]
    assert "enc/image.out.weight" in local
    assert any("lora_A" in k for k in local if k.startswith("enc/question."))
    assert {k.split("/")[0] for k in update.delta} <= {"lora", "prompt"}
    # ... and a device restored from that state continues where it stopped
    again = Device(settings, DeviceIdentity(0, 2))
    again.restore(local, payload)
    for k, v in again.local_state().items():
        if k.startswith("enc/"):
            np.testing.assert_array_equal(v, local[k])
