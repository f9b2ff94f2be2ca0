"""A term's gradient share is capped for a stage: the factor and its use in the loop."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.views import build_client_data
from common.learning.loop import Trainer, capped_scales
from common.model.factory import edge_model
from common.model.pretrained_encoders import trainable_parameters
from common.settings import RunSettings


def test_the_factor_puts_the_share_at_the_cap():
    shares = {"lm": 0.3, "ccl": 0.6, "seccl": 0.1}
    k = capped_scales(shares, {"ccl": 0.2})["ccl"]
    assert k * 0.6 / (k * 0.6 + 0.4) == pytest.approx(0.2)
    assert capped_scales(shares, {"ccl": 0.7}) == {"ccl": 1.0}  # under the cap
    assert capped_scales(shares, {"ccl": 1.0}) == {}  # no cap
    assert capped_scales({"lm": 1.0}, {"ccl": 0.2}) == {}  # term not in this stage


def _stage(config: dict, cap: float):
    s = RunSettings.from_run_config(config)
    data = build_client_data(s, 0, 4)
    model = edge_model(s, data.modalities, 0)
    encoders = trainable_parameters(model.encoders)
    params = [*encoders, *model.connector.private_parameters()]
    terms = {"big": lambda batch, e, z: 100.0 * e.pow(2).mean()}  # dwarfs the LM loss
    return Trainer(model, params, lr=1e-3).run(
        data.train, params, 1, 8, np.random.default_rng(0), terms, encoders, {"big": cap}
    )


def test_a_capped_term_acts_scaled_by_the_factor_for_the_stage(tiny_config: dict):
    free, capped = _stage(tiny_config, 1.0), _stage(tiny_config, 0.2)
    assert free.grad_share == pytest.approx(capped.grad_share)  # measured before the cap
    assert free.grad_share["big"] > 0.2 and free.scale == {}
    k = capped_scales(capped.grad_share, {"big": 0.2})["big"]
    assert capped.scale == {"big": pytest.approx(k)} and k < 1
    assert capped.losses["big"] == pytest.approx(k * free.losses["big"], rel=1e-4)
    assert capped.losses["lm"] == pytest.approx(free.losses["lm"], rel=1e-4)
