"""The cloud's prototypes of each subset of the modalities (``seccl.modality-prototypes``)."""

from __future__ import annotations

import numpy as np

from common.learning.evaluation import fused_representations
from common.settings import RunSettings
from server_app.cloud import Cloud


def test_each_subsets_prototypes_come_from_the_clouds_z_with_the_rest_masked(tiny_config):
    # Prepare: a cloud on the tiny public data; its prototypes of complete samples
    cloud = Cloud(RunSettings.from_run_config({**tiny_config, "method": "mlecs"}))
    classes, full = cloud.prototypes(*cloud.representations())
    names = cloud.model.held
    # Execute
    by_subset = cloud.modality_prototypes(classes, full)
    # Assert: one table per proper subset, each the class means of z with one modality alone
    assert sorted(by_subset) == sorted((m,) for m in names)
    data = cloud.data.public_train
    alone = data.subset(np.arange(len(data)))
    alone.mask[:, [data.modality_names.index(m) for m in names[1:]]] = False
    keep = alone.mask[:, data.modality_names.index(names[0])]
    _, z = fused_representations(cloud.model, alone.subset(np.flatnonzero(keep)))
    labels = data.labels[keep]
    for k, c in enumerate(classes):
        if (labels == c).any():
            unit = z[labels == c] / np.linalg.norm(z[labels == c], axis=1, keepdims=True)
            want = unit.mean(0) / np.linalg.norm(unit.mean(0))
            np.testing.assert_allclose(by_subset[(names[0],)][k], want, atol=1e-5)
        else:  # no sample of the class holds the modality: the full prototype stands in
            np.testing.assert_array_equal(by_subset[(names[0],)][k], full[k])
    assert not np.allclose(by_subset[(names[0],)], full, atol=1e-3)
