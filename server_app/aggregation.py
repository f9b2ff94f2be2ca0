"""Modality-aware aggregation (MMA): pure functions on arrays.

``w_i ∝ n_i · (|M_i| / |M|)^beta`` for the shared low-rank adapters (backbone LoRA
and prompt adapter), damped robustly: example counts capped at a multiple of the
median count, update norms clipped against the median norm, updates that disagree
with the others down-weighted. ``beta = 0`` with no damping is FedAvg. Fused
representations get a bound of their own: each row's deviation from the cloud's
own view of that public sample is clipped against the median deviation, and a
device whose rows point away from the cloud's is down-weighted. Nothing is
averaged across unlike encoders: the parts that read a device's encoders (heads,
fusion) stay on the device; an encoder adapter (``enclora/<modality>/<kind>/``) is
averaged over the devices that hold that encoder kind, with their weights.
"""

from __future__ import annotations

import numpy as np

from common.sections import MmaSettings
from common.settings import RunSettings
from common.state import ENC_LORA, SHARED_PREFIXES, State
from server_app.contribution import Contribution


def mma_in_force(settings: RunSettings) -> MmaSettings:
    """MMA's settings, or, for a method without MMA, all of MMA off.

    One rule for the shared deltas and the representation consensus alike: a
    method without MMA (``no-mma``, CreamFL) gets FedAvg weights by example
    counts, no norm clipping and no disagreement damping anywhere.
    """
    if settings.components.mma:
        return settings.mma
    return settings.mma.model_copy(update={"beta": 0.0, "clip_factor": 0.0, "disagreement": 0.0})


def mma_weights(
    contribs: list[Contribution], num_modalities: int, beta: float, count_cap: float = 0.0
) -> np.ndarray:
    """``n_i · (|M_i| / |M|)^beta``, normalised to sum to 1.

    Parameters
    ----------
    count_cap : float
        With ``count_cap > 0``, each ``n_i`` counts at most ``count_cap`` times the
        median count, so no device buys the aggregate by claiming a huge dataset.
    """
    n = np.array([c.num_examples for c in contribs], dtype=np.float64)
    if count_cap > 0 and len(n) > 1:
        n = np.minimum(n, count_cap * np.median(n))
    cover = np.array([len(c.modalities) / num_modalities for c in contribs], dtype=np.float64)
    raw = n * cover**beta
    return raw / raw.sum()


def _flat(delta: State, keys: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(delta[k], np.float64).ravel() for k in keys])


