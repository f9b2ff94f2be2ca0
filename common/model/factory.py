"""Build edge and cloud models from the settings (backbones cached per process)."""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

import torch

from common.cache import cache_root
from common.data.samples import TaskInfo
from common.data.views import task_info
from common.model.backbone import Backbone, build_tiny, load_local
from common.model.encoders import encoder_kind
from common.model.multimodal import MultimodalLM
from common.model.pretrained import converted_dir, is_pretrained
from common.model.sharing import freeze, frozen_copy
from common.sections import ModelSettings, TinyBackboneSettings
from common.settings import RunSettings

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _tiny(
    cfg: TinyBackboneSettings,
    answers: tuple[str, ...],
    texts: tuple[str, ...],
    prompt: str,
    cache: str,
    seed: int,
) -> Backbone:
    base = build_tiny(cfg, list(answers), list(texts), prompt, Path(cache), seed)
    return Backbone(freeze(base.model), base.tokenizer)


@lru_cache(maxsize=2)
def _local(path: str) -> Backbone:
    start = time.perf_counter()
    base = load_local(path)
    logger.info("backbone %s loaded in %.2f s", path, time.perf_counter() - start)
    return Backbone(freeze(base.model), base.tokenizer)


def backbone_for(settings: RunSettings, task: TaskInfo, spec: str) -> Backbone:
    """A model's own copy of the backbone named by ``spec``.

    ``spec`` is ``"tiny"``, a packaged pretrained model (``smollm2-135m``,
    ``gemma3-270m``; converted once into the cache directory) or a local
    Hugging Face directory. The loaded original is cached per process, and every
    copy shares its frozen weights (:func:`~common.model.sharing.frozen_copy`):
    many virtual devices share an actor in simulation, and each adds only its
    own adapters.
    """
    if spec == "tiny":
        cfg = settings.model.tiny
        cache = str(cache_root(settings))
        base = _tiny(cfg, tuple(task.answers), tuple(task.texts), task.prompt, cache, settings.seed)
    elif is_pretrained(spec):
        base = _local(str(converted_dir(spec, cache_root(settings))))
    else:
        base = _local(spec)
    return Backbone(frozen_copy(base.model), base.tokenizer)


def device_torch(settings: RunSettings) -> torch.device:
    """Resolve the ``device`` setting (``auto`` picks CUDA when present)."""
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available")
    return torch.device(settings.device)


def place(settings: RunSettings, model: MultimodalLM) -> MultimodalLM:
    """Move ``model`` to its device; on CUDA it runs in bf16 autocast (``train.autocast``)."""
    dev = device_torch(settings)
    model.autocast = (
        settings.train.autocast and dev.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    return model.to(dev)


def encoder_choices(m: ModelSettings) -> dict[str, tuple[str, ...]]:
    """Modality kind -> the encoder family devices cycle through."""
    return {
        "sensor": m.sensor_encoders,
        "image": m.image_encoders,
        "text": m.text_encoders,
        "vector": ("mlp",),
    }


def edge_model(
    settings: RunSettings, held: tuple[str, ...], slot: int, task: TaskInfo | None = None
) -> MultimodalLM:
    """The model of the device in partition ``slot`` holding modalities ``held``.

    Encoders and the fusion kind cycle through the configured families by ``slot``,
    so devices differ in structure. Initial weights depend on ``(seed, slot)``.
    """
    task = task or task_info(settings)
    m = settings.model
    choices = encoder_choices(m)
    specs = {s.name: s for s in task.specs}
    kinds = {name: encoder_kind(specs[name], choices, slot) for name in held}
    fusion = m.fusions[slot % len(m.fusions)]
    # The backbone first: building or loading it may draw from torch's global RNG,
    # and whether it does depends on this process's history (its caches), so the
    # seed is set after it and the model's own initial weights never depend on it.
    backbone = backbone_for(settings, task, m.backbone)
    torch.manual_seed(settings.seed * 100_003 + slot)
    gated = settings.components.amt and settings.amt.variant == "gate"
    model = MultimodalLM(
        task.specs,
        held,
        kinds,
        fusion,
        m,
        backbone,
        settings.lora,
        task.prompt,
        shared_seed(settings),
        private_adapter=gated,
        gate=gated,
        encoder_rank=shared_encoder_rank(settings),
        encoder_alpha=settings.lora.encoder_alpha,
    )
    return place(settings, model)


def shared_encoder_rank(settings: RunSettings) -> int:
    """Rank of the edge encoders' shared adapters: 0 unless the method shares them."""
    return settings.lora.encoder_rank if settings.components.share_encoders else 0


def reference_edge_model(settings: RunSettings) -> MultimodalLM:
    """An edge model holding every modality: the shapes every device shares."""
    task = task_info(settings)
    return edge_model(settings, tuple(s.name for s in task.specs), slot=0, task=task)


def cloud_model(settings: RunSettings, task: TaskInfo | None = None) -> MultimodalLM:
    """The server's model: every modality, ``server.encoders`` or the first of each family."""
    task = task or task_info(settings)
    m = settings.model
    choices = {**encoder_choices(m), **settings.server.encoder_choices()}
    kinds = {s.name: encoder_kind(s, choices, 0) for s in task.specs}
    spec = m.backbone if settings.server.backbone == "edge" else settings.server.backbone
    backbone = backbone_for(settings, task, spec)  # before seeding: see edge_model
    torch.manual_seed(settings.seed * 100_003 - 1)
    model = MultimodalLM(
        task.specs,
        tuple(kinds),
        kinds,
        m.fusions[0],
        m,
        backbone,
        settings.lora,
        task.prompt,
        shared_seed(settings),
        private_adapter=True,
    )
    return place(settings, model)


def shared_seed(settings: RunSettings) -> int:
    """Seed of the connector parts every device and the server start from alike."""
    return (settings.seed * 1_000_003 + 0x5EED) & 0x7FFFFFFF
