"""Class prototypes in the fused space: the cloud's summary of what each answer looks like.

A prototype is the direction of a class's mean unit-normalised fused
representation ``z`` (FedProto, Tan et al., AAAI 2022). The cloud computes them
from its labelled public data; a device pulls the ``z`` of each of its labelled
samples toward its class's prototype and away from the others (a cosine
classifier with the prototypes as fixed weights). Only ``K`` rows of the fused
space travel, computed from public data: no device data is summarised.
"""

from __future__ import annotations

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


def prototype_term(
    classes: np.ndarray, prototypes: np.ndarray, weight: float, temperature: float
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

    Returns
    -------
    ExtraLoss or None
        None without prototypes. The term is skipped for a batch none of whose
        samples has a class with a prototype.
    """
    if len(classes) < 2:  # one class alone gives no contrast
        return None
    column = {int(c): k for k, c in enumerate(classes)}
    table = F.normalize(torch.as_tensor(np.asarray(prototypes, np.float32)), dim=1)

    def term(batch: Batch, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        hit = [(i, column[int(y)]) for i, y in enumerate(batch.labels) if int(y) in column]
        if not hit:
            return None
        rows = torch.tensor([i for i, _ in hit], device=z.device)
        target = torch.tensor([k for _, k in hit], device=z.device)
        logits = F.normalize(z[rows], dim=1) @ table.to(z.device).T / temperature
        return weight * F.cross_entropy(logits, target)

    return term
