"""A device that holds every component of the shared adapters and trains only the first.

Under ``lora.hold-rest`` a box whose profile lowers its LoRA rank to ``r`` still
builds the federation's rank ``R`` and loads the whole global adapter, so it
computes the federation's adapter (where a box of rank ``r`` otherwise computes its
best rank-``r`` approximation, and loses what the other components carry). It
trains only the first ``r`` components, the strongest after an SVD re-factorisation
(``common.lora_ranks``), and uploads only those: its optimiser state, its upload and
its share of the aggregation are those of rank ``r``; its download is rank ``R``.
"""

from __future__ import annotations

import torch

from common.model.adapters import SHARED
from common.model.multimodal import MultimodalLM


def held_adapter_factors(model: MultimodalLM) -> list[tuple[torch.nn.Parameter, int]]:
    """Each shared low-rank factor of ``model`` with its rank axis.

    The backbone's shared LoRA (peft's ``lora_A`` ``(R, in)``, axis 0, and
    ``lora_B`` ``(out, R)``, axis 1) and the prompt map's low-rank update (the same
    shapes); not the encoder adapters, which keep ``lora.encoder-rank``.
    """
    tag = f".{SHARED}."
    factors = [
        (p, 0 if "lora_A" in name else 1)
        for name, p in model.lm.named_parameters()
        if tag in name and ("lora_A" in name or "lora_B" in name)
    ]
    prompt = model.connector.to_prompt
    if prompt is not None:
        factors += [(prompt.lora_A, 0), (prompt.lora_B, 1)]
    return factors


def train_first_components(model: MultimodalLM, trained: int) -> int:
    """Zero the gradient of every shared component from ``trained`` on; the number masked.

    A hook on each factor multiplies its gradient by a 0/1 mask along the rank
    axis, so AdamW (without weight decay, which the settings require here) leaves
    the held components exactly as loaded: their moments stay 0 and so does their
    step. Registered once per tensor, whatever number of times this is called.

    Returns
    -------
    int
        The number of factors masked (0 when ``trained`` covers every component).
    """
    masked = 0
    for p, axis in held_adapter_factors(model):
        if p.shape[axis] <= trained or getattr(p, "_trained_components", None) == trained:
            continue
        shape = [1, 1]
        shape[axis] = p.shape[axis]
        mask = (torch.arange(p.shape[axis]) < trained).to(p.dtype).view(shape)
        p.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype))
        p._trained_components = trained
        masked += 1
    return masked
