"""What the server tells devices about the fused space: the anchor table and class prototypes.

The anchor table lives in the strategy's snapshot (so that a resumed run keeps it):
under SE-CCL it holds the cloud's ``z^s`` of every public train sample, under
CreamFL the devices' last consensus. The prototypes are computed from it.
"""

from __future__ import annotations

import numpy as np

from common.settings import RunSettings
from server_app.checkpoint import StrategySnapshot
from server_app.cloud import Cloud


def fill_anchors(settings: RunSettings, snap: StrategySnapshot, cloud: Cloud) -> None:
    """Under SE-CCL, start the anchor table from the cloud's ``z^s`` if it is empty.

    The table is empty only before the first round of a fresh run; after each
    round :func:`update_anchors` refreshes it, and a resumed run restores it from
    the checkpoint.
    """
    if settings.components.seccl and not len(snap.anchor_ids):
        snap.anchor_ids, snap.anchors = cloud.representations()


def anchors_for(
    settings: RunSettings, snap: StrategySnapshot, partition: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Anchors for the device of ``partition``: its public ids' rows, or all of them.

    The table is the cloud's ``z^s`` (SE-CCL) or the devices' last consensus
    (CreamFL). A device the server has not heard from yet (``partition`` -1: round
    1, a newcomer) gets the whole table, as the server does not know its share.
    """
    comps = settings.components
    if not (comps.seccl or comps.rep_exchange):
        return None
    if not comps.seccl and not len(snap.anchor_ids):
        return None  # CreamFL before the first consensus
    return snap.share_anchors(partition)


def prototypes(
    settings: RunSettings, snap: StrategySnapshot, cloud: Cloud
) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[tuple[str, ...], np.ndarray]]:
    """The cloud's class prototypes and those of each subset of the modalities.

    Computed from the anchor table, which under SE-CCL holds the cloud's ``z^s`` of
    every public train sample as the cloud stands (refreshed after its step,
    restored on resume): the same for every device of the round. The subsets'
    prototypes (``seccl.modality-prototypes``) come from the same cloud model.

    Returns
    -------
    prototypes : tuple of numpy.ndarray or None
        ``(classes (K,), z (K, F))``; None unless SE-CCL runs with
        ``seccl.prototype-weight`` > 0.
    by_subset : dict
        Sorted modality names -> ``(K, F)``; empty unless ``seccl.modality-prototypes``.
    """
    if not (settings.components.seccl and settings.seccl.prototype_weight > 0):
        return None, {}
    classes, z = cloud.prototypes(snap.anchor_ids, snap.anchors)
    by_subset = {}
    if settings.seccl.modality_prototypes and len(classes):
        by_subset = cloud.modality_prototypes(classes, z)
    return (classes, z), by_subset


def update_anchors(
    settings: RunSettings,
    snap: StrategySnapshot,
    cloud: Cloud,
    cons_ids: np.ndarray,
    cons: np.ndarray,
) -> None:
    """Next round's anchor table: the cloud's ``z^s`` (SE-CCL) or the consensus (CreamFL)."""
    comps = settings.components
    if comps.seccl:
        snap.anchor_ids, snap.anchors = cloud.representations()
    elif comps.rep_exchange and len(cons_ids):
        snap.anchor_ids, snap.anchors = cons_ids, cons