def damp(
    vectors: list[np.ndarray], weights: np.ndarray, clip_factor: float, disagreement: float
) -> tuple[np.ndarray, np.ndarray]:
    """Robust damping of update vectors.

    Parameters
    ----------
    vectors : list of numpy.ndarray or numpy.ndarray
        Flattened updates, one per device (or stacked, ``(n, d)``).
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
    if isinstance(vectors, np.ndarray):  # (n, d), many devices: one pass of BLAS
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    else:
        norms = np.array([np.linalg.norm(v) for v in vectors])
    scales = np.ones(n)
    if clip_factor > 0 and n > 1:
        limit = clip_factor * np.median(norms)
        scales = np.where(norms > limit, limit / np.maximum(norms, 1e-12), 1.0)
    w = weights.astype(np.float64).copy()
    if disagreement > 0 and n > 2:
        # The others' mean uses the undamped weights: the result must not depend on order.
        cos = _cosines_direct(vectors, scales, weights) if n <= _DIRECT_MAX else None
        if cos is None:
            cos = _cosines_by_total(vectors, scales, weights)
        w = weights * ((1 + cos) / 2) ** disagreement
        if w.sum() <= 0:
            w = weights.astype(np.float64).copy()
    return scales, w / w.sum()


# Up to this many devices the others' sums are formed directly (O(n^2 d), the
# reference computation); beyond, from the weighted total (O(n d), equal up to
# rounding), so that aggregating hundreds of devices stays fast.
_DIRECT_MAX = 32


def _cosines_direct(vectors, scales, weights) -> np.ndarray:
    clipped = [v * s for v, s in zip(vectors, scales)]
    out = np.ones(len(vectors))
    for i in range(len(vectors)):
        others = sum(weights[j] * clipped[j] for j in range(len(vectors)) if j != i)
        denom = np.linalg.norm(others) * np.linalg.norm(clipped[i])
        out[i] = float(others @ clipped[i] / denom) if denom > 0 else 1.0
    return out


def _cosines_by_total(vectors, scales, weights) -> np.ndarray:
    """``cos(others_i, c_i)`` with ``others_i = T - w_i c_i`` and ``T = sum_j w_j c_j``."""
    if isinstance(vectors, np.ndarray):  # stacked (n, d): matrix-vector products
        total = (weights * scales) @ vectors
        tt = float(total @ total)
        tc = scales * (vectors @ total)
        cc = scales**2 * np.einsum("ij,ij->i", vectors, vectors)
        others_sq = np.maximum(tt - 2 * weights * tc + weights**2 * cc, 0.0)
        denom = np.sqrt(others_sq * cc)
        safe = np.where(denom > 0, denom, 1.0)
        return np.where(denom > 0, (tc - weights * cc) / safe, 1.0)
    total = np.zeros_like(np.asarray(vectors[0], np.float64))
    for v, s, wj in zip(vectors, scales, weights):
        total += (wj * s) * np.asarray(v, np.float64)
    tt = float(total @ total)
    out = np.ones(len(vectors))
    for i, (v, s, wi) in enumerate(zip(vectors, scales, weights)):
        c = s * np.asarray(v, np.float64)
        tc, cc = float(total @ c), float(c @ c)
        dot = tc - wi * cc
        others_sq = max(tt - 2 * wi * tc + wi * wi * cc, 0.0)
        denom = np.sqrt(others_sq * cc)
        out[i] = dot / denom if denom > 0 else 1.0
    return out


def aggregate_shared(
    contribs: list[Contribution], weights: np.ndarray, clip_factor: float, disagreement: float
) -> tuple[State, np.ndarray, np.ndarray]:
    """Weighted, damped mean of the shared deltas; encoder adapters by group.

    The damping sees one vector per device: its ``lora/`` and ``prompt/`` deltas,
    which every device sends. Each encoder-adapter key is then the mean over the
    devices that sent it, with their final weights (renormalised over them) and
    scales.

    Returns
    -------
    delta : State
        Aggregated shared delta.
    weights : numpy.ndarray
        Final per-device weights after damping.
    scales : numpy.ndarray
        Factor each device's update was scaled by (1 = not clipped).
    """
    keys = sorted(k for k in contribs[0].delta if k.startswith(SHARED_PREFIXES))
    if not keys:
        return {}, weights, np.ones(len(contribs))
    if len(contribs) > _DIRECT_MAX:
        out, w, scales = _aggregate_stacked(contribs, keys, weights, clip_factor, disagreement)
    else:
        vectors = [_flat(c.delta, keys) for c in contribs]
        scales, w = damp(vectors, weights, clip_factor, disagreement)
        out = {}
        for k in keys:
            acc = sum(
                w[i] * scales[i] * np.asarray(c.delta[k], np.float64)
                for i, c in enumerate(contribs)
            )
            out[k] = np.asarray(acc, np.float32)
    out.update(_aggregate_groups(contribs, w, scales))
    return out, w, scales


def _aggregate_groups(contribs: list[Contribution], w: np.ndarray, scales: np.ndarray) -> State:
    """Each encoder-adapter key: the weighted mean over the devices that sent it."""
    holders: dict[str, list[int]] = {}
    for i, c in enumerate(contribs):
        for k in c.delta:
            if k.startswith(ENC_LORA):
                holders.setdefault(k, []).append(i)
    out: State = {}
    for k, idx in sorted(holders.items()):
        total = float(sum(w[i] for i in idx))
        if total <= 0:
            continue  # every holder was weighted out: the group keeps its state
        acc = sum(w[i] * scales[i] * np.asarray(contribs[i].delta[k], np.float64) for i in idx)
        out[k] = np.asarray(acc / total, np.float32)
    return out


def _aggregate_stacked(
    contribs: list[Contribution],
    keys: list[str],
    weights: np.ndarray,
    clip_factor: float,
    disagreement: float,
) -> tuple[State, np.ndarray, np.ndarray]:
    """:func:`aggregate_shared` for many devices: the deltas stacked as one ``(n, d)`` matrix.

    Equal to the per-key path up to rounding, in a few BLAS passes over the matrix
    (100 devices of SmolLM2-135M adapters: 48 M values) instead of thousands of
    small array operations.
    """
    shapes = [np.shape(contribs[0].delta[k]) for k in keys]
    sizes = [int(np.prod(sh)) for sh in shapes]
    stacked = np.empty((len(contribs), sum(sizes)), np.float64)
    for i, c in enumerate(contribs):
        stacked[i] = _flat(c.delta, keys)
    scales, w = damp(stacked, weights, clip_factor, disagreement)
    flat = (w * scales) @ stacked
    out: State = {}
    for k, sh, part in zip(keys, shapes, np.split(flat, np.cumsum(sizes)[:-1])):
        out[k] = part.reshape(sh).astype(np.float32)
    return out, w, scales


def bound_representations(
    contribs: list[Contribution],
    reference_ids: np.ndarray,
    reference: np.ndarray,
    clip_factor: float,
    disagreement: float,
) -> tuple[list[np.ndarray], np.ndarray, dict[int, str]]:
    """Bound every device's fused representations before they are averaged.

    The cloud holds its own view ``z^s`` of every public sample, which is the
    reference: a row's deviation from the cloud's row for the same id is clipped to
    ``clip_factor`` times the median deviation over all devices' rows (a row
    without a reference: its norm, against the median row norm), and a device
    whose rows point away from the cloud's is down-weighted.

    Parameters
    ----------
    contribs : list of Contribution
        Accepted contributions (their ``rep_ids`` / ``reps``).
    reference_ids, reference : numpy.ndarray
        ``(K,)`` public ids and ``(K, F)`` the cloud's own ``z^s`` for them.
    clip_factor : float
        Bound relative to the median (0 = off).
    disagreement : float
        Exponent ``d`` of the per-device multiplier ``((1 + c) / 2)^d``, with ``c``
        the mean cosine between the device's rows and the cloud's rows for the
        same ids (0 = off).

    Returns
    -------
    reps : list of numpy.ndarray
        Each device's ``(N_i, F)`` rows after clipping.
    multipliers : numpy.ndarray
        ``(n,)`` weight multipliers in [0, 1].
    notes : dict of int to str
        Node id -> what was clipped or damped, for the log.
    """
    reps, bases = _reference_rows(contribs, reference_ids, reference)
    notes: dict[int, str] = {}
    if clip_factor > 0:
        reps, notes = _clip_rows(contribs, reps, bases, clip_factor)
    mult = np.ones(len(contribs))
    if disagreement > 0 and len(reference_ids):
        mult, away = _away_from_cloud(contribs, bases, disagreement)
        for node, note in away.items():
            notes[node] = "; ".join(filter(None, [notes.get(node), note]))
    return [r.astype(np.float32) for r in reps], mult, notes


def _reference_rows(
    contribs: list[Contribution], reference_ids: np.ndarray, reference: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each device's rows (float64) and the cloud's rows for the same ids (zero if none)."""
    row_of = {int(k): j for j, k in enumerate(reference_ids)}
    ref = np.asarray(reference, np.float64)
    reps, bases = [], []
    for c in contribs:
        r = np.asarray(c.reps, np.float64)
        base = np.zeros_like(r)
        for k, sid in enumerate(c.rep_ids):
            if int(sid) in row_of and ref.shape[1:] == r.shape[1:]:
                base[k] = ref[row_of[int(sid)]]
        reps.append(r)
        bases.append(base)
    return reps, bases


