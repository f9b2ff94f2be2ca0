"""Server checkpoints: the global state, the cloud model and SE-CCL anchors per round."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.state import State, prefixed, select

if TYPE_CHECKING:
    from server_app.cloud import Cloud
    from server_app.strategy import MlEcsStrategy

CHECKPOINT = "checkpoint.npz"


def save_checkpoint(
    run_dir: Path, server_round: int, strategy: MlEcsStrategy, cloud: Cloud
) -> Path:
    """Write ``<run_dir>/checkpoint.npz`` atomically (temp file + rename)."""
    arrays: dict[str, np.ndarray] = {
        **prefixed(strategy.global_state, "global/"),
        **prefixed(cloud.state(), "cloud/"),
        "anchors/ids": strategy.anchor_ids,
        "anchors/z": strategy.anchors,
    }
    meta = {
        "round": server_round,
        "node_public_ids": {str(k): v.tolist() for k, v in strategy.node_public_ids.items()},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = run_dir / CHECKPOINT
    tmp = run_dir / f".{CHECKPOINT}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], State, State, np.ndarray, np.ndarray]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    meta : dict
        ``round`` and ``node_public_ids``.
    global_state, cloud_state : State
    anchor_ids, anchors : numpy.ndarray
    """
    with np.load(run_dir / CHECKPOINT) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(data.pop("meta").tobytes().decode())
    return (
        meta,
        select(data, "global/"),
        select(data, "cloud/"),
        data["anchors/ids"],
        data["anchors/z"],
    )
