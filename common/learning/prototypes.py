"""Class prototypes in the fused space: the cloud's summary of what each answer looks like.

A prototype is the direction of a class's mean unit-normalised fused
representation ``z`` (FedProto, Tan et al., AAAI 2022). The cloud computes them
from its labelled public data; a device pulls the ``z`` of each of its labelled
samples toward its class's prototype and away from the others (a cosine
classifier with the prototypes as fixed weights). Only ``K`` rows of the fused
space travel, computed from public data: no device data is summarised.

With ``seccl.prototype-views`` the same classifier is also applied to each
multimodal sample's single-modality views (its fused ``z`` with every other
modality masked out, computed from the same per-modality embeddings): a sample
that arrives with one modality missing should still land near its class.

With ``seccl.modality-prototypes`` the cloud also sends, for each proper subset of
the modalities, the prototypes of its ``z`` computed with only that subset present
(:func:`subset_prototypes`); a sample that holds only such a subset is pulled
toward that subset's prototypes, where the cloud itself puts such inputs, instead
of toward the prototypes of complete samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from common.learning.losses import ExtraLoss
from common.model.multimodal import Batch


def class_prototypes(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm mean direction of each labelled class's representations.

    Parameters
    ----------
    z : numpy.ndarray
        ``(N, F)`` fused representations.
    labels : numpy.ndarray
        ``(N,)`` class indices; negative entries (unlabelled) are ignored.

    Returns
    -------
    classes : numpy.ndarray
        ``(K,)`` int64 class indices present in ``labels``, ascending.
    prototypes : numpy.ndarray
        ``(K, F)`` float32, each row of unit norm.
    """
    z = np.asarray(z, np.float64)
    labels = np.asarray(labels, np.int64)
    classes = np.unique(labels[labels >= 0])
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    rows = [unit[labels == c].mean(0) for c in classes]
    protos = np.stack(rows) if rows else np.zeros((0, z.shape[1]))
    protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
    return classes.astype(np.int64), protos.astype(np.float32)


def subset_prototypes(
    z: np.ndarray, labels: np.ndarray, classes: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Prototypes of the given classes from ``z``; a class without samples keeps its fallback.

    Parameters
    ----------
    z : numpy.ndarray
        ``(N, F)`` fused representations (e.g. with only some modalities present).
    labels : numpy.ndarray
        ``(N,)`` their class indices.
    classes : numpy.ndarray
        ``(K,)`` the classes wanted, in the order of ``fallback``'s rows.
    fallback : numpy.ndarray
        ``(K, F)`` the row used for a class with no sample in ``z``.

    Returns
    -------
    numpy.ndarray
        ``(K, F)`` float32 unit rows.
    """
    found, rows = class_prototypes(z, labels)
    row_of = {int(c): r for c, r in zip(found, rows)}
    table = [row_of.get(int(c), fallback[k]) for k, c in enumerate(classes)]
    return np.asarray(table, np.float32).reshape(len(classes), -1)


def prototype_term(
    classes: np.ndarray,
    prototypes: np.ndarray,
    weight: float,
    temperature: float,
    by_subset: dict[tuple[str, ...], np.ndarray] | None = None,
    held: tuple[str, ...] = (),
) -> ExtraLoss | None:
    """Cross-entropy of a cosine classifier whose weights are the prototypes.

    Parameters
    ----------
    classes : numpy.ndarray
        ``(K,)`` class index of each prototype.
    prototypes : numpy.ndarray
        ``(K, F)`` prototypes (unit rows).
    weight, temperature : float
        Loss weight and softmax temperature of the cosine logits.
    by_subset : dict, optional
        Subset of the modalities (sorted names) -> ``(K, F)`` prototypes of the same
        classes for samples that hold exactly that subset; other samples use
        ``prototypes``.
    held : tuple of str
        The model's modalities, in the order of ``batch.mask``'s columns (needed
        with ``by_subset``).

    Returns
    -------
    ExtraLoss or None
        None without prototypes. The term is skipped for a batch none of whose
        samples has a class with a prototype; otherwise the mean cross-entropy
        over those samples, each against its own subset's table.
    """
    if len(classes) < 2:  # one class alone gives no contrast
        return None
    column, table = _classifier(classes, prototypes)
    tables = {k: _classifier(classes, v)[1] for k, v in (by_subset or {}).items()}

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        hit = [(i, column[int(y)]) for i, y in enumerate(batch.labels) if int(y) in column]
        if not hit:
            return None
        groups: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for i, k in hit:
            subset = _present(batch.mask[i], held) if tables else ()
            groups.setdefault(subset if subset in tables else (), []).append((i, k))
        losses = []
        for subset, members in groups.items():
            rows = torch.tensor([i for i, _ in members], device=z.device)
            target = torch.tensor([k for _, k in members], device=z.device)
            ce = _cosine_ce(z[rows], target, tables.get(subset, table), temperature)
            losses.append((ce, len(members)))
        if len(losses) == 1:  # the exact arithmetic of one table (runs without subsets)
            return weight * losses[0][0]
        return weight * sum(ce * n for ce, n in losses) / len(hit)

    return term


def view_prototype_term(
    classes: np.ndarray,
    prototypes: np.ndarray,
    weight: float,
    temperature: float,
    fuse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> ExtraLoss | None:
    """The prototype classifier on every single-modality view of the multimodal samples.

    Parameters
    ----------
    classes, prototypes, weight, temperature
        As :func:`prototype_term`.
    fuse : callable
        The model's fusion, ``(V, M, D) embeddings, (V, M) bool mask -> (V, F) z``.

    Returns
    -------
    ExtraLoss or None
        None without prototypes. For each labelled sample with a prototype and at
        least two present modalities, one view per present modality (that
        modality alone); the mean cross-entropy over the views. Skipped for a
        batch without such samples.
    """
    if len(classes) < 2:
        return None
    column, table = _classifier(classes, prototypes)

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        mask = batch.mask.bool()
        views = [
            (i, j, column[int(y)])
            for i, y in enumerate(batch.labels)
            if int(y) in column and int(mask[i].sum()) >= 2
            for j in torch.nonzero(mask[i]).flatten().tolist()
        ]
        if not views:
            return None
        rows = torch.tensor([i for i, _, _ in views], device=e.device)
        alone = torch.zeros(len(views), mask.shape[1], dtype=torch.bool, device=e.device)
        alone[torch.arange(len(views)), torch.tensor([j for _, j, _ in views])] = True
        target = torch.tensor([k for _, _, k in views], device=e.device)
        return weight * _cosine_ce(fuse(e[rows], alone).float(), target, table, temperature)

    return term


def _present(mask_row: torch.Tensor, held: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted names of the modalities a sample holds (``mask_row`` in ``held``'s order)."""
    return tuple(sorted(held[j] for j in torch.nonzero(mask_row).flatten().tolist()))


def _classifier(classes: np.ndarray, prototypes: np.ndarray) -> tuple[dict[int, int], torch.Tensor]:
    """Class index -> prototype row, and the ``(K, F)`` unit prototype table."""
    column = {int(c): k for k, c in enumerate(classes)}
    return column, F.normalize(torch.as_tensor(np.asarray(prototypes, np.float32)), dim=1)


def _cosine_ce(
    z: torch.Tensor, target: torch.Tensor, table: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of cosine logits ``cos(z, prototype) / temperature``; ``z`` is ``(N, F)``."""
    logits = F.normalize(z, dim=1) @ table.to(z.device).T / temperature
    return F.cross_entropy(logits, target)
