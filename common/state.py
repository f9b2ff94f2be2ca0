"""Flat dicts of numpy arrays, ``State``: how model state is stored, sent and combined.

Keys are prefixed by what they hold, e.g. ``lora/<peft key>`` for the backbone's
shared LoRA or ``prompt/lora_A`` for the shared prompt adapter (see
``common.model.state``).
"""

from __future__ import annotations

import numpy as np

State = dict[str, np.ndarray]

LORA = "lora/"  # the backbone's shared LoRA tensors, by peft key
PROMPT = "prompt/"  # the shared low-rank adapter of the prompt map: prompt/lora_A, prompt/lora_B
SHARED_PREFIXES = (LORA, PROMPT)  # what every device of a federated method shares
# Encoder adapters, ``enclora/<modality>/<kind>/<weight>/lora_A|B``: shared within a
# group of devices with the same encoder kind (``common.model.encoder_adapters``).
ENC_LORA = "enclora/"


def group_of(key: str) -> str:
    """The ``enclora/<modality>/<kind>/`` prefix of an encoder-adapter key."""
    return "/".join(key.split("/")[:3]) + "/"


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


def as_float32(state: State) -> State:
    """Floating-point arrays of ``state`` as float32 (what models load)."""
    return {
        k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in state.items()
    }
