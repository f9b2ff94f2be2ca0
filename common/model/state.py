"""Every kind of model state: assembled from a model, loaded into it, stored on disk.

Three kinds, each a flat :data:`~common.state.State` with prefixed keys:

* **shared**: what a device shares with the federation, ``lora/<peft key>`` (the
  shared adapter) and, with MMA, ``head/<modality>/<param>`` (its heads);
* **local**: what stays on a device, ``enc/`` (encoders), ``conn/`` (connector),
  ``gate/`` (adapter gate), ``private/`` (private adapter), and ``shared/`` (the
  shared adapter itself, when nothing is federated and it is only the device's);
* **cloud**: the server model's own state, ``enc/``, ``conn/``, ``private/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from torch import nn

from common.atomic import read_npz, write_npz
from common.model.adapters import PRIVATE, SHARED, adapter_state, load_adapter_state
from common.model.multimodal import MultimodalLM
from common.settings import RunSettings
from common.state import HEAD, LORA, State, prefixed, select

ENC, CONN, GATE, PRIV, OWN_SHARED = "enc/", "conn/", "gate/", "private/", "shared/"


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


# ------------------------------------------------------------------------ shared
def shared_parts_state(lm: PeftModel, heads: Mapping[str, nn.Module]) -> State:
    """``lora/`` from the shared adapter of ``lm`` and ``head/<name>/`` from each of ``heads``."""
    state = prefixed(adapter_state(lm, SHARED), LORA)
    for name, head in heads.items():
        state.update(module_state(head, f"{HEAD}{name}/"))
    return state


def shared_state(model: MultimodalLM, heads: bool) -> State:
    """The shared adapter (``lora/``) and, if ``heads``, the held modalities' heads."""
    own = {name: model.connector.heads[name] for name in model.held} if heads else {}
    return shared_parts_state(model.lm, own)


def load_shared_state(model: MultimodalLM, state: State, heads: bool) -> None:
    """Load ``lora/`` into the shared adapter and, if ``heads``, the held modalities' heads.

    Heads of modalities the model does not hold are ignored.
    """
    lora = select(state, LORA)
    if lora:
        load_adapter_state(model.lm, SHARED, lora)
    if heads:
        for name in model.held:
            own = select(state, f"{HEAD}{name}/")
            if own:
                load_module_state(model.connector.heads[name], own)


def initial_global_state(settings: RunSettings, model: MultimodalLM) -> State:
    """The round-1 global state: shared LoRA and (with MMA) one head per modality.

    Taken from ``model`` (an edge model holding every modality, see
    ``common.model.factory.reference_edge_model``); empty for methods that share
    nothing.
    """
    comps = settings.components
    return shared_state(model, heads=comps.mma) if comps.federated else {}


# ------------------------------------------------------------------------- local
def local_state(model: MultimodalLM, keep_shared: bool) -> State:
    """What stays on a device (``keep_shared``: the shared adapter too)."""
    state = {
        **module_state(model.encoders, ENC),
        **module_state(model.connector, CONN),
        **module_state(model.gate, GATE),
        **prefixed(adapter_state(model.lm, PRIVATE), PRIV),
    }
    if keep_shared:
        state.update(prefixed(adapter_state(model.lm, SHARED), OWN_SHARED))
    return state


def load_local_state(model: MultimodalLM, state: State) -> None:
    """Restore what :func:`local_state` returned."""
    load_module_state(model.encoders, state, ENC)
    load_module_state(model.connector, state, CONN)
    load_module_state(model.gate, state, GATE)
    load_adapter_state(model.lm, PRIVATE, select(state, PRIV))
    own = select(state, OWN_SHARED)
    if own:
        load_adapter_state(model.lm, SHARED, own)


# ------------------------------------------------------------------------- cloud
def cloud_state(model: MultimodalLM) -> State:
    """The cloud model's own state (its LoRA lives in the ``private`` slot)."""
    return {
        **module_state(model.encoders, ENC),
        **module_state(model.connector, CONN),
        **prefixed(adapter_state(model.lm, PRIVATE), PRIV),
    }


def load_cloud_state(model: MultimodalLM, state: State) -> None:
    """Restore what :func:`cloud_state` returned."""
    load_module_state(model.encoders, state, ENC)
    load_module_state(model.connector, state, CONN)
    load_adapter_state(model.lm, PRIVATE, select(state, PRIV))


# -------------------------------------------------------------------------- disk
def save_state(path: Path, state: State) -> Path:
    """Write ``state`` to an ``.npz`` file atomically."""
    return write_npz(Path(path), state)


def load_state(path: Path) -> State:
    """Read a state written by :func:`save_state`."""
    return read_npz(Path(path))
