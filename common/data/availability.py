"""Which modalities each device holds, and seeded per-sample missing modalities."""

from __future__ import annotations

from typing import Literal

import numpy as np

from common.data.samples import SampleSet

# Purpose constant mixed into the seed, so this draw is independent of the others.
_SEED_CLIENT_MODALITIES = 0x4D4F44


def client_modalities(
    all_modalities: tuple[str, ...],
    scenario: Literal["full", "mixed"],
    unimodal_fraction: float,
    partition_id: int,
    num_partitions: int,
    seed: int,
) -> tuple[str, ...]:
    """Return the modality set ``M_j`` of device ``partition_id``.

    Parameters
    ----------
    all_modalities : tuple of str
        The dataset's modalities, in their fixed order.
    scenario : {"full", "mixed"}
        ``"full"``: every device holds every modality. ``"mixed"``: a seeded
        choice of ``round(unimodal_fraction * num_partitions)`` devices is
        unimodal; they get one modality each, cycling through ``all_modalities``
        so that each modality has unimodal devices; the others hold all.
    unimodal_fraction : float
        Fraction of unimodal devices in the ``"mixed"`` scenario, in [0, 1].
    partition_id, num_partitions : int
        This device and the number of devices.
    seed : int
        Run seed; the same arguments always give the same set.

    Returns
    -------
    tuple of str
        A non-empty subset of ``all_modalities``, in the dataset's order.
    """
    if not all_modalities:
        raise ValueError("a dataset needs at least one modality")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id {partition_id} not in [0, {num_partitions})")
    if scenario == "full" or len(all_modalities) == 1:
        return tuple(all_modalities)
    if scenario != "mixed":
        raise ValueError(f"unknown modality scenario {scenario!r}")
    num_unimodal = round(unimodal_fraction * num_partitions)
    rng = np.random.default_rng([_seed_entropy(seed), _SEED_CLIENT_MODALITIES])
    order = rng.permutation(num_partitions)
    rank = int(np.flatnonzero(order == partition_id)[0])
    if rank >= num_unimodal:
        return tuple(all_modalities)
    return (all_modalities[rank % len(all_modalities)],)


def sample_mask(
    n: int,
    all_modalities: tuple[str, ...],
    held: tuple[str, ...],
    missing_rate: float,
    rng: np.random.Generator,
    available: np.ndarray | None = None,
) -> np.ndarray:
    """Draw which modalities each sample has.

    Parameters
    ----------
    n : int
        Number of samples.
    all_modalities : tuple of str
        The dataset's modalities, giving the column order ``M``.
    held : tuple of str
        Modalities the device holds; the others are never present.
    missing_rate : float
        Probability, independently per sample and held modality, that it is
        dropped. Each sample keeps at least one of its candidates.
    rng : numpy.random.Generator
        Source of randomness (seed it for reproducibility).
    available : numpy.ndarray, optional
        ``(n, M)`` bool, modalities the data itself has (e.g. a manifest line
        without an image). Defaults to all True.

    Returns
    -------
    numpy.ndarray
        ``(n, M)`` bool mask. Rows whose candidates (``held`` and
        ``available``) are empty stay all False.
    """
    unknown = sorted(set(held) - set(all_modalities))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}, expected {all_modalities}")
    if not held:
        raise ValueError("a device must hold at least one modality")
    if not 0 <= missing_rate < 1:
        raise ValueError(f"missing_rate {missing_rate} not in [0, 1)")
    num_modalities = len(all_modalities)
    candidates = np.zeros((n, num_modalities), dtype=bool)
    candidates[:, [all_modalities.index(m) for m in held]] = True
    if available is not None:
        candidates &= np.asarray(available, dtype=bool).reshape(n, num_modalities)
    # Draw both arrays unconditionally so the stream does not depend on the data.
    keep = rng.random((n, num_modalities)) >= missing_rate
    rescue_draw = rng.random((n, num_modalities))
    mask = candidates & keep
    # A sample left with nothing gets back one of its candidates, chosen at random.
    empty = ~mask.any(axis=1) & candidates.any(axis=1)
    if empty.any():
        scores = np.where(candidates[empty], rescue_draw[empty], -1.0)
        mask[np.flatnonzero(empty), scores.argmax(axis=1)] = True
    return mask


def restrict(
    sample_set: SampleSet,
    held: tuple[str, ...],
    missing_rate: float,
    rng: np.random.Generator,
) -> SampleSet:
    """Restrict samples to the modalities a device holds, with missing ones.

    Missing inputs are overwritten with zeros (arrays) or ``""`` (text), so no
    information from a missing modality reaches the device. Samples left with
    no modality at all (possible only if the data already lacked the held
    ones) are dropped.

    Parameters
    ----------
    sample_set : SampleSet
        ``N`` samples; its ``mask`` says what the data itself has.
    held : tuple of str
        The device's modality set.
    missing_rate : float
        Per-sample, per-modality drop probability (see `sample_mask`).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    SampleSet
        A new set of ``N' <= N`` samples; the input is not modified.
    """
    names = sample_set.modality_names
    mask = sample_mask(len(sample_set), names, held, missing_rate, rng, available=sample_set.mask)
    keep = np.flatnonzero(mask.any(axis=1))
    mask = mask[keep]
    inputs = {}
    for col, spec in enumerate(sample_set.specs):
        values = sample_set.inputs[spec.name][keep].copy()
        absent = ~mask[:, col]
        values[absent] = "" if spec.kind == "text" else 0
        inputs[spec.name] = values
    return SampleSet(
        specs=sample_set.specs,
        inputs=inputs,
        mask=mask,
        targets=[sample_set.targets[i] for i in keep],
        labels=sample_set.labels[keep],
        ids=sample_set.ids[keep],
    )


def _seed_entropy(seed: int) -> int:
    """Map any Python int (negative too) to a valid SeedSequence entropy."""
    return seed & 0xFFFFFFFFFFFFFFFF
