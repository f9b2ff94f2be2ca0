"""LoRA adapters on the backbone: the shared (federated) one, and a model's own one.

Every model has the ``shared`` adapter, the one that is federated. The cloud
model also has its ``private`` adapter, its own LoRA, active beside the frozen
global one (the two sides then share the decoder and the cloud adds what its
public data teach). A device under the paper's AMT (``amt.variant = "gate"``)
has a private adapter too, and a learned gate that mixes the two.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import PreTrainedModel

from common.run_config import ConfigError
from common.sections import LoraSettings

SHARED, PRIVATE = "shared", "private"


def add_adapters(model: PreTrainedModel, cfg: LoraSettings, private: bool = False) -> PeftModel:
    """Wrap ``model`` with the shared LoRA adapter (and, if ``private``, its own one too).

    Raises
    ------
    ConfigError
        If none of ``cfg.targets`` names a module of the model.
    """
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in names]
    if missing:
        raise ConfigError(f"config key 'lora.targets': {missing} are not modules of the backbone")

    def config(rank: int, alpha: float) -> LoraConfig:
        return LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.targets),
            bias="none",
        )

    with warnings.catch_warnings():
        # peft probes a deprecated transformers attribute; the warning is not ours.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        peft_model = get_peft_model(model, config(cfg.rank, cfg.alpha), adapter_name=SHARED)
    if private:
        peft_model.add_adapter(PRIVATE, config(cfg.private_rank, cfg.private_alpha))
        peft_model.base_model.set_adapter([SHARED, PRIVATE])
    return peft_model


class AdapterGate(nn.Module):
    """A learned scalar gate per adapter: ``g_a = gmax * sigmoid(theta_a)`` (1 at the start).

    Each LoRA layer's output for adapter ``a`` is scaled by ``g_a`` on top of its
    ``alpha / r``: a forward pre-hook on every LoRA layer writes the scaling from
    ``theta`` at each call, so the gate is differentiable and acts in ``generate()``.

    Parameters
    ----------
    adapters : tuple of str
        The adapters it mixes.
    gmax : float
        The largest value a gate can take.
    """

    def __init__(self, adapters: tuple[str, ...] = (SHARED, PRIVATE), gmax: float = 2.0):
        super().__init__()
        self.gmax = gmax
        self.theta = nn.ParameterDict({a: nn.Parameter(torch.zeros(())) for a in adapters})
        self._base: dict[int, dict[str, float]] = {}

    def values(self) -> dict[str, float]:
        """The current gate value of each adapter."""
        return {a: float(self.gmax * torch.sigmoid(t.detach())) for a, t in self.theta.items()}

    def attach(self, model: nn.Module) -> AdapterGate:
        """Hook every LoRA layer of ``model`` (after all its adapters exist)."""
        for mod in model.modules():
            if isinstance(mod, LoraLayer):
                self._base[id(mod)] = {
                    a: mod.lora_alpha[a] / mod.r[a] for a in self.theta if a in mod.scaling
                }
                mod.register_forward_pre_hook(self._hook)
        return self

    def _hook(self, mod: nn.Module, args: tuple) -> None:
        for a, base in self._base[id(mod)].items():
            mod.scaling[a] = base * self.gmax * torch.sigmoid(self.theta[a])


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
