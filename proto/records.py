"""Flower records <-> the project's arrays, each payload with its manifest.

A payload is a flat dict of named numpy arrays stored as an ``ArrayRecord``
under a key (``arrays``, ``anchors``, ``prototypes``, ``reps``), with its serialized
``mlecs.v1.PayloadManifest`` in a ``ConfigRecord`` under ``<key>-manifest``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.state import State
from proto.manifest import (
    SCALE,
    build_manifest,
    manifest_from,
    manifest_record,
    validate_payload,
)

ARRAYS, ANCHORS, REPS, CONFIG, METRICS = "arrays", "anchors", "reps", "config", "metrics"
PROTOTYPES = "prototypes"
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key, kept verbatim


def to_record(state: State, dtype: str | None = None) -> ArrayRecord:
    """Pack a state dict (order kept) into an ArrayRecord.

    With ``dtype`` (e.g. ``"float16"``), floating-point arrays travel in that type.
    """

    def cast(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        v = v.astype(dtype) if dtype and np.issubdtype(v.dtype, np.floating) else v
        # np.ascontiguousarray would turn a 0-d array (a scalar parameter) into 1-d.
        return v if v.flags.c_contiguous else np.ascontiguousarray(v)

    return ArrayRecord({k: Array(cast(v)) for k, v in state.items()})


def quantize(state: State) -> State:
    """Floating-point arrays as int8 with one float32 scale each (``max|v| / 127``).

    Other arrays (ids) pass unchanged. :func:`dequantize` undoes it up to half a
    quantisation step per entry.
    """
    out: State = {}
    for k, v in state.items():
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.floating):
            out[k] = v
            continue
        peak = float(np.max(np.abs(v))) if v.size else 0.0
        scale = peak / 127.0 if peak > 0 and np.isfinite(peak) else 1.0
        out[k] = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
        out[k + SCALE] = np.asarray(scale, np.float32)
    return out


def dequantize(state: State) -> State:
    """Undo :func:`quantize`: every ``<name>`` with a ``<name>::scale`` back to float32."""
    out: State = {}
    for k, v in state.items():
        if k.endswith(SCALE):
            continue
        scale = state.get(k + SCALE)
        if scale is None:
            out[k] = v
        else:
            out[k] = (np.asarray(v, np.float32) * np.float32(np.asarray(scale).reshape(()))).astype(
                np.float32
            )
    return out


def from_record(record: ArrayRecord) -> State:
    """Unpack an ArrayRecord into a state dict of numpy arrays (dtypes as sent)."""
    return {k: a.numpy() for k, a in record.items()}


def manifest_key(key: str) -> str:
    """Key of the ConfigRecord holding the manifest of the ArrayRecord ``key``."""
    return f"{key}-manifest"


def pack_payload(
    state: State, kind: str, dtype: str | None = None, **manifest
) -> tuple[ArrayRecord, ConfigRecord]:
    """``state`` as an ArrayRecord and its manifest as a ConfigRecord.

    ``manifest`` holds the extra manifest fields (``role``, ``modalities``,
    ``counts``, ``partition_id``); the tensors are described as they are sent.
    """
    record = to_record(quantize(state)) if dtype == "int8" else to_record(state, dtype)
    return record, manifest_record(build_manifest(kind, from_record(record), **manifest))


def put_payload(
    content: RecordDict, key: str, state: State, kind: str, dtype: str | None = None, **manifest
) -> None:
    """Store ``state`` under ``key`` with its ``mlecs.v1.PayloadManifest``."""
    content[key], content[manifest_key(key)] = pack_payload(state, kind, dtype, **manifest)


def get_payload(content: RecordDict, key: str, kind: str) -> tuple[State, list[str]]:
    """The arrays under ``key`` and every way they contradict their manifest.

    Apply the arrays only when the problem list is empty (never half-apply).
    """
    if key not in content.array_records:
        return {}, [f"no '{key}' payload"]
    arrays = from_record(content.array_records[key])
    manifest = manifest_from(content.config_records.get(manifest_key(key)))
    problems = validate_payload(manifest, arrays, expected_kind=kind)
    if not problems and any(k.endswith(SCALE) for k in arrays):
        problems = _scale_problems(arrays)
        arrays = dequantize(arrays) if not problems else arrays
    return arrays, problems


def _scale_problems(arrays: State) -> list[str]:
    out = []
    for k, v in arrays.items():
        if not k.endswith(SCALE):
            continue
        base = k[: -len(SCALE)]
        if base not in arrays or np.asarray(arrays[base]).dtype != np.int8:
            out.append(f"scale '{k}' without an int8 tensor '{base}'")
        elif np.asarray(v).size != 1:
            out.append(f"scale '{k}' is not a single number")
    return out


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


def array_bytes(content: RecordDict, key: str, prefix: str | None = None) -> int:
    """Payload bytes of the ArrayRecord ``key`` (only names starting with ``prefix``)."""
    if key not in content.array_records:
        return 0
    rec = content.array_records[key]
    return sum(len(a.data) for name, a in rec.items() if prefix is None or name.startswith(prefix))


def small_bytes(content: RecordDict, manifests: bool) -> int:
    """Approximate bytes of the manifests (or of the other config and metric records).

    They are small: their keys and values are counted, 8 bytes per number.
    """
    total = 0
    records = list(content.config_records.items())
    if not manifests:
        records += list(content.metric_records.items())
    for name, rec in records:
        if name.endswith("-manifest") != manifests:
            continue
        for k, v in rec.items():
            total += len(k) + (len(v) if isinstance(v, (str, bytes)) else 8)
    return total
