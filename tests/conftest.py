"""Shared fixtures: offline environment, tiny settings, an in-process Flower grid."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = {
    "num-server-rounds": 2,
    "data.max-train-per-client": 24,
    "data.max-test-per-client": 8,
    "data.max-public-train": 48,
    "data.max-public-test": 8,
    "data.public-share-fraction": 0.3,
    "model.tiny.hidden": 32,
    "model.tiny.heads": 2,
    "model.tiny.layers": 1,
    "model.tiny.pretrain-steps": 5,
    "train.batch-size": 8,
    "train.steps": 2,
    "train.max-new-tokens": 3,
    "server.steps": 2,
    "eval.bertscore": False,
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so derived data and backbones are built once."""
    env = os.environ.get("MLECS_TEST_CACHE")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return tmp_path_factory.mktemp("mlecs-cache")


@pytest.fixture
def tiny_config(cache_dir: Path, tmp_path: Path) -> dict:
    """A flat run config small enough for unit tests (seconds per round)."""
    return {**TINY, "cache-dir": str(cache_dir), "output-dir": str(tmp_path / "out")}


from experiments.local_grid import InProcessGrid  # noqa: E402


@pytest.fixture
def grid_factory():
    """Build an :class:`InProcessGrid` for a ClientApp and run config."""
    return InProcessGrid