def _clip_rows(
    contribs: list[Contribution],
    reps: list[np.ndarray],
    bases: list[np.ndarray],
    clip_factor: float,
) -> tuple[list[np.ndarray], dict[int, str]]:
    """Rows whose deviation from the cloud's exceeds ``clip_factor`` x the median, clipped."""
    notes: dict[int, str] = {}
    devs = [np.linalg.norm(r - b, axis=1) for r, b in zip(reps, bases) if len(r)]
    if not devs:
        return reps, notes
    reps = list(reps)
    limit = clip_factor * float(np.median(np.concatenate(devs)))
    for i, (r, base) in enumerate(zip(reps, bases)):
        dev = np.linalg.norm(r - base, axis=1)
        over = dev > limit
        if over.any():
            scale = np.where(over, limit / np.maximum(dev, 1e-12), 1.0)[:, None]
            reps[i] = base + (r - base) * scale
            notes[contribs[i].node_id] = f"{int(over.sum())} representation rows clipped"
    return reps, notes


def _away_from_cloud(
    contribs: list[Contribution], bases: list[np.ndarray], disagreement: float
) -> tuple[np.ndarray, dict[int, str]]:
    """Per device ``((1 + c) / 2)^d``, ``c`` its rows' mean cosine to the cloud's; notes."""
    mult = np.ones(len(contribs))
    notes: dict[int, str] = {}
    for i, (c, base) in enumerate(zip(contribs, bases)):
        known = np.linalg.norm(base, axis=1) > 0
        if not known.any():
            continue
        a, b = np.asarray(c.reps, np.float64)[known], base[known]
        denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = float(np.mean(np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)))
        mult[i] = ((1 + cos) / 2) ** disagreement
        if cos < 0:
            notes[c.node_id] = f"representations point away from the cloud's (cos {cos:.2f})"
    return mult, notes


