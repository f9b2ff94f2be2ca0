"""Shared and private LoRA on one backbone, mixed by a learned per-device gate.

The shared adapter is the one that is federated; the private adapter never leaves
the device. Both are active at once; the gate scales each adapter's LoRA output by
``g_a = gmax * sigmoid(theta_a)`` (``g = 1`` at initialisation).
"""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import PreTrainedModel

from common.settings import ConfigError, LoraSettings

SHARED, PRIVATE = "shared", "private"


class AdapterGate(nn.Module):
    """Learnable scalar gate per adapter, written into peft's LoRA scaling.

    A forward pre-hook on every LoRA layer recomputes ``scaling[a]`` from ``theta``
    on each call, so the gate is differentiable and survives ``generate()``.
    """

    def __init__(self, adapters: tuple[str, ...] = (SHARED, PRIVATE), gmax: float = 2.0):
        super().__init__()
        self.gmax = gmax
        self.theta = nn.ParameterDict({a: nn.Parameter(torch.zeros(())) for a in adapters})
        self._base: dict[int, dict[str, float]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def values(self) -> dict[str, float]:
        """Current gate value per adapter."""
        return {a: float(self.gmax * torch.sigmoid(t.detach())) for a, t in self.theta.items()}

    def attach(self, model: nn.Module) -> AdapterGate:
        """Hook every LoRA layer of ``model`` (call after all adapters exist)."""
        for mod in model.modules():
            if isinstance(mod, LoraLayer):
                self._base[id(mod)] = {
                    a: mod.lora_alpha[a] / mod.r[a] for a in self.theta if a in mod.scaling
                }
                self._handles.append(mod.register_forward_pre_hook(self._hook))
        return self

    def _hook(self, mod: nn.Module, args: tuple) -> None:
        for a, s in self._base[id(mod)].items():
            mod.scaling[a] = s * self.gmax * torch.sigmoid(self.theta[a])


def add_adapters(model: PreTrainedModel, cfg: LoraSettings) -> PeftModel:
    """Wrap ``model`` with a shared and a private LoRA adapter, both active.

    Raises
    ------
    ConfigError
        If none of ``cfg.targets`` names a module of the model.
    """
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in names]
    if missing:
        raise ConfigError(f"config key 'lora.targets': {missing} are not modules of the backbone")
    shared = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        bias="none",
    )
    private = LoraConfig(
        r=cfg.private_rank,
        lora_alpha=cfg.private_alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        bias="none",
    )
    peft_model = get_peft_model(model, shared, adapter_name=SHARED)
    peft_model.add_adapter(PRIVATE, private)
    peft_model.base_model.set_adapter([SHARED, PRIVATE])
    return peft_model


def adapter_state(model: PeftModel, adapter: str) -> dict[str, np.ndarray]:
    """Copy one adapter's weights out as fp32 numpy arrays (names without adapter)."""
    sd = get_peft_model_state_dict(model, adapter_name=adapter)
    return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in sd.items()}


def load_adapter_state(model: PeftModel, adapter: str, state: dict[str, np.ndarray]) -> None:
    """Load ``state`` into ``adapter``.

    Raises
    ------
    ValueError
        If any key does not belong to the adapter (peft would skip it silently).
    """
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
    res = set_peft_model_state_dict(model, tensors, adapter_name=adapter)
    if res.unexpected_keys:
        raise ValueError(f"adapter '{adapter}': unexpected keys {res.unexpected_keys[:3]}")


def adapter_parameters(model: PeftModel, adapter: str) -> list[nn.Parameter]:
    """The trainable tensors of one adapter."""
    tag = f".{adapter}."
    return [p for n, p in model.named_parameters() if "lora_" in n and tag in n]


def freeze_all(model: nn.Module) -> None:
    """Set ``requires_grad=False`` on every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
