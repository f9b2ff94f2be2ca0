"""The Dirichlet partition: coverage, minimum sizes, seeding, label skew."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.partition import dirichlet_split
from common.settings import ConfigError


def test_dirichlet_split_covers_once_with_a_minimum_and_is_seeded() -> None:
    # Prepare
    labels = np.repeat(np.arange(5), 40)

    # Execute
    parts = dirichlet_split(labels, 6, 0.1, np.random.default_rng(0))
    again = dirichlet_split(labels, 6, 0.1, np.random.default_rng(0))
    other = dirichlet_split(labels, 6, 0.1, np.random.default_rng(1))

    # Assert
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    assert min(len(p) for p in parts) >= 8
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    # alpha 0.1 skews label mixes: some part is dominated by one label
    assert max(np.bincount(labels[p]).max() / len(p) for p in parts) > 0.6


def test_dirichlet_split_without_labels_is_iid_and_needs_enough_samples() -> None:
    parts = dirichlet_split(np.full(20, -1), 4, 0.5, np.random.default_rng(0))
    assert [len(p) for p in parts] == [5, 5, 5, 5]
    with pytest.raises(ConfigError, match="3 private samples"):
        dirichlet_split(np.zeros(3, int), 2, 0.5, np.random.default_rng(0))
