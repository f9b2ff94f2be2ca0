"""Server checkpoints: everything a resumed run needs, written atomically after every round."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import read_npz, write_npz
from common.state import State, prefixed, select

CHECKPOINT = "checkpoint.npz"


@dataclass
class StrategySnapshot:
    """The strategy's state between rounds (its global arrays travel separately).

    Attributes
    ----------
    server_round : int
        Rounds completed.
    anchor_ids, anchors : numpy.ndarray
        ``(N,)`` public ids and ``(N, F)`` the cloud's ``z^s`` sent as SE-CCL anchors.
    node_public_ids : dict of int to numpy.ndarray
        Node id -> the public ids that device trained on (which anchors it gets).
    """

    server_round: int = 0
    anchor_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    node_public_ids: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A round's end: the global shared state, the cloud model and the strategy."""

    global_state: State
    cloud_state: State
    strategy: StrategySnapshot

    @property
    def server_round(self) -> int:
        return self.strategy.server_round


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``<run_dir>/checkpoint.npz`` atomically (temp file + rename)."""
    st = ckpt.strategy
    arrays: dict[str, np.ndarray] = {
        **prefixed(ckpt.global_state, "global/"),
        **prefixed(ckpt.cloud_state, "cloud/"),
        "anchors/ids": st.anchor_ids,
        "anchors/z": st.anchors,
    }
    meta = {
        "round": st.server_round,
        "node_public_ids": {str(k): v.tolist() for k, v in st.node_public_ids.items()},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_npz(Path(run_dir) / CHECKPOINT, arrays)


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    data = read_npz(Path(run_dir) / CHECKPOINT)
    meta = json.loads(data.pop("meta").tobytes().decode())
    snapshot = StrategySnapshot(
        server_round=int(meta["round"]),
        anchor_ids=data["anchors/ids"],
        anchors=data["anchors/z"],
        node_public_ids={int(k): np.array(v, np.int64) for k, v in meta["node_public_ids"].items()},
    )
    return Checkpoint(select(data, "global/"), select(data, "cloud/"), snapshot)
