"""Write a tiny Llama with a byte-level BPE tokenizer as a GGUF file (for conversion tests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from common.model.pretrained import PackagedGguf

TEXTS = [
    "walking upstairs",
    "walking downstairs",
    "sitting on a chair",
    "standing still",
    "lying down",
    "what color is the shape?",
    "Which activity is this?",
]
SPECIALS = ["<|endoftext|>", "<|bos|>", "<|eos|>"]


def _tokenizer() -> tuple[list[str], list[str]]:
    """Tokens by id and merges (``"a b"``) of a small byte-level BPE trained on TEXTS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(TEXTS * 4, trainer)
    vocab = tk.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(tk.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return tokens, merges


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for rotary embeddings (transformers reverses it)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_llama_gguf(path: Path, hidden: int = 48, seed: int = 0) -> LlamaForCausalLM:
    """Write a 1-layer Llama (GQA 4/2 heads) and its tokenizer to ``path``; return the model.

    The returned model is the float32 original the GGUF file holds (``F32``
    tensors), for comparing logits after conversion.
    """
    import gguf

    tokens, merges = _tokenizer()
    heads, kv_heads, layers = 4, 2, 1
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(2 * hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_pad_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    tensors = {
        "token_embd.weight": sd["model.embed_tokens.weight"],
        "output_norm.weight": sd["model.norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update(
            {
                f"blk.{i}.attn_norm.weight": sd[p + "input_layernorm.weight"],
                f"blk.{i}.attn_q.weight": _permute(sd[p + "self_attn.q_proj.weight"], heads),
                f"blk.{i}.attn_k.weight": _permute(sd[p + "self_attn.k_proj.weight"], kv_heads),
                f"blk.{i}.attn_v.weight": sd[p + "self_attn.v_proj.weight"],
                f"blk.{i}.attn_output.weight": sd[p + "self_attn.o_proj.weight"],
                f"blk.{i}.ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
                f"blk.{i}.ffn_gate.weight": sd[p + "mlp.gate_proj.weight"],
                f"blk.{i}.ffn_up.weight": sd[p + "mlp.up_proj.weight"],
                f"blk.{i}.ffn_down.weight": sd[p + "mlp.down_proj.weight"],
            }
        )
    for name, array in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def fake_packages(root: Path, gguf: Path, name: str, chunks: int = 2) -> PackagedGguf:
    """Install ``gguf`` as ``chunks`` data-only packages under ``root`` (put it on sys.path)."""
    data = gguf.read_bytes()
    size = -(-len(data) // chunks)
    parts = []
    for i in range(chunks):
        module = f"{name.replace('-', '_')}_part{i + 1}"
        folder = root / module / "data"
        folder.mkdir(parents=True)
        (root / module / "__init__.py").write_text("")
        (folder / f"{gguf.name}.part0{i}").write_bytes(data[i * size : (i + 1) * size])
        parts.append((module, f"data/{gguf.name}.part0{i}"))
    return PackagedGguf(name, tuple(parts), hashlib.sha256(data).hexdigest(), "pip install fake")
