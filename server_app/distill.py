"""FedCoLLM-style mutual distillation between the aggregated edge model and the cloud model.

After the edge adapters are averaged, the server distils on its public data in
both directions (Fan et al., FedCoLLM, 2024, in spirit): the cloud's own LoRA
learns from the aggregated edge model's token distribution, and the aggregated
edge adapters learn from the cloud's, before they go back to the devices. Both
decoders read the same fused representation (the cloud's ``z^s``): the edge one
is the backbone with the shared adapters only, the cloud one adds its own LoRA.
Each student's loss is FedCoLLM's: the cross-entropy of the public sample's answer
plus ``DISTILL_WEIGHT`` x the KL to the other model (as FATE-LLM's FedCoLLM trainer,
``lm_loss + distill_lambda * kl_loss`` with lambda 1). Without the cross-entropy,
the cloud only imitates an edge aggregate that was trained on other encoders, and
on HAPT it lost a quarter of its macro-F1 to the cloud trained on public data alone.
Simplification: the edge model is the shared decoder on the cloud's encoders
(the server has no device encoders), and both sides must share the backbone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.data.samples import SampleSet
from common.model.adapters import PRIVATE, SHARED, adapter_parameters
from common.model.multimodal import Batch, MultimodalLM

DISTILL_WEIGHT = 1.0  # FedCoLLM's lambda: loss = CE(answer) + lambda * KL(teacher || student)


def _kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) over the masked target positions."""
    t = F.log_softmax(teacher.detach(), -1)
    s = F.log_softmax(student, -1)
    kl = (t.exp() * (t - s)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def _student_loss(
    logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE of the answer + ``DISTILL_WEIGHT`` x KL to the teacher; returns (loss, KL).

    ``logits``, ``teacher``: ``(B, T, V)``; ``target``: ``(B, T)`` with -100 at padding,
    where neither term counts.
    """
    kl = _kl(logits, teacher, target != -100)
    ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100)
    return ce + DISTILL_WEIGHT * kl, kl


def mutual_distillation(
    model: MultimodalLM,
    data: SampleSet,
    steps: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Distil edge -> cloud (the cloud's LoRA) and cloud -> edge (the shared adapters).

    Updates ``model`` in place: its shared adapters (backbone LoRA and prompt
    adapter) and its own LoRA. Returns the mean of both KL terms.

    ``data`` must hold answers (the public data is labelled): each student also
    learns them, as in FedCoLLM.
    """
    shared = [*adapter_parameters(model.lm, SHARED), *model.connector.shared_parameters()]
    own = adapter_parameters(model.lm, PRIVATE)
    edge_side = (shared, torch.optim.AdamW(shared, lr=lr))
    cloud_side = (own, torch.optim.AdamW(own, lr=lr))
    sums = {"distill_edge_to_cloud": 0.0, "distill_cloud_to_edge": 0.0}
    model.train()
    for p in [*shared, *own]:
        p.requires_grad_(True)
    try:
        for _ in range(steps):
            index = rng.choice(len(data), size=min(batch_size, len(data)), replace=False)
            batch = model.make_batch(data, index)
            to_cloud, to_edge = _distill_step(model, batch, edge_side, cloud_side)
            sums["distill_edge_to_cloud"] += to_cloud / steps
            sums["distill_cloud_to_edge"] += to_edge / steps
    finally:
        model.lm.base_model.set_adapter([SHARED, PRIVATE])
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
    return sums


def _distill_step(
    model: MultimodalLM,
    batch: Batch,
    edge_side: tuple[list[torch.nn.Parameter], torch.optim.Optimizer],
    cloud_side: tuple[list[torch.nn.Parameter], torch.optim.Optimizer],
) -> tuple[float, float]:
    """One step of both students on ``batch``; the KL terms edge -> cloud, cloud -> edge.

    Each side is its parameters and their optimiser: the edge side the shared
    adapters, the cloud side the cloud's own LoRA.
    """
    (shared, opt_edge), (own, opt_cloud) = edge_side, cloud_side
    edge, cloud = edge_and_cloud_logits(model, batch)
    loss_cloud, to_cloud = _student_loss(cloud, edge, batch.target_ids)
    loss_edge, to_edge = _student_loss(edge, cloud, batch.target_ids)
    opt_cloud.zero_grad(set_to_none=True)
    opt_edge.zero_grad(set_to_none=True)
    # Each student learns only from its own loss (the teacher's side is detached).
    grads = torch.autograd.grad(loss_cloud, own, retain_graph=True, allow_unused=True)
    for p, g in zip(own, grads):
        p.grad = g
    grads = torch.autograd.grad(loss_edge, shared, allow_unused=True)
    for p, g in zip(shared, grads):
        p.grad = g
    opt_cloud.step()
    opt_edge.step()
    return float(to_cloud.detach()), float(to_edge.detach())


def edge_and_cloud_logits(model: MultimodalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer-token logits ``(B, T, V)`` of the edge model (shared adapters) and the cloud.

    The fused ``z`` is computed without gradients (distillation trains the
    adapters only); the model is left with both adapters active.
    """
    base = model.lm.base_model
    with torch.no_grad():
        _, z = model.represent(batch)
    base.set_adapter([SHARED])
    edge, _ = model.target_logits(batch, z)
    base.set_adapter([SHARED, PRIVATE])
    cloud, _ = model.target_logits(batch, z)
    return edge, cloud
