"""Stand-ins for the strategy's collaborators: a cloud that records, a grid of node ids."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from common.data.samples import ModalitySpec

MODS = ("acc", "gyro")
PUBLIC = (100, 101, 102, 103)
FUSED = 4


class FakeCloud:
    """What the strategy needs of the cloud; records the consensus it is trained toward."""

    def __init__(self) -> None:
        self.task = SimpleNamespace(specs=tuple(ModalitySpec(m, "sensor", (8, 3)) for m in MODS))
        self.public_ids = set(PUBLIC)
        self.loaded: dict = {}
        self.consensus = None

    def load_global(self, state):
        self.loaded = state

    def step(self, ids, z, server_round):
        self.consensus = (ids, z)
        return {"server_loss": 0.5}

    def representations(self):
        ids = np.array(PUBLIC, np.int64)
        return ids, np.arange(len(ids) * FUSED, dtype=np.float32).reshape(-1, FUSED)

    def prototypes(self, ids, z):
        assert np.array_equal(ids, self.representations()[0])  # from the anchor table
        return np.array([0, 2, 5], np.int64), np.eye(3, FUSED, dtype=np.float32)

    def modality_prototypes(self, classes, prototypes):
        return {(m,): prototypes + k + 1 for k, m in enumerate(MODS)}


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)
