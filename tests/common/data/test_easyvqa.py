"""Tests for the easy-VQA pool."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from common.settings import ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("easy_vqa") is None, reason="easy-vqa is not installed"
)


def test_pool_shapes_labels_and_images(cache_dir: Path) -> None:
    # Prepare
    import easy_vqa
    from PIL import Image

    from common.data.easyvqa import _SEED_POOL, load_easyvqa

    texts, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()

    # Execute
    pool = load_easyvqa(cache_dir, 300, 0)

    # Assert
    samples = pool.samples
    assert len(samples) == 300
    assert [s.name for s in samples.specs] == ["image", "question"]
    assert samples.inputs["image"].shape == (300, 64, 64, 3)
    assert samples.inputs["question"].dtype == object
    assert list(pool.class_names) == easy_vqa.get_answers()
    assert [pool.class_names[k] for k in samples.labels] == samples.targets
    assert (cache_dir / "easyvqa-train-images-v1.npz").exists()
    # Each sample is question i of the train set with its answer and image,
    # for the same seeded draw as the loader's.
    rng = np.random.default_rng([0, _SEED_POOL])
    chosen = np.sort(rng.choice(len(texts), size=300, replace=False))
    for k in (0, 150, 299):
        i = chosen[k]
        assert samples.inputs["question"][k] == texts[i]
        assert samples.targets[k] == answers[i]
        with Image.open(paths[image_ids[i]]) as image:
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(samples.inputs["image"][k], expected)


def test_pool_is_seeded(cache_dir: Path) -> None:
    from common.data.easyvqa import load_easyvqa

    a, b, c = (load_easyvqa(cache_dir, 200, s) for s in (1, 1, 2))
    assert list(a.samples.inputs["question"]) == list(b.samples.inputs["question"])
    np.testing.assert_array_equal(a.samples.inputs["image"], b.samples.inputs["image"])
    assert a.samples.targets != c.samples.targets


def test_pool_larger_than_the_train_set_is_rejected(cache_dir: Path) -> None:
    from common.data.easyvqa import load_easyvqa

    with pytest.raises(ConfigError, match="pool-size"):
        load_easyvqa(cache_dir, 10**6, 0)


def test_missing_package_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.data.easyvqa import load_easyvqa
    from common.data.samples import DataUnavailableError

    monkeypatch.setitem(sys.modules, "easy_vqa", None)  # makes the import fail
    with pytest.raises(DataUnavailableError, match="pip install easy-vqa"):
        load_easyvqa(tmp_path, 200, 0)
