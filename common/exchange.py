"""What a device receives from the server and what it returns, independent of the wire.

``proto.messages`` turns these into Flower records and back (validating each
payload against its manifest); the learning code on either side sees only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.state import State


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


def _no_rows() -> np.ndarray:
    return np.zeros((0, 0), np.float32)


@dataclass
class GlobalPayload:
    """What the server sends for training: global shared state and SE-CCL anchors.

    Attributes
    ----------
    state : State
        ``lora/<key>`` (backbone), ``prompt/<key>`` (prompt map) and
        ``enclora/<modality>/<kind>/<key>`` (encoder groups) shared adapters.
    anchor_ids : numpy.ndarray
        ``(N,)`` public sample ids the anchors belong to.
    anchors : numpy.ndarray
        ``(N, fused_dim)`` the server's fused representations ``z^s``.
    prototype_classes : numpy.ndarray
        ``(K,)`` class indices of the prototypes.
    prototypes : numpy.ndarray
        ``(K, fused_dim)`` the cloud's class prototypes in the fused space (unit rows).
    modality_prototypes : dict of tuple of str to numpy.ndarray
        Subset of the modalities (sorted names) -> ``(K, fused_dim)`` prototypes of
        the same classes from the cloud's ``z`` with only that subset present
        (``seccl.modality-prototypes``); empty otherwise.
    server_round : int
        The round this payload belongs to (0 when unknown).
    round_token : str
        The server's token for this round; the device echoes it in its update.
    refactorised_round : int
        The last round whose aggregation re-factorised the shared adapters
        (FlexLoRA), 0 when none: a device that trained in that round or before
        drops its optimiser moments of them, which belong to the old basis.
    """

    state: State = field(default_factory=dict)
    anchor_ids: np.ndarray = field(default_factory=_no_ids)
    anchors: np.ndarray = field(default_factory=_no_rows)
    prototype_classes: np.ndarray = field(default_factory=_no_ids)
    prototypes: np.ndarray = field(default_factory=_no_rows)
    modality_prototypes: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    server_round: int = 0
    round_token: str = ""
    refactorised_round: int = 0


@dataclass
class DeviceUpdate:
    """What a device returns after training.

    Attributes
    ----------
    delta : State
        ``lora/...`` and ``prompt/...`` deltas against the received global state.
    rep_ids, reps : numpy.ndarray
        ``(N,)`` public ids and ``(N, fused_dim)`` the device's ``z^c`` for them.
    num_examples : int
        Samples the shared state was trained on.
    modalities : tuple of str
        The device's modality set.
    modality_counts : dict of str to int
        Per-modality present-sample counts in the data the shared state saw.
    metrics : dict of str to float
        Training losses and diagnostics.
    partition_id : int
        The device's partition (-1 when unknown).
    evaluation : dict of str to float
        The device's scores of its personal model after this round's training.
    round_token : str
        The token of the round the update answers (from the instruction).
    """

    delta: State
    rep_ids: np.ndarray
    reps: np.ndarray
    num_examples: int
    modalities: tuple[str, ...]
    modality_counts: dict[str, int]
    metrics: dict[str, float]
    partition_id: int = -1
    evaluation: dict[str, float] = field(default_factory=dict)
    round_token: str = ""
