"""Shared fixtures: offline environment, tiny settings, an in-process Flower grid."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterable  # noqa: E402
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
    "train.max-steps": 2,
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


class InProcessGrid:
    """A Flower ``Grid`` that calls the ClientApp in-process (no Ray, no network).

    ``flwr.supercore.task_identity.TaskIdentity`` is private API that Flower 1.42
    requires before a ``Message`` can be built outside a Flower process.
    """

    def __init__(self, client_app, run_config: dict, num_nodes: int, node_configs=None):
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.client_app = client_app
        self.nodes = list(range(101, 101 + num_nodes))
        configs = node_configs or [
            {"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)
        ]
        self.contexts = {
            n: Context(1, n, cfg, RecordDict(), dict(run_config))
            for n, cfg in zip(self.nodes, configs)
        }
        self.intercept = None  # optional callable(reply) -> reply, to tamper in tests

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as err:  # a ClientApp failure becomes an error reply
                reply = Message(Error(code=2, reason=repr(err)), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            if self.intercept is not None:
                reply = self.intercept(reply)
            replies.append(reply)
        return replies


@pytest.fixture
def grid_factory():
    """Build an :class:`InProcessGrid` for a ClientApp and run config."""
    return InProcessGrid
