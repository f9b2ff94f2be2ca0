"""Heterogeneous LoRA ranks: a device's slice of the federation's adapter, and back.

The federation's shared backbone adapter has the run's rank ``R`` (``lora.rank``).
A device whose profile sets a lower rank ``r`` builds its adapter with rank ``r``
and ``alpha_r = alpha * r / R``, so that every rank has the same scaling
``alpha / R`` and its adapter is the global one restricted to the first ``r``
components: ``(alpha / R) B[:, :r] A[:r]`` (HetLoRA's truncation).

The server zero-pads a rank-``r`` delta to ``R`` and averages the padded deltas
(``lora.rank-aggregation = "zero-pad"``, and ``"auto"`` under central DP or FedSA:
a component that only some devices hold is averaged with the others' zeros, so it
moves by its holders' share of the weight). With ``"holders"`` each component ``j``
is instead divided by the weight of the devices that hold it (:func:`coverage`), the
mean of its holders' updates. With one rank for every device both are plain FedAvg
of the factors. With ``"svd"`` (FlexLoRA; ``"auto"``, the default, otherwise) the
server averages each device's full product ``B A`` and re-factorises the mean by a
truncated SVD (:func:`svd_redistribute`), but only in a round where an accepted
device holds less than the run's rank (:func:`refactorises`): when all hold the
run's rank it is FedAvg of the factors like the others, so a single-rank run is the
same under every setting. ``"svd-update"`` averages the changes of the products
instead and adds them to the global product, so the components a small device does
not hold keep their value rather than being averaged with its zeros. Under
``lora.hold-rest`` a small device holds every component, frozen past its rank
(``common.model.held_components``), and uploads the change of its first ``r``:
exactly what ``"svd-update"`` adds to the global product.

The shared adapters built with ``lora.rank`` may differ in rank: the backbone's
LoRA (``lora/`` keys) and the prompt map's low-rank update (``prompt/``); the
encoder adapters keep the run's ``lora.encoder-rank``. ``lora_A`` is ``(r, in)``,
``lora_B`` is ``(out, r)``.
"""

from __future__ import annotations

import numpy as np

from common.state import SHARED_PREFIXES, State


def rank_axis(key: str) -> int | None:
    """The rank axis of a shared adapter's array (0 for ``lora_A``, 1 for ``lora_B``), else None.

    The shared adapters of a rank are the backbone's (``lora/``) and the prompt
    map's (``prompt/``), both built with ``lora.rank``.
    """
    if not key.startswith(SHARED_PREFIXES):
        return None
    if "lora_A" in key:
        return 0
    return 1 if "lora_B" in key else None


def device_alpha(alpha: float, rank: int, run_rank: int) -> float:
    """``alpha * rank / run_rank``: the LoRA alpha that keeps the run's ``alpha / R``."""
    return alpha * rank / run_rank


def adapter_ranks(state: State) -> set[int]:
    """The ranks of the shared adapter arrays of ``state`` (one in a well-formed state)."""
    return {int(np.shape(v)[rank_axis(k)]) for k, v in state.items() if rank_axis(k) is not None}


def state_rank(state: State) -> int | None:
    """The rank of the shared adapters of ``state`` (the highest; None without them)."""
    return max(adapter_ranks(state), default=None)


def truncate_ranks(state: State, rank: int | None) -> State:
    """``state`` with every shared adapter array cut to its first ``rank`` components.

    Arrays of lower rank, and every other key, are returned as they are; ``None``
    keeps everything.
    """
    if rank is None:
        return state
    out: State = {}
    for key, value in state.items():
        axis = rank_axis(key)
        if axis is None or np.shape(value)[axis] <= rank:
            out[key] = value
        else:
            out[key] = np.asarray(value)[:rank] if axis == 0 else np.asarray(value)[:, :rank]
    return out


def fits_rank(key: str, shape: tuple[int, ...], reference: tuple[int, ...]) -> bool:
    """Whether ``shape`` fits the reference: equal, or a lower rank of an adapter key."""
    if tuple(shape) == tuple(reference):
        return True
    axis = rank_axis(key)
    if axis is None or len(shape) != 2 or len(reference) != 2:
        return False
    other = 1 - axis
    return shape[other] == reference[other] and 1 <= shape[axis] < reference[axis]


