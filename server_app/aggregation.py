"""Modality-aware aggregation (MMA) and update validation: pure functions on arrays.

``w_i ∝ n_i · (|M_i| / |M|)^beta`` for the shared low-rank adapters (backbone LoRA
and prompt adapter), damped robustly (norm clipping against the median norm,
down-weighting updates that disagree with the others). ``beta = 0`` with no
damping is FedAvg. Nothing is averaged across unlike encoders: the parts that
read a device's encoders (heads, fusion) stay on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.exchange import DeviceUpdate
from common.state import SHARED_PREFIXES, State, nbytes


@dataclass
class Contribution:
    """One device's parsed training reply.

    Attributes
    ----------
    node_id : int
        Flower node id of the sender.
    delta : State
        ``lora/...`` and ``prompt/...`` deltas.
    num_examples : int
        Samples the shared state was trained on.
    modalities : tuple of str
        The device's modality set.
    modality_counts : dict of str to int
        Present-sample count per held modality.
    rep_ids, reps : numpy.ndarray
        ``(N,)`` public ids and ``(N, F)`` fused representations.
    """

    node_id: int
    delta: State
    num_examples: int
    modalities: tuple[str, ...]
    modality_counts: dict[str, int]
    rep_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @classmethod
    def from_update(cls, node_id: int, update: DeviceUpdate) -> Contribution:
        """The contribution of ``update`` (read from a validated reply) by ``node_id``."""
        return cls(
            node_id=node_id,
            delta=update.delta,
            num_examples=update.num_examples,
            modalities=update.modalities,
            modality_counts=update.modality_counts,
            rep_ids=update.rep_ids,
            reps=update.reps,
        )


def check_contribution(
    c: Contribution,
    reference: State,
    all_modalities: tuple[str, ...],
    fused_dim: int,
    public_ids: set[int] | None,
    max_bytes: int,
) -> list[str]:
    """Problems that make a contribution unusable (empty list = accepted).

    Parameters
    ----------
    reference : State
        The global state sent this round; the delta's keys must match it exactly.
    public_ids : set of int, optional
        Valid public sample ids for representations (None = not checked).
    """
    problems: list[str] = []
    unknown = [m for m in c.modalities if m not in all_modalities]
    if unknown or not c.modalities:
        problems.append(f"unknown or empty modality set {list(c.modalities)}")
    if c.num_examples <= 0:
        problems.append(f"num-examples is {c.num_examples}")
    size = nbytes(c.delta) + int(np.asarray(c.reps).nbytes)
    if size > max_bytes:
        problems.append(f"implausible size {size} bytes (limit {max_bytes})")
    ref_keys = {k for k in reference if k.startswith(SHARED_PREFIXES)}
    got_keys = {k for k in c.delta if k.startswith(SHARED_PREFIXES)}
    if c.delta and ref_keys != got_keys:
        extra, missing = sorted(got_keys - ref_keys), sorted(ref_keys - got_keys)
        problems.append(f"shared keys differ (unexpected {extra[:2]}, missing {missing[:2]})")
    for key, value in c.delta.items():
        if not key.startswith(SHARED_PREFIXES):
            problems.append(f"unexpected key '{key}'")
            continue
        ref = reference.get(key)
        if ref is None:
            problems.append(f"unexpected key '{key}'")
            continue
        arr = np.asarray(value)
        if arr.dtype not in (np.float32, np.float16):
            problems.append(f"'{key}' has dtype {arr.dtype}, expected float32/float16")
        elif arr.shape != np.asarray(ref).shape:
            problems.append(f"'{key}' has shape {arr.shape}, expected {np.asarray(ref).shape}")
        elif not np.isfinite(arr).all():
            problems.append(f"'{key}' has non-finite values")
    problems.extend(_check_reps(c, fused_dim, public_ids))
    return problems


def _check_reps(c: Contribution, fused_dim: int, public_ids: set[int] | None) -> list[str]:
    if len(c.rep_ids) == 0:
        return []
    reps = np.asarray(c.reps)
    if reps.ndim != 2 or reps.shape != (len(c.rep_ids), fused_dim):
        return [
            f"representations have shape {reps.shape}, expected ({len(c.rep_ids)}, {fused_dim})"
        ]
    if not np.isfinite(reps).all():
        return ["representations have non-finite values"]
    if public_ids is not None and not set(map(int, c.rep_ids)) <= public_ids:
        return ["representations for ids that are not public samples"]
    return []


def mma_weights(contribs: list[Contribution], num_modalities: int, beta: float) -> np.ndarray:
    """``n_i · (|M_i| / |M|)^beta``, normalised to sum to 1."""
    raw = np.array(
        [c.num_examples * (len(c.modalities) / num_modalities) ** beta for c in contribs],
        dtype=np.float64,
    )
    return raw / raw.sum()


def _flat(delta: State, keys: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(delta[k], np.float64).ravel() for k in keys])


def damp(
    vectors: list[np.ndarray], weights: np.ndarray, clip_factor: float, disagreement: float
) -> tuple[np.ndarray, np.ndarray]:
    """Robust damping of update vectors.

    Parameters
    ----------
    vectors : list of numpy.ndarray
        Flattened updates, one per device.
    weights : numpy.ndarray
        ``(n,)`` normalised weights.
    clip_factor : float
        Norms are clipped to ``clip_factor × median norm`` (0 = off).
    disagreement : float
        Exponent ``d`` of the multiplier ``((1 + cos_i) / 2)^d`` where ``cos_i`` is
        the cosine between update ``i`` and the weighted mean of the others
        (0 = off).

    Returns
    -------
    scales : numpy.ndarray
        ``(n,)`` factor applied to each update by clipping.
    weights : numpy.ndarray
        ``(n,)`` renormalised weights after the disagreement multiplier.
    """
    n = len(vectors)
    norms = np.array([np.linalg.norm(v) for v in vectors])
    scales = np.ones(n)
    if clip_factor > 0 and n > 1:
        limit = clip_factor * np.median(norms)
        scales = np.where(norms > limit, limit / np.maximum(norms, 1e-12), 1.0)
    w = weights.astype(np.float64).copy()
    if disagreement > 0 and n > 2:
        clipped = [v * s for v, s in zip(vectors, scales)]
        for i in range(n):
            # the others' mean uses the undamped weights: the result must not depend on order
            others = sum(weights[j] * clipped[j] for j in range(n) if j != i)
            denom = np.linalg.norm(others) * np.linalg.norm(clipped[i])
            cos = float(others @ clipped[i] / denom) if denom > 0 else 1.0
            w[i] = weights[i] * ((1 + cos) / 2) ** disagreement
        if w.sum() <= 0:
            w = weights.astype(np.float64).copy()
    return scales, w / w.sum()


def aggregate_shared(
    contribs: list[Contribution], weights: np.ndarray, clip_factor: float, disagreement: float
) -> tuple[State, np.ndarray]:
    """Weighted, damped mean of the shared deltas (``lora/`` and ``prompt/``).

    The damping sees one vector per device: all of its shared deltas together.

    Returns
    -------
    delta : State
        Aggregated shared delta.
    weights : numpy.ndarray
        Final per-device weights after damping.
    """
    keys = sorted(k for k in contribs[0].delta if k.startswith(SHARED_PREFIXES))
    if not keys:
        return {}, weights
    vectors = [_flat(c.delta, keys) for c in contribs]
    scales, w = damp(vectors, weights, clip_factor, disagreement)
    out: State = {}
    for k in keys:
        acc = sum(
            w[i] * scales[i] * np.asarray(c.delta[k], np.float64) for i, c in enumerate(contribs)
        )
        out[k] = np.asarray(acc, np.float32)
    return out, w


def aggregate_representations(
    contribs: list[Contribution], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Edge consensus per public id: weighted mean of the devices' ``z^c``.

    Returns
    -------
    ids : numpy.ndarray
        ``(K,)`` sorted public ids that at least one device sent.
    z : numpy.ndarray
        ``(K, F)`` float32.
    """
    sums: dict[int, np.ndarray] = {}
    totals: dict[int, float] = {}
    for c, w in zip(contribs, weights):
        for i, z in zip(c.rep_ids, np.asarray(c.reps, np.float64)):
            sums[int(i)] = sums.get(int(i), 0.0) + w * z
            totals[int(i)] = totals.get(int(i), 0.0) + w
    ids = np.array(sorted(i for i in sums if totals[i] > 0), np.int64)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), np.float32)
    z = np.stack([sums[i] / totals[i] for i in ids]).astype(np.float32)
    return ids, z
