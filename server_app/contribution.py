"""A device's training reply as the server uses it, and the checks it must pass first."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.exchange import DeviceUpdate
from common.lora_ranks import adapter_ranks, fits_rank
from common.state import ENC_LORA, SHARED_PREFIXES, State, group_of, nbytes


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
    rank : int, optional
        The rank of the device's shared adapters when it is below the run's (its
        ``lora/`` and ``prompt/`` deltas were zero-padded to the run's rank, see
        ``common.lora_ranks``); None at the run's rank.
    """

    node_id: int
    delta: State
    num_examples: int
    modalities: tuple[str, ...]
    modality_counts: dict[str, int]
    rep_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    rank: int | None = None

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
        The global state sent this round: the delta holds exactly its ``lora/`` and
        ``prompt/`` keys, and whole encoder groups (``enclora/``) of the device's
        own modalities, at most one per modality.
    public_ids : set of int, optional
        Valid public sample ids for representations (None = not checked).
    """
    problems: list[str] = []
    unknown = [m for m in c.modalities if m not in all_modalities]
    if unknown or not c.modalities:
        problems.append(f"unknown or empty modality set {list(c.modalities)}")
    if c.num_examples <= 0:
        problems.append(f"num-examples is {c.num_examples}")
    for name, count in c.modality_counts.items():
        if not 0 <= count <= max(c.num_examples, 0):
            problems.append(f"count {count} of modality '{name}' outside [0, num-examples]")
    size = nbytes(c.delta) + int(np.asarray(c.reps).nbytes)
    if size > max_bytes:
        problems.append(f"implausible size {size} bytes (limit {max_bytes})")
    problems.extend(_check_keys(c, reference))
    problems.extend(_check_arrays(c, reference))
    problems.extend(_check_reps(c, fused_dim, public_ids))
    return problems


def _check_arrays(c: Contribution, reference: State) -> list[str]:
    """Each shared array: a known key, float32/16, the reference's shape or a lower rank."""
    problems: list[str] = []
    for key, value in c.delta.items():
        if not key.startswith((*SHARED_PREFIXES, ENC_LORA)):
            continue  # reported by _check_keys
        ref = reference.get(key)
        if ref is None:
            problems.append(f"unexpected key '{key}'")
            continue
        arr = np.asarray(value)
        if arr.dtype not in (np.float32, np.float16):
            problems.append(f"'{key}' has dtype {arr.dtype}, expected float32/float16")
        elif not fits_rank(key, arr.shape, np.shape(ref)):
            problems.append(f"'{key}' has shape {arr.shape}, expected {np.shape(ref)}")
        elif not np.isfinite(arr).all():
            problems.append(f"'{key}' has non-finite values")
    ranks = adapter_ranks(c.delta)
    if len(ranks) > 1:
        problems.append(f"adapter arrays of several ranks {sorted(ranks)}")
    return problems


def _check_keys(c: Contribution, reference: State) -> list[str]:
    """The delta's keys: every shared key of the reference, and whole encoder groups of its own."""
    if not c.delta:
        return []
    problems: list[str] = []
    ref_keys = {k for k in reference if k.startswith(SHARED_PREFIXES)}
    got_keys = {k for k in c.delta if k.startswith(SHARED_PREFIXES)}
    if ref_keys != got_keys:
        extra, missing = sorted(got_keys - ref_keys), sorted(ref_keys - got_keys)
        problems.append(f"shared keys differ (unexpected {extra[:2]}, missing {missing[:2]})")
    other = [k for k in c.delta if not k.startswith((*SHARED_PREFIXES, ENC_LORA))]
    problems.extend(f"unexpected key '{k}'" for k in sorted(other)[:3])
    groups = {group_of(k) for k in c.delta if k.startswith(ENC_LORA)}
    kinds: dict[str, int] = {}
    for g in sorted(groups):
        ref_g = {k for k in reference if k.startswith(g)}
        got_g = {k for k in c.delta if k.startswith(g)}
        modality = g.split("/")[1]
        kinds[modality] = kinds.get(modality, 0) + 1
        if not ref_g:
            problems.append(f"unknown encoder group '{g}'")
        elif got_g != ref_g:
            problems.append(f"encoder group '{g}' incomplete or with unknown keys")
        elif modality not in c.modalities:
            problems.append(f"encoder group '{g}' for a modality the device does not hold")
    problems.extend(f"several encoder groups for '{m}'" for m, n in kinds.items() if n > 1)
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
