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
from proto.manifest import build_manifest, manifest_from, manifest_record, validate_payload

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


def to_record(state: State, dtype: str | None = None) -> ArrayRecord:
    """Pack a state dict (order kept) into an ArrayRecord.

    With ``dtype`` (e.g. ``"float16"``), floating-point arrays travel in that type.
    """

    def cast(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        return v.astype(dtype) if dtype and np.issubdtype(v.dtype, np.floating) else v

    return ArrayRecord({k: Array(np.ascontiguousarray(cast(v))) for k, v in state.items()})


def from_record(record: ArrayRecord) -> State:
    """Unpack an ArrayRecord into a state dict of numpy arrays (dtypes as sent)."""
    return {k: a.numpy() for k, a in record.items()}


def as_float32(state: State) -> State:
    """Floating-point arrays of ``state`` as float32 (what models load)."""
    return {
        k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in state.items()
    }


def reps_record(ids: np.ndarray, z: np.ndarray, dtype: str = "float32") -> ArrayRecord:
    """Fused representations with their public sample ids."""
    return to_record({"ids": np.asarray(ids, np.int64), "z": np.asarray(z, dtype)})


def manifest_key(key: str) -> str:
    """Key of the ConfigRecord holding the manifest of the ArrayRecord ``key``."""
    return f"{key}-manifest"


def put_payload(
    content: RecordDict, key: str, state: State, kind: str, dtype: str | None = None, **manifest
) -> None:
    """Store ``state`` under ``key`` with its ``mlecs.v1.PayloadManifest``.

    ``manifest`` holds the extra manifest fields (``role``, ``modalities``,
    ``counts``, ``partition_id``); the tensors are described as they are sent.
    """
    record = to_record(state, dtype)
    content[key] = record
    content[manifest_key(key)] = manifest_record(
        build_manifest(kind, from_record(record), **manifest)
    )


def get_payload(content: RecordDict, key: str, kind: str) -> tuple[State, list[str]]:
    """The arrays under ``key`` and every way they contradict their manifest.

    Apply the arrays only when the problem list is empty (never half-apply).
    """
    if key not in content.array_records:
        return {}, [f"no '{key}' payload"]
    arrays = from_record(content.array_records[key])
    manifest = manifest_from(content.config_records.get(manifest_key(key)))
    return arrays, validate_payload(manifest, arrays, expected_kind=kind)


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
