"""Per-modality encoders (the Extractor E): a small family, chosen per device."""

from __future__ import annotations

import torch
from torch import nn

from common.data.samples import ModalitySpec
from common.model.pretrained_encoders import PRETRAINED_ENCODERS, build_pretrained_encoder

# Sensor windows are pooled to this many steps before the MLP, so its size does not
# grow with the window length.
_MLP_STEPS = 32


class SensorMLP(nn.Module):
    """MLP over an average-pooled sensor window.

    Parameters
    ----------
    channels : int
        Sensor channels ``C``.
    out_dim : int
        Output feature size.
    """

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(_MLP_STEPS)
        self.net = nn.Sequential(
            nn.Linear(channels * _MLP_STEPS, 128), nn.GELU(), nn.Linear(128, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C) -> (B, out_dim)``."""
        return self.net(self.pool(x.transpose(1, 2)).flatten(1))


class SensorCNN(nn.Module):
    """Two strided 1-D convolutions and global average pooling."""

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, 32, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(32, 64, 5, stride=2, padding=2),
            nn.GELU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.out = nn.Linear(64, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C) -> (B, out_dim)``."""
        return self.out(self.net(x.transpose(1, 2)).squeeze(-1))


class SensorGRU(nn.Module):
    """A GRU over a 4x-downsampled window; the last hidden state is the feature."""

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool1d(4, ceil_mode=True)
        self.gru = nn.GRU(channels, 48, batch_first=True)
        self.out = nn.Linear(48, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C) -> (B, out_dim)``."""
        x = self.pool(x.transpose(1, 2)).transpose(1, 2)  # (B, T/4, C)
        _, h = self.gru(x)
        return self.out(h[-1])


class ImageCNN(nn.Module):
    """Three strided convolutions for small RGB images."""

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.out = nn.Linear(64, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, out_dim)``."""
        return self.out(self.net(x.permute(0, 3, 1, 2)).flatten(1))


class ImageMLP(nn.Module):
    """MLP over an image pooled to 16x16."""

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(16)
        self.net = nn.Sequential(nn.Linear(channels * 256, 128), nn.GELU(), nn.Linear(128, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, out_dim)``."""
        return self.net(self.pool(x.permute(0, 3, 1, 2)).flatten(1))


class VectorMLP(nn.Module):
    """MLP for pre-extracted feature vectors."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, out_dim)``."""
        return self.net(x)


class TextBag(nn.Module):
    """Mean of token embeddings (padding id ignored)."""

    def __init__(self, vocab: int, out_dim: int, pad_id: int) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, 64, mode="mean", padding_idx=pad_id)
        self.out = nn.Linear(64, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids ``-> (B, out_dim)``."""
        return self.out(self.emb(ids))


class TextGRU(nn.Module):
    """A GRU over token embeddings; padding is packed away."""

    def __init__(self, vocab: int, out_dim: int, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.emb = nn.Embedding(vocab, 48, padding_idx=pad_id)
        self.gru = nn.GRU(48, 48, batch_first=True)
        self.out = nn.Linear(48, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids ``-> (B, out_dim)``."""
        lengths = (ids != self.pad_id).sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.emb(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)
        return self.out(h[-1])


def build_encoder(
    spec: ModalitySpec, kind: str, out_dim: int, vocab: int = 0, pad_id: int = 0
) -> nn.Module:
    """Build the encoder ``kind`` for modality ``spec``.

    Parameters
    ----------
    spec : ModalitySpec
        The modality; its ``kind`` decides which encoder names are valid.
    kind : str
        Encoder name, e.g. ``"gru"``.
    out_dim : int
        Feature size every encoder of the model shares.
    vocab, pad_id : int
        Tokenizer size and padding id, for text encoders.

    Returns
    -------
    torch.nn.Module
        Maps a batch of that modality to ``(B, out_dim)``.
    """
    if (spec.kind, kind) in PRETRAINED_ENCODERS:
        return build_pretrained_encoder(spec, kind, out_dim)
    table: dict[tuple[str, str], type[nn.Module]] = {
        ("sensor", "mlp"): SensorMLP,
        ("sensor", "cnn1d"): SensorCNN,
        ("sensor", "gru"): SensorGRU,
        ("image", "cnn"): ImageCNN,
        ("image", "mlp"): ImageMLP,
        ("vector", "mlp"): VectorMLP,
    }
    if spec.kind == "text":
        cls = {"bow": TextBag, "gru": TextGRU}.get(kind)
        if cls is None:
            raise ValueError(f"no text encoder '{kind}' for modality '{spec.name}'")
        return cls(vocab, out_dim, pad_id)
    if spec.kind == "vector":
        return VectorMLP(spec.shape[0], out_dim)
    cls = table.get((spec.kind, kind))
    if cls is None:
        raise ValueError(f"no {spec.kind} encoder '{kind}' for modality '{spec.name}'")
    return cls(spec.shape[-1], out_dim)


def encoder_kind(spec: ModalitySpec, choices: dict[str, tuple[str, ...]], slot: int) -> str:
    """Pick this device's encoder for ``spec`` from the configured family.

    Devices cycle through the family by ``slot`` (their partition id), so
    neighbouring devices differ in structure.
    """
    family = choices.get(spec.kind, ("mlp",))
    return family[slot % len(family)]
