"""A device's AMT round: what is uploaded, what stays."""

from __future__ import annotations

import numpy as np

from client_app.device import Device, DeviceIdentity
from common.exchange import GlobalPayload
from common.model.factory import reference_edge_model
from common.model.state import initial_global_state
from common.settings import RunSettings
from common.state import subtract


def test_only_the_shared_stage_result_is_uploaded(tiny_config: dict):
    # Prepare
    settings = RunSettings.from_run_config({**tiny_config, "method": "mlecs"})
    payload = GlobalPayload(state=initial_global_state(settings, reference_edge_model(settings)))
    device = Device(settings, DeviceIdentity(0, 2))
    device.restore(None, payload)
    start = device.shared_state()
    after_stage: list[dict] = []
    stage = device._stage

    def spy(*args, **kwargs):
        out = stage(*args, **kwargs)
        after_stage.append(device.shared_state())
        return out

    device._stage = spy
    # Execute
    update = device.train(payload, server_round=1)
    # Assert: two stages ran; the private one changed the local heads, yet the
    # upload is exactly the shared stage's change
    assert len(after_stage) == 2
    expected = subtract(after_stage[0], start)
    assert update.delta.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(update.delta[k], expected[k])
    heads = [k for k in expected if k.startswith("head/")]
    assert heads and any(not np.array_equal(after_stage[1][k], after_stage[0][k]) for k in heads)
    assert not any("private" in k for k in update.delta)
