"""Heterogeneous LoRA ranks (common.lora_ranks): slices, padding, the holders' mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.lora_ranks import (
    device_alpha,
    fits_rank,
    mean_over_holders,
    pad_ranks,
    state_rank,
    truncate_ranks,
)
from common.model.adapters import SHARED, adapter_state, add_adapters, load_adapter_state
from common.sections import LoraSettings
from common.state import LORA, prefixed, select
from server_app.contribution import Contribution, check_contribution

A, B = "lora/x.lora_A.weight", "lora/x.lora_B.weight"


def _state(rank: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        A: rng.normal(size=(rank, 5)).astype(np.float32),
        B: rng.normal(size=(3, rank)).astype(np.float32),
        "prompt/lora_A": rng.normal(size=(rank, 4)).astype(np.float32),
        "enclora/acc/mlp/w/lora_A": rng.normal(size=(2, 4)).astype(np.float32),
    }


def test_a_slice_padded_back_keeps_its_components_and_zeroes_the_rest():
    full = _state(8)
    cut = truncate_ranks(full, 3)
    assert state_rank(cut) == 3 and cut[B].shape == (3, 3) and cut["prompt/lora_A"].shape == (3, 4)
    assert cut["enclora/acc/mlp/w/lora_A"].shape == (2, 4)  # encoder adapters keep their rank
    padded, rank = pad_ranks(cut, full)
    assert rank == 3
    np.testing.assert_array_equal(padded[A][:3], full[A][:3])
    assert not padded[A][3:].any() and not padded[B][:, 3:].any()
    assert truncate_ranks(full, None) is full and truncate_ranks(cut, 8)[A] is cut[A]
    assert fits_rank(A, (3, 5), (8, 5)) and fits_rank(B, (3, 3), (3, 8))
    assert not fits_rank(A, (9, 5), (8, 5)) and not fits_rank(A, (3, 4), (8, 5))
    assert not fits_rank("enclora/acc/mlp/w/lora_A", (1, 4), (2, 4))
    with pytest.raises(ValueError, match="several ranks"):
        pad_ranks({A: cut[A], B: full[B]}, full)


def test_the_holders_mean_is_each_components_mean_over_the_devices_holding_it():
    full = _state(4)
    low = {k: v * 0 + 1 for k, v in truncate_ranks(full, 2).items()}  # a rank-2 device, all ones
    high = {k: v * 0 + 3 for k, v in full.items()}  # a rank-4 device, all threes
    weights = np.array([0.5, 0.5])
    padded = [pad_ranks(d, full)[0] for d in (low, high)]
    summed = {k: sum(w * p[k] for w, p in zip(weights, padded)) for k in full}
    mean = mean_over_holders(summed, [2, None], weights)
    np.testing.assert_allclose(mean[A][:2], 2.0)  # both hold components 0-1
    np.testing.assert_allclose(mean[A][2:], 3.0)  # only the rank-4 device holds 2-3
    np.testing.assert_allclose(mean[B][:, 2:], 3.0)
    np.testing.assert_allclose(mean["prompt/lora_A"][2:], 3.0)
    np.testing.assert_allclose(mean["enclora/acc/mlp/w/lora_A"], 2.0)  # not a rank key
    assert mean_over_holders(summed, [None, None], weights) is summed  # one rank: FedAvg


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_lower_rank_device_computes_the_global_adapter_cut_to_its_components():
    torch.manual_seed(0)
    base = _Net()
    run = LoraSettings(rank=8, alpha=16.0, targets=("fc",))
    big = add_adapters(_copy(base), run)
    state = {k: np.random.default_rng(1).normal(size=v.shape).astype(np.float32)
             for k, v in adapter_state(big, SHARED).items()}  # fmt: skip
    rank = 3
    for key, value in state.items():  # the components past the device's rank, zeroed
        if "lora_A" in key:
            value[rank:] = 0
    load_adapter_state(big, SHARED, state)
    own = LoraSettings(rank=rank, alpha=device_alpha(16.0, rank, 8), targets=("fc",))
    small = add_adapters(_copy(base), own)
    cut = select(truncate_ranks(prefixed(state, LORA), rank), LORA)  # as a device receives it
    assert all(min(v.shape) <= rank for v in cut.values())
    load_adapter_state(small, SHARED, cut)
    x = torch.randn(5, 6)
    torch.testing.assert_close(small(x), big(x))


def _copy(net: _Net) -> _Net:
    out = _Net()
    out.load_state_dict(net.state_dict())
    return out


def test_a_lower_rank_delta_is_accepted_and_a_mixed_or_higher_one_is_not():
    ref = {k: v for k, v in _state(4).items() if not k.startswith("enclora/")}

    def problems(delta):
        c = Contribution(1, delta, 10, ("acc",), {"acc": 10})
        return check_contribution(c, ref, ("acc",), 1, None, max_bytes=100_000)

    assert problems(truncate_ranks(ref, 2)) == []
    mixed = {**truncate_ranks(ref, 2), A: ref[A]}
    assert any("several ranks" in p for p in problems(mixed))
    higher = {**ref, A: np.zeros((5, 5), np.float32)}
    assert any("has shape (5, 5), expected (4, 5)" in p for p in problems(higher))
