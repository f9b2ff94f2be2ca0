"""A sample holding only some modalities is scored against its subset's prototypes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from common.learning.prototypes import prototype_term, subset_prototypes


def _ce(z: torch.Tensor, target: list[int], table: np.ndarray, temperature: float):
    logits = F.normalize(z, dim=1) @ F.normalize(torch.as_tensor(table), dim=1).T / temperature
    return F.cross_entropy(logits, torch.tensor(target), reduction="none")


def test_each_sample_meets_the_table_of_the_modalities_it_holds():
    # Prepare: samples with both modalities, "acc" alone, "gyro" alone, and an unlabelled one
    torch.manual_seed(0)
    z = torch.randn(4, 3, requires_grad=True)
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, False]])
    batch = SimpleNamespace(labels=np.array([0, 1, 1, -1]), mask=mask)
    full = np.eye(2, 3, dtype=np.float32)
    acc, gyro = full[:, ::-1].copy(), full + 1
    by_subset = {("acc",): acc, ("gyro",): gyro}
    term = prototype_term(np.array([0, 1]), full, 2.0, 0.5, by_subset, ("gyro", "acc"))
    # Execute
    value = term(batch, None, z)
    # Assert: mask columns follow the model's order ("gyro", "acc"): row 1 holds gyro
    rows = [(0, 0, full), (1, 1, gyro), (2, 1, acc)]
    want = torch.cat([_ce(z[i : i + 1], [y], table, 0.5) for i, y, table in rows])
    torch.testing.assert_close(value, 2.0 * want.mean())
    value.backward()
    assert z.grad[:3].abs().sum(1).gt(0).all() and not z.grad[3].any()


def test_without_subset_tables_every_sample_meets_the_full_prototypes():
    torch.manual_seed(1)
    z = torch.randn(3, 3)
    batch = SimpleNamespace(labels=np.array([0, 1, 0]), mask=torch.tensor([[True, False]] * 3))
    full = np.eye(2, 3, dtype=np.float32)
    value = prototype_term(np.array([0, 1]), full, 1.0, 0.1)(batch, None, z)
    torch.testing.assert_close(value, _ce(z, [0, 1, 0], full, 0.1).mean())


def test_a_class_no_sample_of_the_subset_holds_keeps_its_full_prototype():
    z = np.array([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
    labels = np.array([2, 0, 0])
    fallback = np.array([[1.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float32)
    table = subset_prototypes(z, labels, np.array([0, 1, 2]), fallback)
    np.testing.assert_allclose(table, [[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], atol=1e-6)
    assert table.dtype == np.float32 and table.shape == (3, 2)
