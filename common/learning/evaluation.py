"""Generation, scoring and fused representations of a trained model (no gradients)."""

from __future__ import annotations

import numpy as np
import torch

from common.data.samples import SampleSet, TaskInfo
from common.learning import metrics
from common.model.multimodal import MultimodalLM
from common.sections import EvalSettings


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


@torch.no_grad()
def rank_predict(
    model: MultimodalLM, data: SampleSet, answers: list[str], batch_size: int
) -> list[str]:
    """For every sample of ``data``, the answer of ``answers`` the model finds likeliest."""
    model.eval()
    out: list[str] = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        scores = model.answer_log_likelihoods(model.make_batch(data, index), answers)
        out.extend(answers[k] for k in scores.argmax(1).tolist())
    return out


def evaluate(
    model: MultimodalLM,
    data: SampleSet,
    task: TaskInfo,
    cfg: EvalSettings,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """Predict for ``data`` and score it (ROUGE-Lsum, BERTScore F1, macro-F1).

    ``cfg.decode`` picks the predictions every metric scores: greedy generation
    (``generate``, and ``both``) or rank classification over the task's class
    names (``rank``); ``both`` adds ``rank_f1``, rank classification's macro-F1.
    A task without class names is always scored on generation.
    """
    ranked = cfg.decode in ("rank", "both") and bool(task.class_names)
    if ranked:
        by_rank = rank_predict(model, data, list(task.class_names), batch_size)
    if ranked and cfg.decode == "rank":
        preds = by_rank
    else:
        preds = predict(model, data, batch_size, max_new_tokens)
    out = metrics.score(
        preds, data.targets, data.labels, task.class_names, cfg.bertscore, cfg.bertscore_model
    )
    if ranked:
        out["rank_f1"] = metrics.macro_f1(by_rank, data.labels, task.class_names)
    out["num_examples"] = float(len(data))
    return out


@torch.no_grad()
def fused_representations(
    model: MultimodalLM,
    data: SampleSet,
    batch_size: int = 128,
    only: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``z`` for every sample, or with only some modalities present.

    Parameters
    ----------
    only : tuple of str, optional
        Mask every other modality out; samples that hold none of ``only`` are left
        out of the result.

    Returns
    -------
    ids : numpy.ndarray
        ``(N,)`` int64 sample ids.
    z : numpy.ndarray
        ``(N, fused_dim)`` float32.
    """
    model.eval()
    keep = None
    if only is not None:
        keep = np.array([m in only for m in model.held])
        cols = [data.modality_names.index(m) for m in model.held]
        data = data.subset(np.flatnonzero(data.mask[:, cols][:, keep].any(1)))
    zs = []
    for start in range(0, len(data), batch_size):
        batch = model.make_batch(data, np.arange(start, min(start + batch_size, len(data))))
        if keep is not None:
            batch.mask = batch.mask & torch.as_tensor(keep, device=batch.mask.device)
        _, z = model.represent(batch)
        zs.append(z.float().cpu().numpy())
    fused_dim = model.connector.to_fused[-1].out_features
    z_all = np.concatenate(zs) if zs else np.zeros((0, fused_dim), np.float32)
    return data.ids.astype(np.int64), z_all