def aggregate_representations(
    contribs: list[Contribution], weights: np.ndarray, reps: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Edge consensus per public id: weighted mean of the devices' ``z^c``.

    Parameters
    ----------
    reps : list of numpy.ndarray, optional
        The rows to use instead of each contribution's own (e.g. bounded ones).

    Returns
    -------
    ids : numpy.ndarray
        ``(K,)`` sorted public ids that at least one device sent.
    z : numpy.ndarray
        ``(K, F)`` float32.
    """
    sums: dict[int, np.ndarray] = {}
    totals: dict[int, float] = {}
    rows = reps if reps is not None else [c.reps for c in contribs]
    for c, w, r in zip(contribs, weights, rows):
        for i, z in zip(c.rep_ids, np.asarray(r, np.float64)):
            sums[int(i)] = sums.get(int(i), 0.0) + w * z
            totals[int(i)] = totals.get(int(i), 0.0) + w
    ids = np.array(sorted(i for i in sums if totals[i] > 0), np.int64)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), np.float32)
    z = np.stack([sums[i] / totals[i] for i in ids]).astype(np.float32)
    return ids, z


def representation_consensus(
    contribs: list[Contribution],
    num_modalities: int,
    mma: MmaSettings,
    reference_ids: np.ndarray,
    reference: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """The devices' consensus ``z^c`` per public id: bounded rows, MMA-weighted.

    Each device's rows are bounded against the cloud's (:func:`bound_representations`),
    then averaged per public id with its MMA weight (``mma.beta``, counts capped at
    ``mma.clip-factor`` times the median) times its disagreement multiplier.

    Returns
    -------
    ids, z : numpy.ndarray
        As :func:`aggregate_representations`.
    notes : dict of int to str
        Node id -> what was clipped or damped, for the log.
    """
    weights = mma_weights(contribs, num_modalities, mma.beta, mma.clip_factor)
    reps, mult, notes = bound_representations(
        contribs, reference_ids, reference, mma.clip_factor, mma.disagreement
    )
    ids, z = aggregate_representations(contribs, weights * mult, reps)
    return ids, z, notes
