"""Tests for device modality sets and per-sample missing modalities."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.availability import client_modalities, restrict, sample_mask
from common.data.samples import ModalitySpec, SampleSet

MODS = ("acc", "gyro")


def _sample_set(n: int = 6) -> SampleSet:
    return SampleSet(
        specs=(
            ModalitySpec("acc", "sensor", (4, 3)),
            ModalitySpec("question", "text"),
        ),
        inputs={
            "acc": np.ones((n, 4, 3), dtype=np.float32),
            "question": np.array([f"q{i}" for i in range(n)], dtype=object),
        },
        mask=np.ones((n, 2), dtype=bool),
        targets=[f"t{i}" for i in range(n)],
        labels=np.arange(n, dtype=np.int64),
        ids=np.arange(100, 100 + n, dtype=np.int64),
    )


def test_full_scenario_gives_every_modality() -> None:
    # Execute
    sets = [client_modalities(MODS, "full", 0.5, p, 4, 0) for p in range(4)]

    # Assert
    assert sets == [MODS] * 4


def test_single_modality_dataset_is_held_by_everyone() -> None:
    sets = [client_modalities(("image",), "mixed", 1.0, p, 5, 3) for p in range(5)]
    assert sets == [("image",)] * 5


def test_mixed_scenario_counts_and_covers_modalities() -> None:
    # Prepare
    n = 10

    # Execute
    sets = [client_modalities(MODS, "mixed", 0.5, p, n, 7) for p in range(n)]

    # Assert: five unimodal devices, both modalities among them, the rest full
    unimodal = [s for s in sets if len(s) == 1]
    assert len(unimodal) == 5
    assert {s[0] for s in unimodal} == set(MODS)
    assert sets.count(MODS) == 5


def test_mixed_scenario_is_deterministic_and_seed_dependent() -> None:
    def draw(seed: int) -> list[tuple[str, ...]]:
        return [client_modalities(MODS, "mixed", 0.5, p, 8, seed) for p in range(8)]

    assert draw(1) == draw(1)
    assert any(draw(s) != draw(1) for s in range(2, 6))


def test_partition_id_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="partition_id 4"):
        client_modalities(MODS, "mixed", 0.5, 4, 4, 0)


def test_sample_mask_is_deterministic_and_respects_held() -> None:
    # Execute
    a = sample_mask(500, ("a", "b", "c"), ("a", "c"), 0.4, np.random.default_rng(3))
    b = sample_mask(500, ("a", "b", "c"), ("a", "c"), 0.4, np.random.default_rng(3))

    # Assert
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 3) and a.dtype == bool
    assert not a[:, 1].any()
    assert a.any(axis=1).all()


def test_sample_mask_honours_missing_rate() -> None:
    # Prepare: two held modalities dropped at 0.3; a sample losing both gets
    # one back, so each is present with probability 0.7 + 0.09 / 2 = 0.745.
    rng = np.random.default_rng(0)

    # Execute
    mask = sample_mask(20_000, MODS, MODS, 0.3, rng)

    # Assert
    np.testing.assert_allclose(mask.mean(axis=0), 0.745, atol=0.015)
    assert mask.any(axis=1).all()


def test_sample_mask_zero_rate_keeps_all_held() -> None:
    mask = sample_mask(50, MODS, ("gyro",), 0.0, np.random.default_rng(0))
    assert mask[:, 1].all() and not mask[:, 0].any()


def test_sample_mask_respects_available() -> None:
    # Prepare: row 0 has only gyro in the data, row 1 nothing the device holds
    available = np.array([[False, True], [False, True], [True, True]])

    # Execute
    mask = sample_mask(3, MODS, ("acc", "gyro"), 0.9, np.random.default_rng(0), available)
    only_acc = sample_mask(3, MODS, ("acc",), 0.0, np.random.default_rng(0), available)

    # Assert
    assert not (mask & ~available).any()
    assert mask.any(axis=1).all()
    np.testing.assert_array_equal(only_acc[:, 0], [False, False, True])


def test_sample_mask_rejects_unknown_or_empty_held() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="audio"):
        sample_mask(3, MODS, ("audio",), 0.1, rng)
    with pytest.raises(ValueError, match="at least one"):
        sample_mask(3, MODS, (), 0.1, rng)


def test_restrict_blanks_missing_inputs_and_keeps_the_original() -> None:
    # Prepare
    samples = _sample_set(200)

    # Execute
    out = restrict(samples, ("acc", "question"), 0.5, np.random.default_rng(1))

    # Assert
    assert len(out) == 200
    acc_missing = ~out.mask[:, 0]
    question_missing = ~out.mask[:, 1]
    assert acc_missing.any() and question_missing.any()
    assert (out.inputs["acc"][acc_missing] == 0).all()
    assert (out.inputs["acc"][~acc_missing] == 1).all()
    assert all(q == "" for q in out.inputs["question"][question_missing])
    assert samples.mask.all() and (samples.inputs["acc"] == 1).all()
    np.testing.assert_array_equal(out.ids, samples.ids)


def test_restrict_to_one_modality_blanks_the_other_entirely() -> None:
    out = restrict(_sample_set(), ("question",), 0.3, np.random.default_rng(0))
    assert (out.inputs["acc"] == 0).all()
    assert out.mask[:, 1].all() and not out.mask[:, 0].any()


def test_restrict_drops_samples_with_nothing_left() -> None:
    # Prepare: sample 2 has no question in the data
    samples = _sample_set(4)
    samples.mask[2, 1] = False

    # Execute
    out = restrict(samples, ("question",), 0.0, np.random.default_rng(0))

    # Assert
    np.testing.assert_array_equal(out.ids, [100, 101, 103])
    assert out.targets == ["t0", "t1", "t3"]
