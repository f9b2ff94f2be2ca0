"""Node sampling depends on the seed and the round only, never on a global RNG."""

from __future__ import annotations

import random

from server_app.sampling import sample_devices


class Nodes:
    def __init__(self, ids):
        self.ids = ids

    def get_node_ids(self):
        return list(self.ids)


def test_the_sample_is_fixed_by_seed_and_round():
    grid = Nodes(range(100, 120))
    first = sample_devices(grid, 0.5, 2, 1.0, server_round=3, seed=7)
    random.seed(12345)  # a resumed process starts with another global RNG state
    random.random()
    again = sample_devices(Nodes(reversed(range(100, 120))), 0.5, 2, 1.0, server_round=3, seed=7)
    assert first == again and len(first) == 10 and first == sorted(first)
    others = {tuple(sample_devices(grid, 0.5, 2, 1.0, server_round=r, seed=7)) for r in range(6)}
    assert len(others) > 1  # rounds draw different samples
    assert sample_devices(grid, 0.5, 2, 1.0, server_round=3, seed=8) != first


def test_too_few_nodes_skip_the_round_after_the_timeout():
    assert sample_devices(Nodes([1]), 1.0, 2, 0.05, server_round=1) == []
