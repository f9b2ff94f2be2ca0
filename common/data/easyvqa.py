"""easy-VQA: a seeded pool of (image, question) -> answer samples."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from common.atomic import write_npz
from common.data.samples import DataPool, DataUnavailableError, ModalitySpec, SampleSet
from common.settings import ConfigError

PACKAGE = "easy-vqa"
IMAGE_SHAPE = (64, 64, 3)
_SEED_POOL = 0x565141  # purpose constant: the pool draw is independent of splits
_CACHE_VERSION = 1


def load_easyvqa(cache_dir: Path, pool_size: int, seed: int) -> DataPool:
    """Draw ``pool_size`` train questions (seeded) with their images.

    Modalities are ``image`` ``(64, 64, 3)`` (held as uint8 in the pool) and
    ``question`` (text); the target is the answer and the label its index in
    the package's 13 answers. Sample ids are indices into the pool, whose
    order follows the package's train list.

    Parameters
    ----------
    cache_dir : pathlib.Path
        Directory for the decoded train images (decoding the 4,000 PNGs takes
        about a second; the npz loads in a fraction of that).
    pool_size : int
        Number of questions to draw, without replacement.
    seed : int
        Run seed.

    Returns
    -------
    DataPool
        Without groups or fixed splits: devices get a Dirichlet split.

    Raises
    ------
    DataUnavailableError
        If the ``easy-vqa`` package is not installed.
    ConfigError
        If ``pool_size`` exceeds the number of train questions.
    """
    easy_vqa = _import_package()
    texts, answers, image_ids = easy_vqa.get_train_questions()
    if pool_size > len(texts):
        raise ConfigError(
            f"config key 'data.easyvqa.pool-size' = {pool_size}: easy-VQA has only "
            f"{len(texts)} train questions"
        )
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, _SEED_POOL])
    chosen = np.sort(rng.choice(len(texts), size=pool_size, replace=False)).tolist()
    answer_names = list(easy_vqa.get_answers())
    image_index, images = _train_images(Path(cache_dir), easy_vqa)
    rows = np.searchsorted(image_index, [image_ids[i] for i in chosen])
    n = len(chosen)
    samples = SampleSet(
        specs=(
            ModalitySpec("image", "image", IMAGE_SHAPE),
            ModalitySpec("question", "text"),
        ),
        inputs={
            "image": images[rows],
            "question": np.array([texts[i] for i in chosen], dtype=object),
        },
        mask=np.ones((n, 2), dtype=bool),
        targets=[answers[i] for i in chosen],
        labels=np.array([answer_names.index(answers[i]) for i in chosen]),
        ids=np.arange(n, dtype=np.int64),
    )
    return DataPool(
        samples=samples,
        class_names=tuple(answer_names),
        groups=None,
        public=None,
        splits=np.zeros(n, dtype=np.int8),
    )


def _train_images(cache_dir: Path, easy_vqa: ModuleType) -> tuple[np.ndarray, np.ndarray]:
    """Return all train images: sorted ``(I,)`` ids, ``(I, 64, 64, 3)`` uint8."""
    path = cache_dir / f"easyvqa-train-images-v{_CACHE_VERSION}.npz"
    if path.exists():
        with np.load(path) as cached:
            return cached["ids"], cached["images"]
    paths = easy_vqa.get_train_image_paths()
    ids = np.array(sorted(paths))
    images = np.stack([_decode(paths[i]) for i in ids.tolist()])
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataUnavailableError(f"unexpected easy-VQA image shape {images.shape}")
    write_npz(path, {"ids": ids, "images": images}, compressed=True)
    return ids, images


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _import_package() -> ModuleType:
    try:
        import easy_vqa
    except ImportError as err:
        raise DataUnavailableError(
            f"easy-VQA needs the PyPI package '{PACKAGE}': pip install {PACKAGE}==1.0"
        ) from err
    return easy_vqa
