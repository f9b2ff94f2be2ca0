"""Every kind of model state: assembled from a model, loaded into it, stored on disk.

Three kinds, each a flat :data:`~common.state.State` with prefixed keys:

* **shared**: what a device shares with the federation, low-rank updates only:
  ``lora/<peft key>`` (the backbone's shared LoRA) and ``prompt/lora_A``,
  ``prompt/lora_B`` (the prompt map's shared adapter) and, where encoders are
  shared by kind, ``enclora/<modality>/<kind>/...`` (their adapters, see
  ``common.model.encoder_adapters``);
* **local**: what stays on a device, ``enc/`` (encoders), ``conn/`` (connector),
  ``opt/`` (optimiser state, see ``common.learning.loop``), ``shared/``: the
  device's own copy of the shared adapters (its personal adapters after AMT's
  private stage, or simply its adapters when nothing is federated), and under
  the paper's AMT its private LoRA (``private/``) and gate (``gate/``);
* **cloud**: the server model's own state, ``enc/``, ``conn/``, ``private/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from torch import nn

from common.atomic import read_npz, write_npz
from common.model.adapters import PRIVATE, SHARED, adapter_state, load_adapter_state
from common.model.connector import LowRankLinear
from common.model.encoder_adapters import adapter_state as encoder_adapter_state
from common.model.encoder_adapters import load_adapter_state as load_encoder_adapter
from common.model.factory import encoder_choices
from common.model.multimodal import MultimodalLM
from common.model.pretrained_encoders import frozen_keys
from common.settings import RunSettings
from common.state import LORA, PROMPT, State, prefixed, select

ENC, CONN, PRIV, OWN_SHARED, GATE = "enc/", "conn/", "private/", "shared/", "gate/"


def module_state(module: nn.Module, prefix: str = "", only: tuple[str, ...] = ()) -> State:
    """Copy a module's parameters and buffers (``only`` these names, if given) as numpy.

    Frozen pretrained tensors (:func:`~common.model.pretrained_encoders.frozen_keys`)
    are left out: every model loads them from their package.
    """
    out: State = {}
    skip = frozen_keys(module)
    for k, v in module.state_dict().items():
        if (only and k not in only) or k in skip:
            continue
        t = v.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        out[prefix + k] = t.numpy().copy()
    return out


def load_module_state(
    module: nn.Module, state: State, prefix: str = "", strict: bool = True
) -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``module``.

    With ``strict=False`` a subset of the module's entries may be given, but
    never an entry the module does not have. Entries of frozen pretrained tensors
    are neither expected nor loaded (other models share those tensors).
    """
    skip = frozen_keys(module)
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = {k: v for k, v in own.items() if k not in skip}
    ref = module.state_dict()
    tensors = {
        k: torch.as_tensor(np.asarray(v)).to(ref[k].dtype)
        if k in ref
        else torch.as_tensor(np.asarray(v))
        for k, v in own.items()
    }
    unknown = sorted(set(tensors) - set(ref))
    if unknown:
        raise ValueError(f"unexpected state entries {unknown[:3]}")
    missing = sorted(set(ref) - set(tensors) - skip)
    if strict and missing:
        raise ValueError(f"missing state entries {missing[:3]}")
    module.load_state_dict(tensors, strict=False)


# ------------------------------------------------------------------------ shared
def shared_parts_state(lm: PeftModel, prompt: LowRankLinear | None) -> State:
    """``lora/`` from the shared adapter of ``lm`` and ``prompt/`` from the prompt map."""
    state = prefixed(adapter_state(lm, SHARED), LORA)
    if prompt is not None:
        state.update(module_state(prompt, PROMPT, only=_PROMPT_KEYS))
    return state


_PROMPT_KEYS = ("lora_A", "lora_B")


def shared_state(model: MultimodalLM) -> State:
    """The shared adapters of the backbone (``lora/``), prompt map and encoders (``enclora/``)."""
    return {**shared_parts_state(model.lm, model.connector.to_prompt), **encoder_state(model)}


def encoder_state(model: MultimodalLM) -> State:
    """The model's encoder adapters (``enclora/``; empty without them)."""
    state: State = {}
    for modality, prefix in model.encoder_groups().items():
        state.update(encoder_adapter_state(model.encoder_adapters[modality], prefix))
    return state


def shareable(state: State, share_b: bool) -> State:
    """The part of a shared state that travels: everything, or (FedSA) the A matrices only."""
    if share_b:
        return state
    return {k: v for k, v in state.items() if "lora_A" in k}


def load_shared_state(model: MultimodalLM, state: State) -> None:
    """Load the shared entries of ``state`` (those present) into ``model``.

    The global state holds the encoder adapters of every group; a model loads
    those of its own encoders.
    """
    lora = select(state, LORA)
    if lora:
        load_adapter_state(model.lm, SHARED, lora)
    prompt = select(state, PROMPT)
    if prompt:
        load_module_state(model.connector.to_prompt, prompt, strict=False)
    for modality, prefix in model.encoder_groups().items():
        load_encoder_adapter(model.encoder_adapters[modality], prefix, state)


def initial_global_state(settings: RunSettings, model: MultimodalLM) -> State:
    """The round-1 global state: the shared low-rank adapters.

    Taken from ``model`` (an edge model holding every modality, see
    ``common.model.factory.reference_edge_model``), plus the encoder adapters of
    every group the encoder families allow; empty for methods that share nothing.
    """
    comps = settings.components
    if not comps.federated:
        return {}
    state = shared_parts_state(model.lm, model.connector.to_prompt)
    if model.encoder_adapters and settings.lora.encoder_share:
        state.update(
            model.encoder_build.initial_state(model.specs, encoder_choices(settings.model))
        )
    return shareable(state, comps.share_b)


# ------------------------------------------------------------------------- local
def local_state(model: MultimodalLM, keep_shared: bool) -> State:
    """What stays on a device (``keep_shared``: its copy of the shared adapters too)."""
    state = {**module_state(model.encoders, ENC), **module_state(model.connector, CONN)}
    if keep_shared:
        state.update(prefixed(shared_state(model), OWN_SHARED))
    if model.gate is not None:
        state.update(prefixed(adapter_state(model.lm, PRIVATE), PRIV))
        state.update(module_state(model.gate, GATE))
    return state


def load_local_state(model: MultimodalLM, state: State) -> None:
    """Restore what :func:`local_state` returned."""
    load_module_state(model.encoders, state, ENC)
    load_module_state(model.connector, state, CONN)
    own = select(state, OWN_SHARED)
    if own:
        load_shared_state(model, own)
    if model.gate is not None:
        load_adapter_state(model.lm, PRIVATE, select(state, PRIV))
        load_module_state(model.gate, state, GATE)


# ------------------------------------------------------------------------- cloud
def cloud_state(model: MultimodalLM) -> State:
    """The cloud model's own state (its own LoRA lives in the ``private`` slot)."""
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
