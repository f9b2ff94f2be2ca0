"""Encoder adapters: averaged within their group of devices, validated as whole groups."""

from __future__ import annotations

import numpy as np
import pytest

from server_app.aggregation import aggregate_shared, mma_weights
from server_app.contribution import Contribution, check_contribution

MODS = ("acc", "gyro")
SHARED = {"lora/x.lora_A.weight": (2, 3)}
GROUPS = {
    "enclora/acc/mlp/": {"net.0.weight/lora_A": (2, 4), "net.0.weight/lora_B": (3, 2)},
    "enclora/acc/gru/": {"gru.weight_ih_l0/lora_A": (2, 3), "gru.weight_ih_l0/lora_B": (6, 2)},
    "enclora/gyro/mlp/": {"net.0.weight/lora_A": (2, 4), "net.0.weight/lora_B": (3, 2)},
}
REF = {
    **{k: np.zeros(s, np.float32) for k, s in SHARED.items()},
    **{g + k: np.zeros(s, np.float32) for g, keys in GROUPS.items() for k, s in keys.items()},
}


def contrib(node: int, value: float, n: int, groups: tuple[str, ...], mods=MODS) -> Contribution:
    delta = {k: np.full(s, value, np.float32) for k, s in SHARED.items()}
    for g in groups:
        delta.update({g + k: np.full(s, value, np.float32) for k, s in GROUPS[g].items()})
    return Contribution(node, delta, n, tuple(mods), {m: n for m in mods})


def check(c: Contribution) -> list[str]:
    return check_contribution(c, REF, MODS, 1, None, max_bytes=100_000)


def test_each_group_is_averaged_over_its_holders_only():
    # Devices 1 and 2 hold the acc MLP group, device 3 the acc GRU group
    cs = [
        contrib(1, 1.0, 10, ("enclora/acc/mlp/",), ("acc",)),
        contrib(2, 4.0, 30, ("enclora/acc/mlp/", "enclora/gyro/mlp/")),
        contrib(3, 7.0, 20, ("enclora/acc/gru/",), ("acc",)),
    ]
    weights = mma_weights(cs, 2, 0.0)  # 1/6, 1/2, 1/3
    delta, _, _ = aggregate_shared(cs, weights, 0.0, 0.0)
    # Shared keys: over every device
    np.testing.assert_allclose(delta["lora/x.lora_A.weight"], (10 + 120 + 140) / 60, rtol=1e-6)
    # A group: over its holders, their weights renormalised
    np.testing.assert_allclose(delta["enclora/acc/mlp/net.0.weight/lora_A"], (10 + 120) / 40)
    np.testing.assert_allclose(delta["enclora/gyro/mlp/net.0.weight/lora_B"], 4.0)
    np.testing.assert_allclose(delta["enclora/acc/gru/gru.weight_ih_l0/lora_B"], 7.0)


def test_a_group_nobody_holds_is_left_out_of_the_delta():
    cs = [contrib(1, 1.0, 10, ("enclora/acc/mlp/",), ("acc",))]
    delta, _, _ = aggregate_shared(cs, mma_weights(cs, 2, 0.0), 0.0, 0.0)
    assert not any(k.startswith("enclora/acc/gru/") for k in delta)
    assert "enclora/acc/mlp/net.0.weight/lora_A" in delta


def test_a_clipped_device_is_scaled_in_its_groups_too():
    cs = [contrib(i, 1.0, 10, ("enclora/acc/mlp/",)) for i in range(3)]
    cs.append(contrib(3, 100.0, 10, ("enclora/acc/mlp/",)))
    delta, w, scales = aggregate_shared(cs, mma_weights(cs, 2, 0.0), 2.0, 0.0)
    assert scales[3] < 0.1
    key = "enclora/acc/mlp/net.0.weight/lora_A"
    expected = sum(w[i] * scales[i] * cs[i].delta[key] for i in range(4)) / w.sum()
    np.testing.assert_allclose(delta[key], expected, rtol=1e-6)


def test_whole_groups_of_own_modalities_are_accepted():
    assert check(contrib(1, 1.0, 10, ("enclora/acc/gru/", "enclora/gyro/mlp/"))) == []
    assert check(contrib(1, 1.0, 10, ())) == []  # a device without adapters


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda d: d.pop("enclora/acc/mlp/net.0.weight/lora_B"), "incomplete"),
        (lambda d: d.update({"enclora/acc/cnn/x/lora_A": np.zeros(2, np.float32)}), "unknown"),
        (lambda d: d.update({"enclora/acc/mlp/y/lora_A": np.zeros(2, np.float32)}), "unknown"),
        (
            lambda d: d.update(
                {"enclora/acc/mlp/net.0.weight/lora_A": np.zeros((4, 2), np.float32)}
            ),
            "shape",
        ),
        (
            lambda d: d.update(
                {
                    "enclora/acc/gru/" + k: np.zeros(s, np.float32)
                    for k, s in GROUPS["enclora/acc/gru/"].items()
                }
            ),
            "several encoder groups",
        ),
    ],
)
def test_malformed_groups_are_rejected_with_reason(tamper, reason):
    c = contrib(1, 1.0, 10, ("enclora/acc/mlp/",))
    tamper(c.delta)
    problems = check(c)
    assert any(reason in p for p in problems), problems


def test_a_group_of_a_modality_the_device_lacks_is_rejected():
    c = contrib(1, 1.0, 10, ("enclora/gyro/mlp/",), ("acc",))
    assert any("does not hold" in p for p in check(c))
