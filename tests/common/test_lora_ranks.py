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
    next_global,
    pad_ranks,
    refactorises,
    state_rank,
    svd_redistribute,
    truncate_ranks,
)
from common.model.adapters import SHARED, adapter_state, add_adapters, load_adapter_state
from common.sections import LoraSettings
from common.settings import ConfigError, RunSettings
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


def _product(state: dict, rank: int | None = None) -> np.ndarray:
    cut = truncate_ranks(state, rank)
    return np.asarray(cut[B], np.float64) @ np.asarray(cut[A], np.float64)


def _rank_2_and_4():
    """A rank-4 reference, a rank-2 and a rank-4 device's deltas (padded), weights 1:3."""
    ref = {k: v for k, v in _state(4).items() if k in (A, B)}  # B (3, 4), A (4, 5)
    low = {k: v * 0.1 for k, v in truncate_ranks(_state(4, seed=1), 2).items() if k in (A, B)}
    high = {k: v * 0.1 for k, v in _state(4, seed=2).items() if k in (A, B)}
    deltas = [pad_ranks(d, ref)[0] for d in (low, high)]
    return ref, low, high, deltas, np.array([0.25, 0.75])


def test_svd_keeps_the_mean_product_and_gives_each_rank_its_best_approximation():
    ref, low, high, deltas, weights = _rank_2_and_4()
    new = svd_redistribute(ref, deltas, [2, None], weights)
    # what each device computes after its round: its slice of ref plus its delta
    own_low = _product({k: truncate_ranks(ref, 2)[k] + low[k] for k in (A, B)})
    own_high = _product({k: ref[k] + high[k] for k in (A, B)})
    mean = 0.25 * own_low + 0.75 * own_high  # (3, 5): rank 3 <= R = 4, kept exactly
    np.testing.assert_allclose(_product(new), mean, atol=1e-5)
    # a rank-2 device downloads the best rank-2 approximation (Eckart-Young)
    s = np.linalg.svd(mean, compute_uv=False)
    err = np.linalg.norm(mean - _product(new, 2))
    np.testing.assert_allclose(err, np.sqrt((s[2:] ** 2).sum()), rtol=1e-4)
    # A's rows orthonormal, the components in the order of their singular values
    a = np.asarray(new[A], np.float64)
    np.testing.assert_allclose(a[:3] @ a[:3].T, np.eye(3), atol=1e-5)
    norms = np.linalg.norm(new[B], axis=0)
    assert np.all(np.diff(norms[:3]) <= 1e-6) and new[A].dtype == np.float32


def test_svd_update_moves_only_what_each_device_holds():
    ref, low, high, deltas, weights = _rank_2_and_4()
    new = svd_redistribute(ref, deltas, [2, None], weights, updates=True)
    start_low = _product(truncate_ranks(ref, 2))  # what the rank-2 device started from
    own_low = _product({k: truncate_ranks(ref, 2)[k] + low[k] for k in (A, B)})
    own_high = _product({k: ref[k] + high[k] for k in (A, B)})
    want = _product(ref) + 0.25 * (own_low - start_low) + 0.75 * (own_high - _product(ref))
    assert np.linalg.matrix_rank(want) <= 3  # (3, 5): kept exactly at R = 4
    np.testing.assert_allclose(_product(new), want, atol=1e-5)
    # a device that changes nothing leaves the global product as it was (plain svd would
    # shrink the components the rank-2 device does not hold by its weight)
    still = [pad_ranks({k: v * 0 for k, v in d.items()}, ref)[0] for d in (low, high)]
    kept = svd_redistribute(ref, still, [2, None], weights, updates=True)
    np.testing.assert_allclose(_product(kept), _product(ref), atol=1e-5)
    shrunk = svd_redistribute(ref, still, [2, None], weights)
    assert np.linalg.norm(_product(shrunk) - _product(ref)) > 0.1
    # every device at the run's rank: the two kinds agree
    both = [svd_redistribute(ref, deltas, [None, None], weights, updates=u) for u in (True, False)]
    np.testing.assert_allclose(_product(both[0]), _product(both[1]), atol=1e-5)