def pad_ranks(delta: State, reference: State) -> tuple[State, int | None]:
    """A delta zero-padded to the reference's ranks, and the rank it came with.

    Raises
    ------
    ValueError
        If the adapter arrays of ``delta`` do not share one rank (a checked
        contribution always does).
    """
    ranks = adapter_ranks(delta)
    if len(ranks) > 1:
        raise ValueError(f"lora arrays of several ranks {sorted(ranks)} in one delta")
    rank = ranks.pop() if ranks else None
    out: State = {}
    for key, value in delta.items():
        axis, full = rank_axis(key), np.shape(reference.get(key, value))
        if axis is None or np.shape(value) == full:
            out[key] = value
            continue
        padded = np.zeros(full, np.asarray(value).dtype)
        if axis == 0:
            padded[: np.shape(value)[0]] = value
        else:
            padded[:, : np.shape(value)[1]] = value
        out[key] = padded
    return out, rank


def coverage(ranks: list[int | None], weights: np.ndarray, full_rank: int) -> np.ndarray:
    """``(R,)``: per component ``j``, the total weight of the devices holding it (``r_i > j``).

    A device without a rank (``None``) holds every component.
    """
    r = np.array([full_rank if x is None else x for x in ranks])
    held = np.arange(full_rank)[None, :] < r[:, None]  # (n, R)
    return np.asarray(weights, np.float64) @ held


def renormalise(delta: State, cover: np.ndarray) -> State:
    """Each rank component of an aggregated delta divided by its coverage.

    Components nobody holds (coverage 0) stay 0.
    """
    safe = np.where(cover > 0, cover, 1.0)
    out: State = {}
    for key, value in delta.items():
        axis = rank_axis(key)
        if axis is None:
            out[key] = value
            continue
        scale = safe[:, None] if axis == 0 else safe[None, :]
        out[key] = (np.asarray(value, np.float64) / scale).astype(np.asarray(value).dtype)
    return out


def mean_over_holders(delta: State, ranks: list[int | None], weights: np.ndarray) -> State:
    """An aggregated delta (weighted sum of zero-padded deltas) as each component's holders' mean.

    Parameters
    ----------
    delta : State
        ``sum_i w_i delta_i`` over the devices, their adapter arrays padded to the run's rank.
    ranks : list of int or None
        Each device's rank (None: the run's).
    weights : numpy.ndarray
        ``(n,)`` the devices' final weights ``w_i`` (summing to 1).
    """
    full = state_rank(delta)
    if full is None or all(r is None for r in ranks):
        return delta  # one rank for everyone: plain FedAvg of the factors
    return renormalise(delta, coverage(ranks, weights, full))


SVD_AGGREGATIONS = ("svd", "svd-update")  # the settings that re-factorise by an SVD


def refactorises(how: str, ranks: list[int | None]) -> bool:
    """Whether ``how`` re-factorises this round's adapters: an SVD kind, a device below ``R``.

    ``ranks`` are the accepted devices' ranks, None for the run's rank ``R`` (a
    lower rank is recorded only when it differs from ``R``).
    """
    return how in SVD_AGGREGATIONS and any(r is not None for r in ranks)


def next_global(
    how: str,
    reference: State,
    delta: State,
    deltas: list[State],
    ranks: list[int | None],
    weights: np.ndarray,
    scales: np.ndarray,
) -> State:
    """The next global state from the aggregated delta, ranks combined as ``how`` says.

    Parameters
    ----------
    how : str
        ``lora.rank-aggregation``: ``"zero-pad"`` (``reference + delta``),
        ``"holders"`` (each rank component its holders' mean, :func:`mean_over_holders`)
        or ``"svd"`` / ``"svd-update"`` (FlexLoRA, :func:`svd_redistribute`, of the
        products or of their changes, when a device is below the run's rank
        (:func:`refactorises`); otherwise, and for other keys, as ``zero-pad``).
    reference : State
        The global state the devices started from.
    delta : State
        ``sum_i w_i delta_i`` over the devices (as scaled by the aggregation).
    deltas, ranks, weights, scales
        Each device's delta (zero-padded), rank (None: the run's), final weight
        ``w_i`` and the factor the aggregation scaled its delta by (clipping).
    """
    if how == "holders":
        delta = mean_over_holders(delta, ranks, weights)
    out = {k: (v + delta[k]).astype(np.float32) if k in delta else v for k, v in reference.items()}
    if refactorises(how, ranks):
        updates = how == "svd-update"
        out.update(svd_redistribute(reference, deltas, ranks, weights, scales, updates))
    return out


