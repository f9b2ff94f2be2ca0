"""Training steps, evaluation and fused representations for one model (no Flower)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from common import metrics
from common.contrastive import ccl_loss, volume_infonce
from common.model import Batch, MultimodalLM
from common.samples import SampleSet, TaskInfo
from common.settings import CclSettings, EvalSettings

# Extra loss terms get the batch, the embeddings e (B, M, D) and z (B, F).
ExtraLoss = Callable[[Batch, torch.Tensor, torch.Tensor], torch.Tensor | None]


def ccl_term(cfg: CclSettings) -> ExtraLoss:
    """CCL over the batch's per-modality embeddings, weighted by ``cfg.weight``."""

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return cfg.weight * ccl_loss(e, batch.mask, cfg.temperature, cfg.label_smoothing)

    return term


def anchor_term(
    anchor_ids: np.ndarray, anchors: np.ndarray, weight: float, cfg: CclSettings
) -> ExtraLoss | None:
    """Volume-InfoNCE pulling ``z`` of each sample toward its anchor (SE-CCL).

    Parameters
    ----------
    anchor_ids : numpy.ndarray
        ``(N,)`` sample ids that have an anchor.
    anchors : numpy.ndarray
        ``(N, fused_dim)`` anchors (the other side's fused representations).
    weight : float
        Loss weight.

    Returns
    -------
    ExtraLoss or None
        None when there are no anchors; the term is skipped for a batch with fewer
        than two anchored samples (no negatives).
    """
    if len(anchor_ids) == 0:
        return None
    row = {int(i): r for r, i in enumerate(anchor_ids)}
    table = torch.as_tensor(np.asarray(anchors, np.float32))

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        hit = [(k, row[int(i)]) for k, i in enumerate(batch.ids) if int(i) in row]
        if len(hit) < 2:
            return None
        rows = torch.tensor([k for k, _ in hit], device=z.device)
        anchor = table[[r for _, r in hit]].to(z.device)
        return weight * volume_infonce(
            anchor, z[rows].unsqueeze(1), None, cfg.temperature, cfg.label_smoothing
        )

    return term


def sum_terms(*terms: ExtraLoss | None) -> ExtraLoss | None:
    """One extra loss adding up the given terms (None ones skipped)."""
    active = [t for t in terms if t is not None]
    if not active:
        return None

    def total(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        parts = [p for p in (t(batch, e, z) for t in active) if p is not None]
        return sum(parts) if parts else None

    return total


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


@torch.no_grad()
def predict(
    model: MultimodalLM, data: SampleSet, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Generated text for every sample of ``data``."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        out.extend(model.generate(model.make_batch(data, index), max_new_tokens))
    return out


def evaluate(
    model: MultimodalLM,
    data: SampleSet,
    task: TaskInfo,
    cfg: EvalSettings,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """Generate for ``data`` and score it (ROUGE-Lsum, BERTScore F1, macro-F1)."""
    preds = predict(model, data, batch_size, max_new_tokens)
    out = metrics.score(
        preds, data.targets, data.labels, task.class_names, cfg.bertscore, cfg.bertscore_model
    )
    out["num_examples"] = float(len(data))
    return out


@torch.no_grad()
def fused_representations(
    model: MultimodalLM, data: SampleSet, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``z`` for every sample.

    Returns
    -------
    ids : numpy.ndarray
        ``(N,)`` int64 sample ids.
    z : numpy.ndarray
        ``(N, fused_dim)`` float32.
    """
    model.eval()
    zs = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        _, z = model.represent(model.make_batch(data, index))
        zs.append(z.float().cpu().numpy())
    fused_dim = model.connector.to_fused[-1].out_features
    z_all = np.concatenate(zs) if zs else np.zeros((0, fused_dim), np.float32)
    return data.ids.astype(np.int64), z_all
