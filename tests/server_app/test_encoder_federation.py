"""A federation whose devices share encoder adapters by kind, end to end in-process."""

from __future__ import annotations

import numpy as np

from client_app.app import app as client_app
from common.data.views import build_client_data
from common.model.encoders import encoder_kind
from common.model.factory import encoder_choices
from common.settings import RunSettings
from server_app.checkpoint import load_checkpoint
from server_app.run import ServerRun


def test_groups_held_by_devices_learn_and_the_others_stay(grid_factory, tiny_config):
    # Prepare: two devices, so the third kind of the sensor family is held by none
    config = {**tiny_config, "method": "mlecs", "run-name": "enc", "lora.encoder-rank": 4}
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    initial = dict(run.initial_state)
    choices = encoder_choices(settings.model)
    specs = {s.name: s for s in build_client_data(settings, 0, 2).public.specs}
    held = set()
    for pid in range(2):
        for m in build_client_data(settings, pid, 2).modalities:
            held.add(f"enclora/{m}/{encoder_kind(specs[m], choices, pid)}/")
    # Execute
    summary = run.run(grid_factory(client_app, config, 2))
    final = load_checkpoint(run.recorder.dir).global_state
    # Assert: encoder adapters travelled both ways ...
    assert summary["comm"]["bytes_encoder_up"] > 0 and summary["comm"]["bytes_encoder_down"] > 0
    # ... each held group's B moved from 0, every other group is exactly as it started
    groups = {"/".join(k.split("/")[:3]) + "/" for k in initial if k.startswith("enclora/")}
    assert held and held < groups
    for g in groups:
        b_keys = [k for k in initial if k.startswith(g) and k.endswith("lora_B")]
        moved = any(not np.array_equal(final[k], initial[k]) for k in b_keys)
        assert moved == (g in held), g
