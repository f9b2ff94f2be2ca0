"""Flower records <-> plain payloads: the only module that packs what crosses the wire.

Train instruction: ``arrays`` (global shared state), ``anchors`` (``ids``, ``z``:
the server's fused representations of the device's public ids), ``config``.
Train reply: ``arrays`` (shared-state delta), ``reps`` (``ids``, ``z``), ``metrics``
(``num-examples``, ``count_<modality>``, losses), ``device`` (modalities,
partition). Everything is fp32 / int64 arrays.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.state import State

ARRAYS, ANCHORS, REPS, CONFIG, METRICS, DEVICE = (
    "arrays",
    "anchors",
    "reps",
    "config",
    "metrics",
    "device",
)
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key, kept verbatim
COUNT_PREFIX = "count_"


def to_record(state: State) -> ArrayRecord:
    """Pack a state dict (order kept) into an ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def from_record(record: ArrayRecord) -> State:
    """Unpack an ArrayRecord into a state dict of numpy arrays."""
    return {k: a.numpy() for k, a in record.items()}


def reps_record(ids: np.ndarray, z: np.ndarray) -> ArrayRecord:
    """Fused representations with their public sample ids."""
    return to_record({"ids": np.asarray(ids, np.int64), "z": np.asarray(z, np.float32)})


def reps_from(content: RecordDict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, z)`` from ``content[key]``, empty arrays if absent."""
    if key not in content.array_records:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    rec = from_record(content.array_records[key])
    return rec["ids"], rec["z"]


def metric_record(values: dict[str, float | int]) -> MetricRecord:
    """A MetricRecord of finite floats/ints (NaN values are dropped)."""
    clean: dict[str, float | int] = {}
    for k, v in values.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, np.integer)):
            clean[k] = int(v)
        elif np.isfinite(v):
            clean[k] = float(v)
    return MetricRecord(clean)


def device_record(modalities: tuple[str, ...], partition_id: int) -> ConfigRecord:
    """The device manifest that travels with every reply."""
    return ConfigRecord({"modalities": ",".join(modalities), "partition-id": partition_id})
