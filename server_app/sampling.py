"""Which connected devices take part in a round, without ever waiting past the round timeout."""

from __future__ import annotations

import random
import time
from logging import INFO, WARNING

from flwr.common import log
from flwr.serverapp import Grid

POLL_SECONDS = 1.0


def sample_devices(
    grid: Grid,
    fraction: float,
    min_nodes: int,
    timeout: float,
    server_round: int,
    what: str = "training",
    seed: int = 0,
) -> list[int]:
    """Sample ``fraction`` of the connected nodes, once at least ``min_nodes`` are connected.

    Unlike FedAvg's sampling, which waits for the minimum forever, this waits at
    most ``timeout`` seconds; with fewer than ``min_nodes`` connected by then, the
    round's ``what`` is skipped (an empty list, and a log line saying why).

    Parameters
    ----------
    grid : Grid
        Where the connected node ids come from.
    fraction : float
        Share of the connected nodes to sample (at least ``min_nodes`` of them).
    min_nodes : int
        Below this many connected nodes the round is skipped.
    timeout : float
        Seconds to wait for ``min_nodes`` to connect.
    seed : int
        The run's seed: the sample depends only on it, the round and ``what`` (no
        global RNG), so a resumed run samples as the uninterrupted one would.

    Returns
    -------
    list of int
        Sampled node ids, sorted.
    """
    nodes = _wait_for(grid, min_nodes, time.monotonic() + timeout, server_round)
    if len(nodes) < min_nodes:
        log(
            WARNING,
            "round %s: %s skipped: %d nodes connected after %.0f s (strategy.min-nodes = %d)",
            server_round,
            what,
            len(nodes),
            timeout,
            min_nodes,
        )
        return []
    size = min(len(nodes), max(int(len(nodes) * fraction), min_nodes))
    return sorted(random.Random(f"{seed}:{server_round}:{what}").sample(nodes, size))


def _wait_for(grid: Grid, min_nodes: int, deadline: float, server_round: int) -> list[int]:
    """The connected node ids, sorted, once ``min_nodes`` are connected or at ``deadline``."""
    nodes = sorted(grid.get_node_ids())
    waited = False
    while len(nodes) < min_nodes and time.monotonic() < deadline:
        if not waited:
            log(
                INFO,
                "round %s: %d of %d nodes connected, waiting",
                server_round,
                len(nodes),
                min_nodes,
            )
            waited = True
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        nodes = sorted(grid.get_node_ids())
    return nodes
