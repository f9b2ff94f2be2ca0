"""Server checkpoints: everything a resumed run needs, written atomically after every round."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import PRIVATE, read_npz, write_npz
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
    public_ids : dict of int to numpy.ndarray
        Device partition -> the public ids of its share (which anchors it gets).
        Keyed by partition, the device's stable identity: Flower node ids change
        when a run is resumed or a SuperNode restarts.
    """

    server_round: int = 0
    anchor_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    public_ids: dict[int, np.ndarray] = field(default_factory=dict)
    dp_releases: list[int] = field(default_factory=list)  # devices per private release
    refactorised_round: int = 0  # the last round FlexLoRA re-factorised the adapters

    def share_anchors(self, partition: int) -> tuple[np.ndarray, np.ndarray]:
        """The anchor rows of ``partition``'s public ids, or the whole table.

        A device the server has not heard from yet (round 1, a newcomer) gets the
        whole table, as the server does not know its share.
        """
        ids = self.public_ids.get(partition)
        if ids is None:
            return self.anchor_ids, self.anchors
        row = {int(i): r for r, i in enumerate(self.anchor_ids)}
        ids = np.array([i for i in ids if int(i) in row], np.int64)
        return ids, self.anchors[[row[int(i)] for i in ids]]


@dataclass
class Checkpoint:
    """A round's end: the global shared state, the cloud model and the strategy.

    ``cloud_state`` holds the cloud model and its optimiser's moments; ``config``
    the run's resolved run config, so a resume with other settings is refused.
    """

    global_state: State
    cloud_state: State
    strategy: StrategySnapshot
    config: dict = field(default_factory=dict)

    @property
    def server_round(self) -> int:
        return self.strategy.server_round


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``<run_dir>/checkpoint.npz`` atomically (temp file + rename), owner-only (0600)."""
    st = ckpt.strategy
    arrays: dict[str, np.ndarray] = {
        **prefixed(ckpt.global_state, "global/"),
        **prefixed(ckpt.cloud_state, "cloud/"),
        "anchors/ids": st.anchor_ids,
        "anchors/z": st.anchors,
    }
    meta = {
        "round": st.server_round,
        "config": ckpt.config,
        "public_ids": {str(k): v.tolist() for k, v in st.public_ids.items()},
        "dp_releases": list(st.dp_releases),
        "refactorised_round": st.refactorised_round,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_npz(Path(run_dir) / CHECKPOINT, arrays, mode=PRIVATE)


def checkpoint_round(run_dir: Path) -> int | None:
    """The round of ``<run_dir>/checkpoint.npz``, reading only its metadata.

    Returns
    -------
    int or None
        The number of rounds the checkpoint covers; None when there is no
        readable checkpoint (:func:`load_checkpoint` then tells why).
    """
    try:
        with np.load(Path(run_dir) / CHECKPOINT, allow_pickle=False) as data:
            return int(json.loads(data["meta"].tobytes().decode())["round"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable or incomplete; the message names it.
    """
    path = Path(run_dir) / CHECKPOINT
    try:
        data = read_npz(path)
        meta = json.loads(data.pop("meta").tobytes().decode())
        snapshot = StrategySnapshot(
            server_round=int(meta["round"]),
            anchor_ids=data["anchors/ids"],
            anchors=data["anchors/z"],
            public_ids={int(k): np.array(v, np.int64) for k, v in meta["public_ids"].items()},
            dp_releases=[int(n) for n in meta.get("dp_releases", [])],
            refactorised_round=int(meta.get("refactorised_round", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable: {err!r}") from None
    config = meta.get("config", {})
    return Checkpoint(select(data, "global/"), select(data, "cloud/"), snapshot, config)


# Keys a resumed run may change: where it writes, how long it runs, how it is
# evaluated and logged. Every other key must equal the checkpoint's.
RESUMABLE_KEYS = ("resume", "num-server-rounds", "output-dir", "cache-dir", "device")


def check_resumable(ckpt: Checkpoint, config: dict, initial_state: State) -> None:
    """Refuse a checkpoint written under other settings or for other shapes.

    Raises
    ------
    CheckpointError
        Naming the keys that differ, or the first tensor that does not fit.
    """
    differ = sorted(
        k
        for k in set(ckpt.config) | set(config)
        if k not in RESUMABLE_KEYS and ckpt.config.get(k) != config.get(k)
    )
    if ckpt.config and differ:
        shown = ", ".join(f"{k}: {ckpt.config.get(k)!r} -> {config.get(k)!r}" for k in differ[:4])
        raise CheckpointError(f"checkpoint was written with other settings ({shown})")
    if set(ckpt.global_state) != set(initial_state):
        raise CheckpointError("checkpoint's global state has other tensors than this run's model")
    for k, v in initial_state.items():
        if np.asarray(ckpt.global_state[k]).shape != np.asarray(v).shape:
            raise CheckpointError(f"checkpoint tensor '{k}' has another shape than this run's")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from."""
