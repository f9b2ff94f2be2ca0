"""The Backbone B: a causal LM from a local directory or a tiny one built offline.

The default is a Llama-style model built from a config, with a byte-level BPE
tokenizer trained on the task texts and a short causal-LM warm-up on them, both
cached under the cache directory (never inside the app directory). Nothing is
downloaded from a hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from common.atomic import atomic_write
from common.run_config import ConfigError
from common.sections import TinyBackboneSettings

logger = logging.getLogger(__name__)
# Every process that builds a model imports this module: no "Loading weights" or
# "Writing model shards" progress bars from each of them (hub downloads' bars too).
transformers_logging.disable_progress_bar()

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]


@dataclass
class Backbone:
    """A causal LM with its tokenizer (no adapters yet)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_tokenizer(corpus: list[str], vocab: int, cache: Path) -> PreTrainedTokenizerFast:
    """Train (or load from ``cache``) a byte-level BPE tokenizer on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = sorted(set(corpus))
    path = cache / f"tokenizer-{_digest([texts, vocab])}"
    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(path)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token=SPECIALS[0], bos_token=SPECIALS[1], eos_token=SPECIALS[2]
    )
    # Many virtual clients may build the same entry at once: write it atomically.
    atomic_write(path, tok.save_pretrained)
    return tok


def build_tiny(
    cfg: TinyBackboneSettings,
    answers: list[str],
    texts: list[str],
    prompt: str,
    cache: Path,
    seed: int,
) -> Backbone:
    """Build the tiny Llama backbone, warmed up on the task's texts (cached).

    The warm-up is causal-LM training on ``prompt + " " + answer`` for every
    distinct answer and on every distinct text input (e.g. questions), each
    sequence equally often, so the model learns to spell the answers after the
    prompt without learning which answer is frequent (and never the prompt as an
    answer). It stands in for the pretrained small LM a real device would carry.
    """
    tok = train_tokenizer([prompt, *answers, *texts], cfg.vocab, cache)
    seqs = [f"{prompt} {a}" for a in sorted(set(answers)) if a != prompt]
    seqs += [t for t in sorted(set(texts)) if t != prompt]
    key = _digest([cfg.model_dump(), seqs, seed, len(tok), _WARM_UP_VERSION])
    path = cache / f"tiny-llama-{key}"
    if (path / "config.json").exists():
        return Backbone(LlamaForCausalLM.from_pretrained(path), tok)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.hidden * 8 // 3,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    _warm_up(model, tok, seqs, cfg.pretrain_steps, seed)
    atomic_write(path, model.save_pretrained)
    return Backbone(model, tok)


_WARM_UP_VERSION = 2  # bump when the warm-up corpus or recipe changes


def _warm_up(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerFast,
    seqs: list[str],
    steps: int,
    seed: int,
) -> None:
    if steps == 0 or not seqs:
        return
    gen = torch.Generator().manual_seed(seed)
    enc = tok(
        [tok.bos_token + s + tok.eos_token for s in seqs],
        padding=True,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(seqs), (min(32, len(seqs)),), generator=gen)
        out = model(
            input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    logger.info("tiny backbone warmed up: final loss %.3f", out.loss.item())


def load_local(path: str) -> Backbone:
    """Load a causal LM and its tokenizer from a local Hugging Face directory."""
    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise ConfigError(
            f"config key 'model.backbone' = {path!r}: not 'tiny', not a packaged model "
            "('smollm2-135m', 'gemma3-270m') and not a local Hugging Face model directory "
            "(no config.json there)"
        )
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=torch.float32)
    return Backbone(model, tok)
