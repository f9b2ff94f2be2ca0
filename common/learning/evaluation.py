"""Generation, scoring and fused representations of a trained model (no gradients)."""

from __future__ import annotations

import numpy as np
import torch

from common.data.samples import SampleSet, TaskInfo
from common.learning import metrics
from common.model.multimodal import MultimodalLM
from common.settings import EvalSettings


@torch.no_grad()
def predict(
    model: MultimodalLM, data: SampleSet, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Generated text for every sample of ``data``."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        out.extend(model.generate(model.make_batch(data, index), max_new_tokens))
    return out


def evaluate(
    model: MultimodalLM,
    data: SampleSet,
    task: TaskInfo,
    cfg: EvalSettings,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """Generate for ``data`` and score it (ROUGE-Lsum, BERTScore F1, macro-F1)."""
    preds = predict(model, data, batch_size, max_new_tokens)
    out = metrics.score(
        preds, data.targets, data.labels, task.class_names, cfg.bertscore, cfg.bertscore_model
    )
    out["num_examples"] = float(len(data))
    return out


@torch.no_grad()
def fused_representations(
    model: MultimodalLM, data: SampleSet, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``z`` for every sample.

    Returns
    -------
    ids : numpy.ndarray
        ``(N,)`` int64 sample ids.
    z : numpy.ndarray
        ``(N, fused_dim)`` float32.
    """
    model.eval()
    zs = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        _, z = model.represent(model.make_batch(data, index))
        zs.append(z.float().cpu().numpy())
    fused_dim = model.connector.to_fused[-1].out_features
    z_all = np.concatenate(zs) if zs else np.zeros((0, fused_dim), np.float32)
    return data.ids.astype(np.int64), z_all
