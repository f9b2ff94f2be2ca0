"""The cloud trains with CCL on the public data unless ``ccl.cloud`` is off."""

from __future__ import annotations

import numpy as np
import pytest

from common.settings import RunSettings
from server_app.cloud import Cloud


@pytest.mark.parametrize(
    ("method", "cloud", "expected"),
    [
        ("mlecs", True, True),
        ("mlecs", False, False),
        ("no-ccl", True, False),
    ],
)
def test_cloud_ccl_term_follows_the_switch(tiny_config: dict, method, cloud, expected):
    settings = RunSettings.from_run_config(
        {**tiny_config, "method": method, "ccl.cloud": cloud, "ccl.weight": 0.1, "server.steps": 1}
    )
    cloud_model = Cloud(settings)
    no_anchor = np.zeros((0, settings.model.fused_dim), np.float32)
    metrics = cloud_model.step(np.zeros(0, np.int64), no_anchor, server_round=1)
    assert ("server_loss_ccl" in metrics) is expected
    assert "server_loss_lm" in metrics
