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


class LowRankLinear(nn.Module):
    """``y = W0 x + b0 + (alpha / r) B A x``: a frozen base and a trainable low-rank update.

    The base (``W0``, ``b0``) and ``A`` are drawn from ``generator``, so every model
    built with the same generator seed starts from the same map; ``B`` starts at
    zero. Only ``lora_A`` and ``lora_B`` train, and only they are shared.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bound = 1.0 / in_features**0.5  # nn.Linear's default range
        self.weight = nn.Parameter(
            _uniform((out_features, in_features), bound, generator), requires_grad=False
        )
        self.bias = nn.Parameter(_uniform((out_features,), bound, generator), requires_grad=False)
        self.lora_A = nn.Parameter(_uniform((rank, in_features), bound, generator))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) -> (..., out)``."""
        base = nn.functional.linear(x, self.weight, self.bias)
        return base + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None):
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class Connector(nn.Module):
    """Heads into a per-model space, fusion to ``z`` and K soft-prompt tokens.

    Parameters
    ----------
    modalities : tuple of str
        Modalities this model holds heads for (a device's ``M_j``).
    encoder_dim : int
        Encoder output size.
    embed_dim : int
        Size of the per-modality space (CCL works here).
    fused_dim : int
        Size of the fused representation ``z`` (the cloud-edge bridge).
    fusion : str
        ``"mean"``, ``"attention"`` or ``"gated"``.
    soft_tokens : int
        Number ``K`` of soft-prompt tokens.
    hidden_size : int
        Backbone hidden size ``H``.
    rank, alpha : int, float
        Rank and scale of the shared low-rank adapter of the prompt map.
    shared_seed : int
        Seed of the parts every model of a run starts from alike: the map into
        the fused space and the prompt map (its frozen base and ``A``).

    Notes
    -----
    The heads and the fusion stay with the model that owns the encoders (their
    inputs differ between devices). The prompt map ``z -> soft tokens`` is common
    to every model of a run: a frozen base from ``shared_seed`` plus a low-rank
    update that is federated, so only that update travels.
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
        rank: int = 8,
        alpha: float = 16.0,
        shared_seed: int = 0,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.soft_tokens = soft_tokens
        self.hidden_size = hidden_size
        self.heads = nn.ModuleDict({m: nn.Linear(encoder_dim, embed_dim) for m in self.modalities})
        self.fusion = FUSION_CLASSES[fusion](embed_dim)
        gen = torch.Generator().manual_seed(shared_seed)
        self.to_fused = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, fused_dim))
        with torch.no_grad():
            bound = 1.0 / embed_dim**0.5
            self.to_fused[1].weight.copy_(_uniform((fused_dim, embed_dim), bound, gen))
            self.to_fused[1].bias.copy_(_uniform((fused_dim,), bound, gen))
        self.to_prompt = LowRankLinear(fused_dim, soft_tokens * hidden_size, rank, alpha, gen)

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Map encoder features into the model's per-modality space.

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
        out = self.to_prompt(nn.functional.gelu(z))
        return out.view(z.shape[0], self.soft_tokens, self.hidden_size)

    def private_parameters(self) -> list[nn.Parameter]:
        """Heads, fusion and the map into the fused space (they stay with the model)."""
        return [*self.heads.parameters(), *self.fusion.parameters(), *self.to_fused.parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The prompt map's low-rank update (the part that is federated)."""
        return [self.to_prompt.lora_A, self.to_prompt.lora_B]
