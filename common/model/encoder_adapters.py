"""Low-rank adapters on the encoders, federated among devices with the same encoder.

Encoders stay private and heterogeneous: each device trains its own. What devices
with the same encoder kind for the same modality can share is a low-rank update
of it, ``W = W_own + (alpha / r) B A`` on every trainable weight of two or more
dimensions (convolution kernels seen as ``(out, in * k)``). For that update to mean
the same on every device, encoders of one kind start from the same seeded weights
(:func:`encoder_seed`) and their adapters from the same ``A`` (``B`` starts at 0).
The server averages each group's adapters over the devices that hold it, so only
low-rank deltas cross the network, and nothing is averaged across unlike encoders.

State keys: ``enclora/<modality>/<kind>/<weight>/lora_A`` and ``.../lora_B``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from common.data.samples import ModalitySpec
from common.model.encoders import build_encoder
from common.model.pretrained_encoders import frozen_keys
from common.state import ENC_LORA


def encoder_seed(shared_seed: int, modality: str, kind: str) -> int:
    """Seed of the initial weights of encoder ``kind`` for ``modality`` (alike on all devices)."""
    return (shared_seed + zlib.crc32(f"{modality}/{kind}".encode())) & 0x7FFFFFFF


def group_prefix(modality: str, kind: str) -> str:
    """Key prefix of one (modality, encoder kind) group's adapters."""
    return f"{ENC_LORA}{modality}/{kind}/"


def adapted_weights(encoder: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the weights of ``encoder`` that get an adapter.

    Trainable parameters with two or more dimensions, outside frozen pretrained
    networks and their own LoRA; biases and norms stay private.
    """
    frozen = frozen_keys(encoder)
    return [
        (n, tuple(p.shape))
        for n, p in encoder.named_parameters()
        if p.ndim >= 2 and n not in frozen and p.requires_grad and "lora_" not in n
    ]


class EncoderAdapter(nn.Module):
    """Low-rank updates of the adapted weights of one encoder.

    Parameters
    ----------
    encoder : torch.nn.Module
        The encoder adapted (not owned: passed again to :meth:`forward`).
    rank : int
        ``r``; clipped to each weight's smaller side.
    alpha : float
        Scale numerator: the update is ``(alpha / r) B A``.
    seed : int
        Seed of the ``A`` matrices (every device of the group draws the same).
    """

    def __init__(self, encoder: nn.Module, rank: int, alpha: float, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.scales: list[float] = []
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        for name, shape in adapted_weights(encoder):
            rows, cols = shape[0], int(torch.tensor(shape[1:]).prod())
            r = min(rank, rows, cols)
            # As peft: A ~ Kaiming-uniform, B = 0, so the adapted encoder starts as its own.
            bound = 1.0 / cols**0.5
            a = (torch.rand(r, cols, generator=gen) * 2 - 1) * bound
            self.names.append(name)
            self.shapes.append(shape)
            self.scales.append(alpha / r)
            self.lora_A.append(nn.Parameter(a))
            self.lora_B.append(nn.Parameter(torch.zeros(rows, r)))

    def forward(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``encoder`` on ``x`` with every adapted weight replaced by ``W + s B A``."""
        params = dict(encoder.named_parameters())
        weights = {
            n: params[n] + (s * (b @ a)).view(shape).to(params[n].dtype)
            for n, shape, s, a, b in zip(
                self.names, self.shapes, self.scales, self.lora_A, self.lora_B
            )
        }
        return functional_call(encoder, weights, (x,), strict=False)

    def state_keys(self) -> dict[str, nn.Parameter]:
        """``<weight>/lora_A`` and ``<weight>/lora_B`` -> the parameter."""
        out: dict[str, nn.Parameter] = {}
        for n, a, b in zip(self.names, self.lora_A, self.lora_B):
            out[f"{n}/lora_A"], out[f"{n}/lora_B"] = a, b
        return out


def adapter_state(adapter: EncoderAdapter, prefix: str) -> dict[str, np.ndarray]:
    """One adapter's tensors as fp32 numpy, keys ``prefix<weight>/lora_A|B``."""
    return {
        prefix + k: p.detach().cpu().float().numpy().copy() for k, p in adapter.state_keys().items()
    }


def load_adapter_state(adapter: EncoderAdapter, prefix: str, state: dict[str, np.ndarray]) -> None:
    """Load the ``prefix``-ed entries of ``state`` (all or none of them) into ``adapter``.

    Raises
    ------
    ValueError
        If an entry is unknown, missing or of the wrong shape.
    """
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        return
    params = adapter.state_keys()
    if set(own) != set(params):
        extra, missing = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        raise ValueError(
            f"encoder adapter {prefix!r}: unexpected {extra[:2]}, missing {missing[:2]}"
        )
    with torch.no_grad():
        for k, v in own.items():
            arr = np.asarray(v)
            if arr.shape != tuple(params[k].shape):
                raise ValueError(
                    f"'{prefix}{k}' has shape {arr.shape}, expected {tuple(params[k].shape)}"
                )
            params[k].copy_(torch.as_tensor(arr, dtype=params[k].dtype))


@dataclass(frozen=True)
class EncoderGroups:
    """How the encoders of every group are built: sizes, adapter rank and the run's seed.

    Attributes
    ----------
    encoder_dim : int
        Feature size every encoder outputs.
    vocab, pad_id : int
        Tokenizer size and padding id, for text encoders.
    rank : int
        Adapter rank ``r``.
    alpha : float
        Adapter scale numerator.
    shared_seed : int
        The run's seed for parts every model starts from alike.
    """

    encoder_dim: int
    vocab: int
    pad_id: int
    rank: int
    alpha: float
    shared_seed: int

    def build(self, spec: ModalitySpec, kind: str) -> tuple[nn.Module, EncoderAdapter]:
        """Encoder ``kind`` for ``spec`` from its kind's common start, and its adapter.

        The weights are drawn from the kind's seed without touching the global RNG
        stream, so every device of the group, and the server, build the same pair.
        """
        seed = encoder_seed(self.shared_seed, spec.name, kind)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_encoder(spec, kind, self.encoder_dim, self.vocab, self.pad_id)
        return encoder, EncoderAdapter(encoder, self.rank, self.alpha, seed)

    def initial_state(
        self, specs: tuple[ModalitySpec, ...], choices: dict[str, tuple[str, ...]]
    ) -> dict[str, np.ndarray]:
        """The initial adapters of every (modality, kind) group the families allow.

        The global state holds them all, so a device of any kind finds its group's.
        """
        out: dict[str, np.ndarray] = {}
        for spec in specs:
            for kind in dict.fromkeys(choices.get(spec.kind, ("mlp",))):
                _, adapter = self.build(spec, kind)
                out.update(adapter_state(adapter, group_prefix(spec.name, kind)))
        return out
