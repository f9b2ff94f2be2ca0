"""A SmolLM2-135M-shaped backbone for timing: its published architecture, random weights.

Timing needs the architecture, not the weights, so the benchmarks build the model
from SmolLM2-135M's published config (``experiments.comm_report.SMOLLM2_135M``)
with no download and no model package, and save it, with a byte-level BPE
tokenizer trained on the task's texts, as a local Hugging Face directory that
``model.backbone`` accepts. The embedding keeps SmolLM2's 49,152 rows (the
tokenizer uses the first few hundred), so every layer, the LM head included,
costs what it costs in SmolLM2-135M.
"""

from __future__ import annotations

from pathlib import Path

from common.cache import cache_root
from common.settings import RunSettings

NAME = "smollm2-135m-arch"


def smollm2_dir(settings: RunSettings) -> Path:
    """The directory of the random-weight SmolLM2-135M (built once per cache)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from common.atomic import atomic_write
    from common.data.views import task_info
    from common.model.backbone import train_tokenizer
    from experiments.comm_report import SMOLLM2_135M

    path = cache_root(settings) / NAME
    if (path / "config.json").exists():
        return path
    task = task_info(settings)
    tok = train_tokenizer([task.prompt, *task.answers, *task.texts], 512, cache_root(settings))
    torch.manual_seed(0)
    config = LlamaConfig(
        **SMOLLM2_135M,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)

    def save(target: Path) -> None:
        model.save_pretrained(target)
        tok.save_pretrained(target)

    atomic_write(path, save)
    return path
