"""Models of one process share their frozen backbone; precision follows the device."""

from __future__ import annotations

import numpy as np
import torch

from common.data.views import build_client_data
from common.model.adapters import SHARED, adapter_parameters
from common.model.factory import cloud_model, edge_model
from common.settings import RunSettings


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.lm.named_parameters() if "lora_" not in n}


def test_models_share_frozen_backbone_weights_but_not_adapters(tiny_config: dict):
    # Prepare
    s = RunSettings.from_run_config(tiny_config)
    data = build_client_data(s, 0, 2)
    # Execute
    a = edge_model(s, data.modalities, 0)
    b = edge_model(s, data.modalities, 1)
    cloud = cloud_model(s)
    # Assert: every frozen backbone tensor is one tensor in all three models
    wa, wb, wc = _base_weights(a), _base_weights(b), _base_weights(cloud)
    assert wa.keys() == wb.keys() and wa
    for name, p in wa.items():
        assert p is wb[name] and p.data_ptr() == wb[name].data_ptr(), name
        assert p is wc[name]
        assert not p.requires_grad
    # ... while the LoRA adapters are separate tensors, and training one leaves the other
    la, lb = adapter_parameters(a.lm, SHARED), adapter_parameters(b.lm, SHARED)
    assert la and not {p.data_ptr() for p in la} & {p.data_ptr() for p in lb}
    before = [p.detach().clone() for p in lb]
    with torch.no_grad():
        for p in la:
            p.add_(1.0)
    assert all(torch.equal(p, q) for p, q in zip(lb, before))
    # and the two models still compute (different adapters give different logits)
    batch = a.make_batch(data.train, np.arange(2))
    _, z = a.represent(batch)
    assert not torch.allclose(a.lm_loss(batch, z), b.lm_loss(batch, z))


def test_the_cloud_takes_the_first_encoder_of_each_family_unless_named(tiny_config: dict):
    plain = cloud_model(RunSettings.from_run_config(tiny_config))
    gru = {**tiny_config, "server.encoders": "sensor:gru"}
    named = cloud_model(RunSettings.from_run_config(gru))
    assert {type(e).__name__ for e in plain.encoders.values()} == {"SensorMLP"}
    assert {type(e).__name__ for e in named.encoders.values()} == {"SensorGRU"}
    # the fused space and the prompt map start alike whatever the encoders
    for part in ("to_fused", "to_prompt"):
        a, b = getattr(plain.connector, part), getattr(named.connector, part)
        for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(p, q), f"{part}.{n}"


def test_autocast_is_off_on_cpu_and_runs_bf16_when_set(tiny_config: dict):
    # Prepare
    s = RunSettings.from_run_config(tiny_config)
    data = build_client_data(s, 0, 2)
    model = edge_model(s, data.modalities, 0)
    batch = model.make_batch(data.train, np.arange(4))
    # Assert: the factory enables autocast only on CUDA
    assert s.train.autocast and not model.autocast
    # Execute: force it on (CPU bf16 autocast stands in for CUDA here)
    model.autocast = True
    seen = []
    hook = model.lm.get_base_model().lm_head.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype)
    )
    e, z = model.represent(batch)
    loss = model.lm_loss(batch, z)
    loss.backward()
    texts = model.generate(batch, 2)
    hook.remove()
    # Assert: the LM ran in bf16; what leaves the model is float32
    assert seen and set(seen) == {torch.bfloat16}
    assert e.dtype == z.dtype == loss.dtype == torch.float32
    assert len(texts) == 4


def test_initial_weights_do_not_depend_on_what_the_process_built_before(
    tiny_config: dict, tmp_path
):
    """A model's initial weights are the same whether its backbone is built, loaded or cached.

    (Building or loading the backbone draws from torch's global RNG; a model seeded
    before that got other weights in a fresh process, e.g. a deployment ClientApp.)
    """
    from common.model import factory

    s = RunSettings.from_run_config({**tiny_config, "cache-dir": str(tmp_path / "fresh")})
    held = build_client_data(s, 0, 2).modalities

    def weights(model) -> dict[str, np.ndarray]:
        return {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}

    factory._tiny.cache_clear()
    built = weights(edge_model(s, held, 0))  # the backbone is trained and saved here
    factory._tiny.cache_clear()
    loaded = weights(edge_model(s, held, 0))  # ... loaded from the cache directory here
    cached = weights(edge_model(s, held, 0))  # ... and taken from this process's cache
    torch.manual_seed(12345)
    torch.rand(100)  # whatever the process drew before
    again = weights(edge_model(s, held, 0))
    for other in (loaded, cached, again):
        assert other.keys() == built.keys()
        for k in built:
            np.testing.assert_array_equal(other[k], built[k], err_msg=k)


def test_target_ids_are_the_tokenizers_padded_batch_on_either_side(tiny_config: dict):
    s = RunSettings.from_run_config(tiny_config)
    data = build_client_data(s, 0, 2)
    model = edge_model(s, data.modalities, 0)
    tok = model.tokenizer
    targets = ["walking upstairs", "sitting", "walking upstairs", "lying down quietly", "x"]
    side = tok.padding_side
    try:
        for tok.padding_side in ("right", "left"):
            enc = tok(
                [" " + t + tok.eos_token for t in targets],
                padding=True,
                add_special_tokens=False,
                return_tensors="pt",
            )
            expected = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            assert torch.equal(model.target_ids(targets), expected), tok.padding_side
    finally:
        tok.padding_side = side
