"""Extra loss terms added to the LM loss: CCL over modalities and SE-CCL anchoring of z."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from common.data.samples import SampleSet
from common.learning.contrastive import ccl_loss, volume_infonce
from common.model.multimodal import Batch, MultimodalLM
from common.sections import CclSettings

# Extra loss terms get the batch, the embeddings e (B, M, D) and z (B, F).
ExtraLoss = Callable[[Batch, torch.Tensor, torch.Tensor], torch.Tensor | None]


def ccl_term(cfg: CclSettings) -> ExtraLoss | None:
    """CCL over the batch's per-modality embeddings, weighted by ``cfg.weight``.

    None when ``cfg.weight`` is 0 (CCL off, the default): the term is not computed.
    Zero for a batch in which no sample has two modalities.
    """
    if cfg.weight == 0:
        return None

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


def on_unlabelled(
    term: ExtraLoss,
    model: MultimodalLM,
    data: SampleSet,
    batch_size: int,
    rng: np.random.Generator,
) -> ExtraLoss:
    """Apply ``term`` at each step to a batch of ``data`` instead of the training batch.

    For an anchor term (SE-CCL, CreamFL) whose anchored samples, a device's public
    share, are not among what it trains its answers on (``data.use-public-share``
    false): their inputs still pass through the encoder side and are pulled towards
    their anchors, while their labels are never used.

    Parameters
    ----------
    term : ExtraLoss
        The term, e.g. from :func:`anchor_term`.
    model : MultimodalLM
        The model whose encoder side computes the extra batch's ``e`` and ``z``.
    data : SampleSet
        The samples the term acts on (their ids are matched to the anchors).
    batch_size : int
        Samples drawn per step (all of ``data`` when fewer).
    rng : numpy.random.Generator
        Draws the samples.
    """

    def wrapped(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        if len(data) == 0:
            return None
        index = rng.choice(len(data), min(batch_size, len(data)), replace=False)
        extra = model.make_batch(data, index)
        extra_e, extra_z = model.represent(extra)
        return term(extra, extra_e, extra_z)

    return wrapped


def proximal_term(params: list[nn.Parameter], mu: float) -> ExtraLoss:
    """FedProx: ``mu / 2 * sum ||p - p0||^2`` over ``params``, ``p0`` their values now.

    Build it when local training starts, so ``p0`` is the received global state.
    """
    start = [p.detach().clone() for p in params]

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * mu * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))

    return term