def test_next_global_combines_ranks_as_the_setting_says():
    ref = _state(4)
    deltas = [pad_ranks(truncate_ranks(_state(4, seed=s), 2 + 2 * s), ref)[0] for s in (0, 1)]
    weights, ranks, ones = np.array([0.5, 0.5]), [2, None], np.ones(2)
    summed = {k: sum(w * d[k] for w, d in zip(weights, deltas)) for k in ref}
    padded = next_global("zero-pad", ref, summed, deltas, ranks, weights, ones)
    np.testing.assert_allclose(padded[A], ref[A] + summed[A])
    holders = next_global("holders", ref, summed, deltas, ranks, weights, ones)
    np.testing.assert_allclose(holders[A][2:], ref[A][2:] + deltas[1][A][2:], rtol=1e-6)
    svd = next_global("svd", ref, summed, deltas, ranks, weights, ones)
    np.testing.assert_allclose(svd[A], svd_redistribute(ref, deltas, ranks, weights)[A])
    update = next_global("svd-update", ref, summed, deltas, ranks, weights, ones)
    np.testing.assert_allclose(
        update[A], svd_redistribute(ref, deltas, ranks, weights, None, True)[A]
    )
    # keys without a partner factor (and encoder adapters) move by the mean delta
    for key in ("prompt/lora_A", "enclora/acc/mlp/w/lora_A"):
        np.testing.assert_allclose(svd[key], padded[key])
    # a clipped device's delta counts as scaled: the same as handing over the scaled delta
    halved = [deltas[0], {k: v * 0.5 for k, v in deltas[1].items()}]
    clipped = svd_redistribute(ref, deltas, ranks, weights, np.array([1.0, 0.5]))
    np.testing.assert_allclose(clipped[A], svd_redistribute(ref, halved, ranks, weights)[A])


@pytest.mark.parametrize("how", ["svd", "svd-update"])
def test_svd_is_refused_where_no_device_factors_reach_the_server(how):
    RunSettings.from_run_config({"lora.rank-aggregation": how})  # the default method: fine
    with pytest.raises(ConfigError, match="dp.noise-multiplier"):
        RunSettings.from_run_config({"lora.rank-aggregation": how, "dp.noise-multiplier": 1.0})
    with pytest.raises(ConfigError, match="shares only A"):
        RunSettings.from_run_config({"lora.rank-aggregation": how, "method": "fedsa"})


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


def test_svd_refactorises_only_when_a_device_is_below_the_runs_rank():
    ref = _state(4)
    deltas = [pad_ranks(_state(4, seed=s), ref)[0] for s in (0, 1)]
    weights, ones = np.array([0.3, 0.7]), np.ones(2)
    summed = {k: sum(w * d[k] for w, d in zip(weights, deltas)) for k in ref}
    assert not refactorises("svd", [None, None]) and refactorises("svd", [None, 2])
    assert refactorises("svd", [2, 2]) and not refactorises("zero-pad", [None, 2])
    assert refactorises("svd-update", [None, 2]) and not refactorises("svd-update", [None])
    # every device at the run's rank: FedAvg of the factors, whatever the setting
    one_rank = next_global("svd", ref, summed, deltas, [None, None], weights, ones)
    padded = next_global("zero-pad", ref, summed, deltas, [None, None], weights, ones)
    for key, value in padded.items():
        np.testing.assert_array_equal(one_rank[key], value)


def test_auto_is_svd_where_the_devices_factors_reach_the_server():
    def how(**config) -> str:
        return RunSettings.from_run_config(config).rank_aggregation

    assert how() == "svd" and how(method="fedit") == "svd"
    assert how(**{"dp.noise-multiplier": 1.0}) == "zero-pad" and how(method="fedsa") == "zero-pad"
    assert how(**{"lora.rank-aggregation": "holders"}) == "holders"


def test_holding_the_rest_is_refused_where_it_cannot_hold():
    def make(**config) -> RunSettings:
        return RunSettings.from_run_config(config)

    assert make(**{"lora.hold-rest": True}).rank_aggregation == "svd-update"
    assert make(**{"lora.trained-rank": 2}).rank_aggregation == "svd-update"
    assert make(**{"lora.hold-rest": True, "method": "fedsa"}).rank_aggregation == "zero-pad"
    with pytest.raises(ConfigError, match="above lora.rank = 8"):
        make(**{"lora.trained-rank": 9})
    with pytest.raises(ConfigError, match="weight-decay = 0"):
        make(**{"lora.trained-rank": 2, "train.weight-decay": 0.01})
    with pytest.raises(ConfigError, match="svd-update"):
        make(**{"lora.hold-rest": True, "lora.rank-aggregation": "svd"})
    assert not make().holds_rest and make(**{"lora.rank-aggregation": "svd"}).rank_aggregation
