"""Central DP of the shared update: clipping to the norm, equal weights, calibrated noise."""

from __future__ import annotations

import numpy as np
import pytest

from common.sections import DpSettings
from server_app.privacy import CentralDp


def _deltas(values):
    return [
        {"lora/a": np.full((3, 4), v, np.float32), "prompt/b": np.full(5, v, np.float32)}
        for v in values
    ]


def test_each_device_counts_at_most_the_clipping_norm():
    dp = CentralDp(DpSettings(noise_multiplier=1e-9, clipping_norm=1.0), population=4)
    delta, info = dp.aggregate(_deltas([0.01, 0.01, 0.01, 1e6]), np.random.default_rng(0))
    # the huge delta is scaled to norm 1: its entries become 1/sqrt(17)
    expected = (3 * 0.01 + 1 / np.sqrt(17)) / 4
    np.testing.assert_allclose(delta["lora/a"], expected, rtol=1e-5)
    assert info["dp_clipped"] == 1.0


def test_the_noise_has_the_calibrated_standard_deviation_and_is_seeded():
    dp = CentralDp(DpSettings(noise_multiplier=1.0, clipping_norm=2.0), population=4)
    big = [{"lora/a": np.zeros(200_000, np.float32)} for _ in range(4)]
    delta, info = dp.aggregate(big, np.random.default_rng(1))
    assert info["dp_noise_std"] == pytest.approx(0.5)  # z * C / n
    assert np.std(delta["lora/a"]) == pytest.approx(0.5, rel=0.02)
    again, _ = CentralDp(DpSettings(noise_multiplier=1.0, clipping_norm=2.0), 4).aggregate(
        big, np.random.default_rng(1)
    )
    np.testing.assert_array_equal(delta["lora/a"], again["lora/a"])


def test_epsilon_grows_with_every_release_and_replays_after_a_resume():
    pytest.importorskip(
        "dp_accounting", reason="the privacy extra (dp-accounting) is not installed"
    )
    dp = CentralDp(DpSettings(noise_multiplier=1.0), population=4)
    eps = [
        dp.aggregate(_deltas([0.1] * 4), np.random.default_rng(i))[1]["dp_epsilon"]
        for i in range(3)
    ]
    assert eps[0] < eps[1] < eps[2]
    resumed = CentralDp(DpSettings(noise_multiplier=1.0), population=4, releases=dp.releases[:2])
    assert resumed.aggregate(_deltas([0.1] * 4), np.random.default_rng(2))[1][
        "dp_epsilon"
    ] == pytest.approx(eps[2])


def test_the_strategy_bounds_a_hostile_device_under_dp():
    from flwr.supercore.task_identity import TaskIdentity

    from proto.records import from_record
    from tests.server_app.test_strategy import instructions, reply, strategy

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    st = strategy("fedit", **{"dp.noise-multiplier": 1e-6, "dp.clipping-norm": 1.0})
    msgs = instructions(st)
    replies = [reply(msgs[1], 0.0, 10, ("acc",)), reply(msgs[2], 0.0, 10, ("acc",))]
    replies.append(reply(msgs[3], 1e6, 10**9, ("acc",)))
    arrays, _ = st.aggregate_train(1, replies)
    moved = np.linalg.norm(np.concatenate([v.ravel() for v in from_record(arrays).values()]))
    assert moved <= 1.0 / 3 + 1e-3  # at most C / n, whatever it claims
    assert st.finish_round().privacy["dp_clipped"] == 1.0
