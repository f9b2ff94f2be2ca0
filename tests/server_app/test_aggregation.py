"""MMA weights, robust damping, consensus and rejection of malformed contributions."""

from __future__ import annotations

import numpy as np
import pytest

from common.sections import PAPER_MMA
from common.settings import RunSettings
from server_app.aggregation import (
    aggregate_representations,
    aggregate_shared,
    bound_representations,
    damp,
    mma_in_force,
    mma_weights,
    representation_consensus,
)
from server_app.contribution import Contribution, check_contribution

MODS = ("acc", "gyro")
REF = {
    "lora/x.lora_A.weight": np.zeros((2, 3), np.float32),
    "prompt/lora_A": np.zeros((2, 2), np.float32),
}


def contrib(node, value, n, mods, counts=None, **kw):
    delta = {
        "lora/x.lora_A.weight": np.full((2, 3), value, np.float32),
        "prompt/lora_A": np.full((2, 2), value, np.float32),
    }
    return Contribution(node, delta, n, tuple(mods), counts or {m: n for m in mods}, **kw)


def test_mma_weights_hand_computed():
    cs = [contrib(1, 1.0, 10, MODS), contrib(2, 2.0, 10, ("acc",)), contrib(3, 3.0, 30, ("gyro",))]
    # beta=1: 10*1, 10*0.5, 30*0.5 -> 10, 5, 15 of 30
    np.testing.assert_allclose(mma_weights(cs, 2, 1.0), [1 / 3, 1 / 6, 1 / 2])
    # beta=0 is FedAvg by example counts
    np.testing.assert_allclose(mma_weights(cs, 2, 0.0), [0.2, 0.2, 0.6])
    # beta=2: 10, 2.5, 7.5
    np.testing.assert_allclose(mma_weights(cs, 2, 2.0), [0.5, 0.125, 0.375])


def test_fedavg_when_no_damping():
    cs = [contrib(1, 1.0, 10, MODS), contrib(2, 4.0, 30, MODS)]
    delta, w, _ = aggregate_shared(cs, mma_weights(cs, 2, 0.0), 0.0, 0.0)
    np.testing.assert_allclose(delta["lora/x.lora_A.weight"], 0.25 * 1 + 0.75 * 4)
    np.testing.assert_allclose(delta["prompt/lora_A"], 0.25 * 1 + 0.75 * 4)
    np.testing.assert_allclose(w, [0.25, 0.75])


def test_damping_sees_every_shared_tensor_of_a_device():
    # the prompt adapter alone disagrees: clipping and damping must see it
    cs = [contrib(i, 1.0, 10, MODS) for i in range(4)]
    cs[3].delta["prompt/lora_A"] = np.full((2, 2), -50.0, np.float32)
    _, w, _ = aggregate_shared(cs, mma_weights(cs, 2, 0.0), 2.0, 1.0)
    assert w[3] < 0.3 * w[0]
    np.testing.assert_allclose(w[:3], w[0])  # alike devices, alike weights


def test_damping_does_not_depend_on_device_order():
    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=8) for _ in range(5)]
    weights = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    scales, w = damp(vecs, weights, 2.0, 1.0)
    order = [3, 0, 4, 1, 2]
    scales2, w2 = damp([vecs[i] for i in order], weights[order], 2.0, 1.0)
    np.testing.assert_allclose(w2, w[order])
    np.testing.assert_allclose(scales2, scales[order])


def test_clipping_against_median_and_disagreement_damping():
    vecs = [np.ones(4), np.ones(4) * 1.1, np.ones(4) * 100]
    scales, _ = damp(vecs, np.full(3, 1 / 3), clip_factor=2.0, disagreement=0.0)
    assert np.linalg.norm(vecs[2] * scales[2]) == pytest.approx(2 * np.linalg.norm(vecs[1]))
    vecs = [np.ones(4), np.ones(4), -np.ones(4)]
    _, w = damp(vecs, np.full(3, 1 / 3), clip_factor=0.0, disagreement=1.0)
    assert w[2] < 1e-6 and w[0] == pytest.approx(0.5)


def test_representations_weighted_per_public_id():
    a = contrib(1, 0, 10, MODS, rep_ids=np.array([5, 7]), reps=np.array([[1.0], [2.0]], np.float32))
    b = contrib(2, 0, 10, MODS, rep_ids=np.array([7]), reps=np.array([[4.0]], np.float32))
    ids, z = aggregate_representations([a, b], np.array([0.25, 0.75]))
    assert ids.tolist() == [5, 7]
    np.testing.assert_allclose(z[:, 0], [1.0, (0.25 * 2 + 0.75 * 4) / 1.0])


