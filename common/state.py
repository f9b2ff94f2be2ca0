"""Model state as flat dicts of fp32 numpy arrays: what is stored and sent."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

State = dict[str, np.ndarray]

LORA = "lora/"  # shared LoRA tensors, by peft key
HEAD = "head/"  # per-modality shared heads: head/<modality>/<weight|bias>


def module_state(module: nn.Module, prefix: str = "") -> State:
    """Copy a module's parameters and buffers out as fp32 (or int) numpy arrays."""
    out: State = {}
    for k, v in module.state_dict().items():
        t = v.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        out[prefix + k] = t.numpy().copy()
    return out


def load_module_state(module: nn.Module, state: State, prefix: str = "") -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``module`` (strict)."""
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ref = module.state_dict()
    tensors = {
        k: torch.as_tensor(np.asarray(v)).to(ref[k].dtype)
        if k in ref
        else torch.as_tensor(np.asarray(v))
        for k, v in own.items()
    }
    module.load_state_dict(tensors, strict=True)


def select(state: State, prefix: str) -> State:
    """Entries of ``state`` under ``prefix``, prefix stripped."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def prefixed(state: State, prefix: str) -> State:
    """Entries of ``state`` with ``prefix`` added."""
    return {prefix + k: v for k, v in state.items()}


def subtract(a: State, b: State) -> State:
    """``a - b`` key by key (keys of ``a``)."""
    return {k: (a[k] - b[k]).astype(np.float32) for k in a}


def nbytes(state: State) -> int:
    """Payload bytes of the arrays in ``state``."""
    return int(sum(np.asarray(v).nbytes for v in state.values()))
