"""Cloud inference with a pretrained cloud backbone by name (a tiny GGUF stands in for Gemma)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from common.model.factory import reference_edge_model
from common.model.pretrained import MODELS
from common.model.state import cloud_state, initial_global_state
from common.settings import RunSettings
from proto import inference
from server_app.checkpoint import Checkpoint, StrategySnapshot, save_checkpoint
from server_app.inference_server import CloudGenerator, load_cloud_model
from tests.common.model.tiny_gguf import fake_packages, write_tiny_llama_gguf


@pytest.fixture
def gemma_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gemma3-270m`` resolves to a tiny Llama GGUF shipped in two fake chunk packages."""
    src = tmp_path / "src"
    src.mkdir()
    write_tiny_llama_gguf(src / "gemma-3-270m-q4_k_m.gguf", hidden=48, seed=1)
    model = fake_packages(tmp_path / "site", src / "gemma-3-270m-q4_k_m.gguf", "gemma3-270m")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(MODELS, "gemma3-270m", model)


def test_cloud_inference_loads_a_named_cloud_backbone_from_a_checkpoint(
    gemma_stand_in, tiny_config: dict
):
    # Prepare: a run whose cloud model differs from the devices' (tiny edge, "Gemma" cloud)
    from server_app.cloud import Cloud
    from server_app.recorder import Recorder

    config = {**tiny_config, "server.backbone": "gemma3-270m", "device": "cpu", "run-name": "g"}
    settings = RunSettings.from_run_config(config)
    cloud = Cloud(settings)
    assert not cloud.uses_global
    cloud.step(np.zeros(0, np.int64), np.zeros((0, settings.model.fused_dim), np.float32), 1)
    edge = reference_edge_model(settings)
    recorder = Recorder(settings)
    ids, z = cloud.representations()
    save_checkpoint(
        recorder.dir,
        Checkpoint(
            global_state=initial_global_state(settings, edge),
            cloud_state=cloud.state(),
            strategy=StrategySnapshot(server_round=2, anchor_ids=ids, anchors=z),
        ),
    )
    # Execute
    model, loaded, info = load_cloud_model(recorder.dir)
    generator = CloudGenerator(model, loaded, info)
    text = generator.generate(generator.check(inference.GenerateRequest(z=z[0].tolist())))
    # Assert: the converted cloud backbone, its own tokenizer and hidden size, with the
    # trained cloud state restored; generation works from a fused representation
    assert model.lm.config.hidden_size == 48 != edge.lm.config.hidden_size
    assert len(model.tokenizer) == model.lm.config.vocab_size != len(edge.tokenizer)
    assert info.round == 2 and loaded.server.backbone == "gemma3-270m"
    want = cloud_state(cloud.model)
    for k, v in cloud_state(model).items():
        np.testing.assert_array_equal(v, want[k])
    assert isinstance(text, str)
