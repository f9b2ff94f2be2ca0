"""ServerApp of the floor: Flower's FedAvg over echoed arrays, each round timed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    """FedAvg that records each round's seconds, from sending to the aggregate."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds: list[float] = []
        self._started = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Start the round's clock, then FedAvg's sampling and messages."""
        self._started = time.monotonic()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        """FedAvg's aggregate; the round's seconds recorded."""
        out = super().aggregate_train(server_round, replies)
        self.seconds.append(round(time.monotonic() - self._started, 3))
        return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``num-server-rounds`` rounds of echoing ``payload-bytes`` to every node."""
    cfg = context.run_config
    nodes = int(cfg["min-nodes"])
    payload = np.zeros(max(1, int(cfg["payload-bytes"]) // 4), np.float32)
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({"payload": Array(payload)}),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
    )
    if cfg["out-file"]:
        Path(str(cfg["out-file"])).write_text(json.dumps({"rounds": strategy.seconds}))
