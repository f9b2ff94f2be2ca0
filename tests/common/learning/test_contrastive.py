"""GRAM volume and volume-InfoNCE properties."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.learning.contrastive import ccl_loss, gram_volume, volume_infonce


def test_volume_orthogonal_is_one_parallel_is_near_zero():
    assert torch.allclose(gram_volume(torch.eye(3)[None]), torch.ones(1), atol=1e-5)
    v = F.normalize(torch.ones(1, 3, 4), dim=-1)
    assert gram_volume(v).item() < 1e-2


def test_volume_matches_sine_for_two_vectors():
    theta = torch.tensor(0.7)
    a = torch.tensor([1.0, 0.0])
    b = torch.stack([torch.cos(theta), torch.sin(theta)])
    vol = gram_volume(torch.stack([a, b])[None])
    assert torch.allclose(vol, torch.sin(theta).reshape(1), atol=1e-4)


def test_masked_vector_takes_no_part():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(5, 3, 8), dim=-1)
    mask = torch.tensor([[True, True, False]] * 5)
    other = v.clone()
    other[:, 2] = F.normalize(torch.randn(5, 8), dim=-1)
    assert torch.allclose(gram_volume(v, mask), gram_volume(other, mask))
    assert torch.allclose(gram_volume(v, mask), gram_volume(v[:, :2]), atol=1e-5)


def test_infonce_is_symmetric_and_lower_for_aligned_pairs():
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    aligned = volume_infonce(a, (a + 0.01 * torch.randn(8, 16)).unsqueeze(1))
    random = volume_infonce(a, torch.randn(8, 1, 16))
    assert aligned < random
    b = torch.randn(8, 16)
    assert torch.allclose(
        volume_infonce(a, b.unsqueeze(1)), volume_infonce(b, a.unsqueeze(1)), atol=1e-5
    )


def test_ccl_gradients_finite_even_for_parallel_vectors():
    e = torch.ones(4, 2, 8, requires_grad=True)
    loss = ccl_loss(e, torch.ones(4, 2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(e.grad).all()


def test_ccl_ignores_masked_modalities_and_single_modality_samples():
    torch.manual_seed(1)
    e = torch.randn(6, 3, 8)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 1]]).bool()
    changed = e.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8)
    assert torch.allclose(ccl_loss(e, mask), ccl_loss(changed, mask))
    # Rows 4 and 5 hold one modality: dropping them changes nothing.
    assert torch.allclose(ccl_loss(e, mask), ccl_loss(e[:4], mask[:4]))
    # Nobody with two modalities: zero loss.
    assert ccl_loss(e, torch.eye(3, dtype=torch.bool)[[0, 1, 2, 0, 1, 2]]).item() == 0.0


def test_ccl_is_invariant_to_modality_order():
    torch.manual_seed(2)
    e = torch.randn(8, 3, 8)
    mask = torch.rand(8, 3) > 0.3
    perm = [2, 0, 1]
    assert torch.allclose(ccl_loss(e, mask), ccl_loss(e[:, perm], mask[:, perm]), atol=1e-5)
