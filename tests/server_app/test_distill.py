"""FedCoLLM's student loss: the answer's cross-entropy plus the KL to the other model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server_app.distill import DISTILL_WEIGHT, _student_loss


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