def _check(c, public=None):
    return check_contribution(c, REF, MODS, 1, public, max_bytes=10_000)


def test_valid_contribution_accepted():
    assert _check(contrib(1, 0.5, 10, MODS)) == []


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda c: c.delta.__setitem__(
                "lora/x.lora_A.weight", np.full((2, 3), np.nan, np.float32)
            ),
            "non-finite",
        ),
        (lambda c: c.delta.__setitem__("lora/evil", np.zeros(1, np.float32)), "unexpected"),
        (
            lambda c: c.delta.__setitem__("lora/x.lora_A.weight", np.zeros((3, 3), np.float32)),
            "shape",
        ),
        (
            lambda c: c.delta.__setitem__("lora/x.lora_A.weight", np.zeros((2, 3), np.float64)),
            "dtype",
        ),
        (
            lambda c: c.delta.__setitem__("lora/x.lora_A.weight", np.zeros((2, 3), np.int32)),
            "dtype",
        ),
        (lambda c: c.delta.pop("lora/x.lora_A.weight"), "missing"),
        (lambda c: c.delta.__setitem__("bias", np.zeros(2, np.float32)), "unexpected key"),
        (
            lambda c: c.delta.__setitem__("head/acc/weight", np.zeros((2, 2), np.float32)),
            "unexpected",
        ),
        (lambda c: c.delta.pop("prompt/lora_A"), "missing"),
        (
            lambda c: c.delta.__setitem__("lora/x.lora_A.weight", np.zeros((2, 3000), np.float32)),
            "size",
        ),
        (lambda c: setattr(c, "modalities", ("acc", "smell")), "modality"),
        (lambda c: setattr(c, "num_examples", 0), "num-examples"),
    ],
)
def test_malformed_contributions_rejected_with_reason(tamper, reason):
    c = contrib(1, 0.5, 10, MODS)
    tamper(c)
    problems = _check(c)
    assert problems and any(reason in p for p in problems), problems


def test_representations_only_for_public_ids():
    ok = contrib(1, 0, 10, MODS, rep_ids=np.array([1, 2]), reps=np.zeros((2, 1), np.float32))
    assert _check(ok, public={1, 2, 3}) == []
    bad = contrib(1, 0, 10, MODS, rep_ids=np.array([1, 99]), reps=np.zeros((2, 1), np.float32))
    assert any("not public" in p for p in _check(bad, public={1, 2, 3}))
    wrong = contrib(1, 0, 10, MODS, rep_ids=np.array([1]), reps=np.zeros((1, 5), np.float32))
    assert any("shape" in p for p in _check(wrong))


def test_example_counts_are_capped_against_the_median():
    cs = [contrib(1, 1.0, 10, MODS), contrib(2, 1.0, 20, MODS), contrib(3, 1.0, 10**9, MODS)]
    w = mma_weights(cs, 2, 0.0, count_cap=2.0)
    # the liar counts as 2 x median (20): 10, 20, 40 of 70
    np.testing.assert_allclose(w, [10 / 70, 20 / 70, 40 / 70])
    np.testing.assert_allclose(mma_weights(cs, 2, 0.0)[2], 1.0, atol=1e-6)  # uncapped: it rules


def test_representations_are_clipped_and_contrary_devices_damped():
    ref_ids = np.array([1, 2, 3])
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    # two honest devices a little off the cloud's view, one far away and contrary
    a = contrib(1, 0, 10, MODS, rep_ids=np.array([1, 2]), reps=ref[:2] + 0.1)
    b = contrib(2, 0, 10, MODS, rep_ids=np.array([2, 3]), reps=ref[1:] - 0.1)
    far = contrib(3, 0, 10, MODS, rep_ids=np.array([2, 3]), reps=-ref[1:] * 1e6)
    reps, mult, notes = bound_representations([a, b, far], ref_ids, ref, 2.0, 1.0)
    honest_dev = np.linalg.norm(np.full(2, 0.1))
    # the far rows end within 2 x the median deviation of the cloud's rows
    assert np.linalg.norm(reps[2] - ref[1:], axis=1).max() <= 2 * honest_dev * (1 + 1e-5)
    np.testing.assert_allclose(reps[0], a.reps, rtol=1e-6)
    assert mult[2] == pytest.approx(0.0, abs=1e-9) and mult[0] > 0.9
    assert "clipped" in notes[3] and "away" in notes[3] and 1 not in notes
    ids, z = aggregate_representations([a, b, far], np.full(3, 1 / 3) * mult, reps)
    assert ids.tolist() == [1, 2, 3]
    np.testing.assert_allclose(z[0], a.reps[0], rtol=1e-6)  # only device 1 sent id 1