def svd_redistribute(
    reference: State,
    deltas: list[State],
    ranks: list[int | None],
    weights: np.ndarray,
    scales: np.ndarray | None = None,
    updates: bool = False,
) -> State:
    """FlexLoRA: each shared adapter re-factorised from the mean of the devices' full products.

    Device ``i`` (rank ``r_i``, weight ``w_i``) ends its round with the factors
    ``B_i = B[:, :r_i] + dB_i`` and ``A_i = A[:r_i] + dA_i`` (its slice of the
    reference plus its delta). The weighted mean of the products
    ``W = sum_i w_i B_i A_i`` is what the federation's adapter should compute; its
    truncated SVD ``U S V^T`` gives the next factors at the run's rank ``R``,
    ``B = U_R S_R`` and ``A = V_R^T`` (``dB_i``, ``dA_i`` as the aggregation scaled
    them: ``scales[i]``, 1 when not given). The components come ordered
    by singular value, so a device of rank ``r`` that takes the first ``r``
    (:func:`truncate_ranks`) gets the best rank-``r`` approximation of ``W``
    (Eckart-Young), and the strongest directions come first whatever rank holds them.
    Every rank has the same ``alpha / R`` scaling, so the products are comparable.

    A device of rank ``r_i < R`` starts from the first ``r_i`` components only, so
    its product lacks the reference's other components ``B[:, r_i:] A[r_i:]``, and
    the mean of the products shrinks them by the small devices' share of the weight
    every round. With ``updates`` the mean is instead taken of the changes,
    ``W = B A + sum_i w_i (B_i A_i - B[:, :r_i] A[:r_i])``: a device moves only what
    it holds and leaves the rest as it was. With every device at ``R`` the two agree.

    Parameters
    ----------
    reference : State
        The global state the devices started from (adapters at rank ``R``).
    deltas : list of State
        Each device's delta, its adapter arrays zero-padded to ``R``.
    ranks : list of int or None
        Each device's rank (None: ``R``).
    weights : numpy.ndarray
        ``(n,)`` the devices' final weights, summing to 1.
    scales : numpy.ndarray, optional
        ``(n,)`` the factor each device's delta is scaled by (norm clipping).
    updates : bool
        Average the changes of the products, added to the reference's product
        (``"svd-update"``), instead of the products (``"svd"``).

    Returns
    -------
    State
        The next ``lora_A`` ``(R, in)`` and ``lora_B`` ``(out, R)`` of every shared
        adapter pair; other keys are not included.
    """
    scales = np.ones(len(deltas)) if scales is None else scales
    out: State = {}
    for a_key in sorted(k for k in reference if rank_axis(k) == 0):
        b_key = a_key.replace("lora_A", "lora_B")
        if b_key not in reference:
            continue
        a_ref = np.asarray(reference[a_key], np.float64)
        b_ref = np.asarray(reference[b_key], np.float64)
        full = a_ref.shape[0]
        # With updates, B A - sum_i w_i B[:, :r_i] A[:r_i] = B diag(1 - c) A, c the
        # components' coverage: each is kept by the weight of the devices not holding it.
        if updates:
            kept = 1 - coverage(ranks, weights, full)  # (R,)
            mean = (b_ref * kept[None, :]) @ a_ref
        else:
            mean = np.zeros((b_ref.shape[0], a_ref.shape[1]))
        for delta, rank, w, x in zip(deltas, ranks, weights, scales):
            held = np.arange(full) < (full if rank is None else rank)  # (R,)
            a = (a_ref + x * np.asarray(delta.get(a_key, 0.0), np.float64)) * held[:, None]
            b = (b_ref + x * np.asarray(delta.get(b_key, 0.0), np.float64)) * held[None, :]
            mean += w * (b @ a)
        b, a = _factorise(mean, full)
        out[a_key] = a.astype(np.asarray(reference[a_key]).dtype)
        out[b_key] = b.astype(np.asarray(reference[b_key]).dtype)
    return out


def _factorise(product: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(out, rank)`` and ``(rank, in)`` factors of the best rank-``rank`` approximation.

    ``B = U S`` and ``A = V^T``: the rows of ``A`` stay orthonormal (unit scale, as
    LoRA's random ``A``) and the magnitude goes to ``B`` (zero at LoRA's start),
    so a component with a small singular value still has an ``A`` row that ``B``
    can learn along; a split ``sqrt(S)`` on each side would shrink both and stall
    it. When the matrix has fewer than ``rank`` singular values the extra
    components are 0.
    """
    u, s, vt = np.linalg.svd(product, full_matrices=False)
    k = min(rank, s.shape[0])
    b = np.zeros((product.shape[0], rank))
    a = np.zeros((rank, product.shape[1]))
    b[:, :k] = u[:, :k] * s[None, :k]
    a[:k] = vt[:k]
    return b, a
