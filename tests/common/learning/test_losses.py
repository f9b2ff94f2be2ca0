"""Extra loss terms: an anchor term moved onto unlabelled samples (on_unlabelled)."""

from __future__ import annotations

import numpy as np
import torch

from common.data.views import build_client_data
from common.learning.losses import anchor_term, on_unlabelled
from common.model.factory import edge_model
from common.settings import RunSettings


def test_on_unlabelled_applies_the_term_to_a_batch_of_its_own_samples(tiny_config: dict):
    settings = RunSettings.from_run_config(tiny_config)
    data = build_client_data(settings, 0, 2)
    model = edge_model(settings, data.modalities, 0)
    seen: list[np.ndarray] = []

    def term(batch, e, z):
        seen.append(np.asarray(batch.ids))
        return z.pow(2).mean()

    wrapped = on_unlabelled(term, model, data.public, 4, np.random.default_rng(0))
    train = model.make_batch(data.train, np.arange(3))
    e, z = model.represent(train)
    value = wrapped(train, e, z)
    assert value is not None and value.requires_grad
    assert len(seen[0]) == 4 and set(seen[0]) <= set(data.public.ids.tolist())
    assert not set(seen[0]) & set(data.train.ids.tolist())


def test_anchor_term_on_unlabelled_pulls_their_z_to_the_anchors(tiny_config: dict):
    settings = RunSettings.from_run_config(tiny_config)
    data = build_client_data(settings, 0, 2)
    model = edge_model(settings, data.modalities, 0)
    ids = data.public.ids
    anchors = np.random.default_rng(1).normal(size=(len(ids), settings.model.fused_dim))
    term = anchor_term(ids, anchors.astype(np.float32), 1.0, settings.ccl)
    wrapped = on_unlabelled(term, model, data.public, 8, np.random.default_rng(0))
    # the training batch holds no anchored sample: the plain term has nothing to act on
    train = model.make_batch(data.train, np.arange(4))
    e, z = model.represent(train)
    assert term(train, e, z) is None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(15):
        loss = wrapped(train, e, z)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