@pytest.mark.parametrize("method", ["no-mma", "creamfl"])
def test_without_mma_the_consensus_is_a_plain_mean_by_example_counts(method, tiny_config):
    """``no-mma`` turns MMA off everywhere: no count cap, no clipping, no damping."""
    ref_ids = np.array([1, 2])
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    a = contrib(1, 0, 10, MODS[:1], rep_ids=ref_ids, reps=ref + 0.1)
    far = contrib(2, 0, 30, MODS, rep_ids=ref_ids, reps=-ref * 1e3)
    off = mma_in_force(RunSettings.from_run_config({**tiny_config, "method": method}))
    assert (off.beta, off.clip_factor, off.disagreement) == (0.0, 0.0, 0.0)
    ids, z, notes = representation_consensus([a, far], 2, off, ref_ids, ref)
    np.testing.assert_allclose(z, (10 * a.reps + 30 * far.reps) / 40, rtol=1e-5)
    assert ids.tolist() == [1, 2] and notes == {}
    # mlecs's default (MMA off since 2026-12-07) computes exactly what no-mma does
    default = mma_in_force(RunSettings.from_run_config({**tiny_config, "method": "mlecs"}))
    assert default == off
    on = mma_in_force(RunSettings.from_run_config({**tiny_config, "method": "mlecs", **PAPER_MMA}))
    assert on.clip_factor > 0
    _, bounded, notes = representation_consensus([a, far], 2, on, ref_ids, ref)
    assert np.abs(bounded).max() < 10 and "away" in notes[2]  # far clipped and damped


def test_counts_outside_the_example_count_are_rejected():
    c = contrib(1, 0.5, 10, MODS, counts={"acc": 11, "gyro": -1})
    problems = _check(c)
    assert sum("outside [0, num-examples]" in p for p in problems) == 2


def test_the_fast_cosines_equal_the_direct_ones():
    from server_app.aggregation import _cosines_by_total, _cosines_direct

    rng = np.random.default_rng(3)
    vecs = [rng.normal(size=50) + (5 if i % 3 == 0 else 0) for i in range(12)]
    scales = rng.uniform(0.5, 1.0, size=12)
    weights = rng.dirichlet(np.ones(12))
    np.testing.assert_allclose(
        _cosines_by_total(vecs, scales, weights), _cosines_direct(vecs, scales, weights), atol=1e-10
    )


def test_many_devices_aggregate_as_the_per_key_path_does():
    """Beyond _DIRECT_MAX devices the stacked-matrix path gives the reference result."""
    import server_app.aggregation as agg

    rng = np.random.default_rng(4)
    n = agg._DIRECT_MAX + 8
    contribs = []
    for i in range(n):
        delta = {
            "lora/x.lora_A.weight": rng.normal(size=(2, 3)).astype(np.float32),
            "lora/x.lora_B.weight": rng.normal(size=(3, 2)).astype(np.float32) * (i + 1),
            "prompt/lora_A": rng.normal(size=(2, 2)).astype(np.float32) + (i % 4 == 0),
        }
        contribs.append(Contribution(i, delta, 10 + i, MODS, {m: 10 + i for m in MODS}))
    weights = mma_weights(contribs, 2, 1.0, 2.0)
    fast, w_fast, s_fast = aggregate_shared(contribs, weights, 2.0, 1.0)
    old_max = agg._DIRECT_MAX
    agg._DIRECT_MAX = n  # force the per-key path with the direct cosines
    try:
        ref, w_ref, s_ref = aggregate_shared(contribs, weights, 2.0, 1.0)
    finally:
        agg._DIRECT_MAX = old_max
    np.testing.assert_allclose(w_fast, w_ref, rtol=1e-9)
    np.testing.assert_allclose(s_fast, s_ref, rtol=1e-12)
    assert fast.keys() == ref.keys()
    for k in ref:
        assert fast[k].shape == ref[k].shape and fast[k].dtype == np.float32
        np.testing.assert_allclose(fast[k], ref[k], rtol=1e-5, atol=1e-7)
