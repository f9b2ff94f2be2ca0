"""FedCoLLM's distillation: the student loss, and what a distillation does to the model."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.model.adapters import PRIVATE, adapter_parameters
from common.model.state import shared_state
from common.settings import RunSettings
from server_app.cloud import Cloud
from server_app.distill import (
    DISTILL_WEIGHT,
    _kl,
    _student_loss,
    edge_and_cloud_logits,
    mutual_distillation,
)


def test_each_student_learns_the_answers_and_the_other_model():
    torch.manual_seed(0)
    logits, teacher = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    target = torch.tensor([[1, 4, -100], [2, -100, -100]])
    mask = target != -100
    ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100)
    # a teacher that agrees with the student leaves the supervised loss alone
    same, kl0 = _student_loss(logits, logits, target)
    assert torch.isclose(kl0, torch.tensor(0.0), atol=1e-6) and torch.isclose(same, ce)
    # a disagreeing teacher adds its KL over the answer tokens only (padding ignored)
    loss, kl = _student_loss(logits, teacher, target)
    assert kl > 0 and torch.isclose(loss, ce + DISTILL_WEIGHT * kl)
    noisy = teacher.clone()
    noisy[~mask] = 100.0
    assert torch.isclose(_student_loss(logits, noisy, target)[1], kl)


def _edge_cloud_kl(model, batch) -> float:
    """KL(cloud || edge) of the answer tokens: what the edge student minimises."""
    model.eval()
    with torch.no_grad():
        edge, cloud = edge_and_cloud_logits(model, batch)
    return float(_kl(edge, cloud, batch.target_ids != -100))


def test_distillation_changes_the_aggregate_and_brings_edge_and_cloud_together(tiny_config):
    # Prepare: the cloud's own LoRA disagrees with the aggregated (shared) adapters
    cloud = Cloud(RunSettings.from_run_config({**tiny_config, "method": "fedcollm"}))
    model, public = cloud.model, cloud.data.public_train
    torch.manual_seed(0)
    with torch.no_grad():
        for p in adapter_parameters(model.lm, PRIVATE):
            p.add_(0.5 * torch.randn_like(p))
    aggregate = shared_state(model)  # what plain FedAvg would send back
    batch = model.make_batch(public, np.arange(min(8, len(public))))
    kl_before = _edge_cloud_kl(model, batch)
    # Execute
    info = mutual_distillation(model, public, 10, 8, 0.01, np.random.default_rng(0))
    # Assert: the distilled state is not FedAvg's, and the student moved toward its teacher
    distilled = shared_state(model)
    assert set(distilled) == set(aggregate)
    assert any(not np.array_equal(distilled[k], aggregate[k]) for k in aggregate)
    assert kl_before > 0
    assert _edge_cloud_kl(model, batch) < kl_before
    assert set(info) == {"distill_edge_to_cloud", "distill_cloud_to_edge"}
