"""The training loop: optimise chosen parameters with the LM loss plus extra terms."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from common.data.samples import SampleSet
from common.learning.losses import ExtraLoss
from common.model.multimodal import MultimodalLM


def set_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Freeze everything in ``model`` except ``params``; return them as a list."""
    keep = list(params)
    ids = {id(p) for p in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return keep


def train_steps(
    model: MultimodalLM,
    data: SampleSet,
    params: list[nn.Parameter],
    *,
    batch_size: int,
    epochs: int,
    max_steps: int,
    lr: float,
    weight_decay: float,
    rng: np.random.Generator,
    extra: ExtraLoss | None = None,
) -> dict[str, float]:
    """Optimise ``params`` on ``data`` with the LM loss plus ``extra``.

    A fresh AdamW is built for each call: a persistent optimizer would keep moving
    adapters that a later stage freezes (momentum on zero gradients).

    Returns
    -------
    dict
        ``loss`` (mean total), ``lm_loss`` (mean), ``steps``, ``examples`` seen.
    """
    if len(data) == 0 or not params:
        return {"loss": float("nan"), "lm_loss": float("nan"), "steps": 0, "examples": 0}
    set_trainable(model, params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total = steps_per_epoch * epochs
    if max_steps:
        total = min(total, max_steps)
    losses, lm_losses, seen = [], [], 0
    order = np.array([], dtype=np.int64)
    for _ in range(total):
        if len(order) == 0:
            order = rng.permutation(len(data))
        index, order = order[:batch_size], order[batch_size:]
        batch = model.make_batch(data, index)
        e, z = model.represent(batch)
        lm = model.lm_loss(batch, z)
        loss = lm
        if extra is not None:
            term = extra(batch, e, z)
            if term is not None:
                loss = loss + term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        lm_losses.append(float(lm.detach()))
        seen += len(index)
    set_trainable(model, [])
    model.eval()
    return {
        "loss": float(np.mean(losses)),
        "lm_loss": float(np.mean(lm_losses)),
        "steps": total,
        "examples": seen,
    }
