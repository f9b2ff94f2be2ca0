"""GRAM volume and the masked, symmetric volume-InfoNCE used by CCL and SE-CCL.

GRAM (Cicchetti et al., ICLR 2025, https://arxiv.org/abs/2412.11959): the volume
spanned by unit vectors v_1..v_k is ``sqrt(det(A^T A))`` with ``A = [v_1 .. v_k]``;
a small volume means the vectors are aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6


def masked_gram(vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrices of sets of unit vectors, absent vectors replaced by identity.

    An absent vector gets a unit diagonal and zero off-diagonal entries, i.e. it
    acts like a unit vector orthogonal to all others, which multiplies the volume
    by exactly 1: the volume is that of the present vectors alone.

    Parameters
    ----------
    vectors : torch.Tensor
        ``(..., k, D)``, L2-normalised along ``D``.
    mask : torch.Tensor, optional
        ``(..., k)`` bool presence.

    Returns
    -------
    torch.Tensor
        ``(..., k, k)``.
    """
    g = vectors @ vectors.transpose(-1, -2)
    if mask is None:
        return g
    m = mask.to(g.dtype)
    pair = m.unsqueeze(-1) * m.unsqueeze(-2)
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    return g * pair + eye * (1 - m).unsqueeze(-1)


def gram_volume(vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Volume ``sqrt(det(G))`` of each set of unit vectors.

    Parameters
    ----------
    vectors : torch.Tensor
        ``(..., k, D)`` unit vectors.
    mask : torch.Tensor, optional
        ``(..., k)`` bool presence; absent vectors take no part.

    Returns
    -------
    torch.Tensor
        ``(...)`` volumes in [0, 1]; differentiable (a small ridge keeps the
        gradient finite for parallel vectors).
    """
    g = masked_gram(vectors, mask)
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    # det of a Gram matrix is >= 0; the ridge keeps sqrt's gradient finite at 0.
    det = torch.linalg.det(g + _EPS * eye).clamp_min(_EPS)
    return det.sqrt()


def volume_matrix(
    anchor: torch.Tensor, others: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``Vol[i, j]``: volume of anchor ``i`` with the other vectors of sample ``j``.

    Parameters
    ----------
    anchor : torch.Tensor
        ``(B, D)`` unit vectors.
    others : torch.Tensor
        ``(B, K, D)`` unit vectors.
    mask : torch.Tensor, optional
        ``(B, K)`` bool presence of the others.

    Returns
    -------
    torch.Tensor
        ``(B, B)``.
    """
    b, k, _ = others.shape
    vecs = torch.cat(
        [anchor[:, None, None, :].expand(b, b, 1, -1), others[None].expand(b, b, k, -1)], 2
    )  # (B_i, B_j, 1 + K, D)
    full = None
    if mask is not None:
        ones = torch.ones(b, b, 1, dtype=torch.bool, device=mask.device)
        full = torch.cat([ones, mask[None].expand(b, b, k)], 2)
    return gram_volume(vecs, full)


def volume_infonce(
    anchor: torch.Tensor,
    others: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 0.07,
    label_smoothing: float = 0.1,
) -> torch.Tensor:
    """Symmetric InfoNCE on ``-Vol / tau`` with matching pairs on the diagonal.

    ``L = (CE(-Vol/tau, diag) + CE(-Vol^T/tau, diag)) / 2``. Inputs are normalised
    here. Fewer than two samples give a zero loss (no negatives).

    Parameters
    ----------
    anchor : torch.Tensor
        ``(B, D)``.
    others : torch.Tensor
        ``(B, K, D)``.
    mask : torch.Tensor, optional
        ``(B, K)`` presence; every row must have at least one present entry.
    """
    if anchor.shape[0] < 2:
        return anchor.sum() * 0.0
    a = F.normalize(anchor, dim=-1)
    o = F.normalize(others, dim=-1)
    logits = -volume_matrix(a, o, mask) / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    )


def ccl_loss(
    e: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 0.07,
    label_smoothing: float = 0.1,
) -> torch.Tensor:
    """Cross-modal contrastive loss over a batch, every modality taking a turn as anchor.

    For anchor modality ``m`` only samples that hold ``m`` and at least one other
    modality take part; the others of each sample are its present modalities
    except ``m``. Per-anchor losses are averaged weighted by how many samples took
    part, so the loss does not depend on the order of modalities, and a sample
    with fewer than two present modalities adds nothing.

    Parameters
    ----------
    e : torch.Tensor
        ``(B, M, D)`` per-modality embeddings.
    mask : torch.Tensor
        ``(B, M)`` bool presence.

    Returns
    -------
    torch.Tensor
        Scalar; zero when no sample has two modalities.
    """
    _, m, _ = e.shape
    total, weight = e.sum() * 0.0, 0
    enough = mask.sum(1) >= 2
    for j in range(m):
        rows = mask[:, j] & enough
        n = int(rows.sum())
        if n < 2 or m < 2:
            continue
        rest = [i for i in range(m) if i != j]
        loss = volume_infonce(
            e[rows, j], e[rows][:, rest], mask[rows][:, rest], temperature, label_smoothing
        )
        total = total + n * loss
        weight += n
    return total / weight if weight else total
