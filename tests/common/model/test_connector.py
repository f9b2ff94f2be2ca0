"""Mask-aware fusion: absent modalities never influence the fused representation."""

from __future__ import annotations

import pytest
import torch

from common.model.connector import FUSION_CLASSES, Connector, masked_mean


@pytest.mark.parametrize("kind", sorted(FUSION_CLASSES))
def test_fusion_ignores_absent_modalities_under_every_mask(kind: str):
    torch.manual_seed(0)
    fusion = FUSION_CLASSES[kind](16)
    masks = [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1) if a + b + c > 0]
    mask = torch.tensor(masks).bool()  # every non-empty mask over 3 modalities
    e = torch.randn(len(masks), 3, 16)
    noisy = e.clone()
    noisy[~mask] = 100 * torch.randn(int((~mask).sum()), 16)
    assert torch.allclose(fusion(e, mask), fusion(noisy, mask), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(FUSION_CLASSES))
def test_single_present_modality_passes_through(kind: str):
    fusion = FUSION_CLASSES[kind](8)
    e = torch.randn(2, 2, 8)
    mask = torch.tensor([[True, False], [False, True]])
    out = fusion(e, mask)
    assert torch.allclose(out[0], e[0, 0], atol=1e-5) and torch.allclose(out[1], e[1, 1], atol=1e-5)


def test_masked_mean_and_empty_rows():
    e = torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]]])
    mask = torch.tensor([[True, True], [False, False]])
    assert masked_mean(e, mask).tolist() == [[2.0], [0.0]]
    assert torch.isfinite(FUSION_CLASSES["attention"](1)(e, mask)).all()


def test_connector_shapes():
    c = Connector(("a", "b"), 12, 8, 256, "gated", 4, 32)
    e = c.embed({"a": torch.randn(3, 12), "b": torch.randn(3, 12)})
    z = c.fuse(e, torch.ones(3, 2, dtype=torch.bool))
    assert e.shape == (3, 2, 8) and z.shape == (3, 256) and c.prompt(z).shape == (3, 4, 32)
