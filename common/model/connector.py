"""The Connector C: per-modality heads, mask-aware fusion, fused z and soft prompts."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over present modalities.

    Parameters
    ----------
    e : torch.Tensor
        ``(B, M, D)`` modality embeddings.
    mask : torch.Tensor
        ``(B, M)`` bool presence.

    Returns
    -------
    torch.Tensor
        ``(B, D)``; zeros for a sample with no modality present.
    """
    w = mask.to(e.dtype).unsqueeze(-1)  # (B, M, 1)
    return (e * w).sum(1) / w.sum(1).clamp(min=1.0)


class MeanFusion(nn.Module):
    """Average of the present modality embeddings."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, M, D), (B, M) -> (B, D)``."""
        return masked_mean(e, mask)


class AttentionFusion(nn.Module):
    """Attention pooling with a learned query; absent modalities get no weight."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim) / dim**0.5)
        self.key = nn.Linear(dim, dim)

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, M, D), (B, M) -> (B, D)``."""
        scores = self.key(e) @ self.query / e.shape[-1] ** 0.5  # (B, M)
        scores = scores.masked_fill(~mask, float("-inf"))
        # A row with nothing present would be all -inf: give it zero weights instead.
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * e).sum(1)


class GatedFusion(nn.Module):
    """Sigmoid-gated weighted mean of the present modalities."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, 1)

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, M, D), (B, M) -> (B, D)``."""
        g = torch.sigmoid(self.gate(e)).squeeze(-1) * mask.to(e.dtype)  # (B, M)
        return (g.unsqueeze(-1) * e).sum(1) / g.sum(1, keepdim=True).clamp(min=1e-6)


FUSION_CLASSES: dict[str, type[nn.Module]] = {
    "mean": MeanFusion,
    "attention": AttentionFusion,
    "gated": GatedFusion,
}


class Connector(nn.Module):
    """Heads into the shared space, fusion to ``z`` and K soft-prompt tokens.

    Parameters
    ----------
    modalities : tuple of str
        Modalities this model holds heads for (a device's ``M_j``).
    encoder_dim : int
        Encoder output size.
    embed_dim : int
        Size of the shared per-modality space (CCL works here).
    fused_dim : int
        Size of the fused representation ``z`` (the cloud-edge bridge).
    fusion : str
        ``"mean"``, ``"attention"`` or ``"gated"``.
    soft_tokens : int
        Number ``K`` of soft-prompt tokens.
    hidden_size : int
        Backbone hidden size ``H``.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        encoder_dim: int,
        embed_dim: int,
        fused_dim: int,
        fusion: str,
        soft_tokens: int,
        hidden_size: int,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.soft_tokens = soft_tokens
        self.hidden_size = hidden_size
        # The per-modality heads are the "shared heads": same shape on every device
        # that holds the modality, so the server can average them per modality.
        self.heads = nn.ModuleDict({m: nn.Linear(encoder_dim, embed_dim) for m in self.modalities})
        self.fusion = FUSION_CLASSES[fusion](embed_dim)
        self.to_fused = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, fused_dim))
        self.to_prompt = nn.Sequential(nn.GELU(), nn.Linear(fused_dim, soft_tokens * hidden_size))

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Map encoder features into the shared space.

        Returns
        -------
        torch.Tensor
            ``(B, M, embed_dim)`` in the order of ``self.modalities``.
        """
        return torch.stack([self.heads[m](features[m]) for m in self.modalities], 1)

    def fuse(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, M, embed_dim), (B, M) -> z (B, fused_dim)``."""
        return self.to_fused(self.fusion(e, mask))

    def prompt(self, z: torch.Tensor) -> torch.Tensor:
        """``z (B, fused_dim) -> soft prompt (B, K, H)``."""
        return self.to_prompt(z).view(z.shape[0], self.soft_tokens, self.hidden_size)
