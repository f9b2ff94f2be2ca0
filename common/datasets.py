"""Data entry points: task facts, per-device data and the server's public data."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.availability import client_modalities, restrict
from common.samples import ClientData, SampleSet, ServerData, TaskInfo
from common.settings import (
    ConfigError,
    EasyVqaSettings,
    ManifestSettings,
    RunSettings,
)

PROMPTS = {
    "hapt": "Which activity is this?",
    "easyvqa": "Answer the question about the image.",
}

# Purpose constants mixed into seeds: each draw has its own independent stream.
_SEED_PUBLIC_USERS = 1
_SEED_USER_ORDER = 2
_SEED_PUBLIC_POOL = 3
_SEED_DIRICHLET = 4
_SEED_PUBLIC_SPLIT = 5
_SEED_CLIENT_SPLIT = 6
_SEED_CAP = 7
_SEED_SHARE = 8
_SEED_MASK = 9
_MIN_PER_CLIENT = 8  # Dirichlet split: fewer samples leave no useful train/test
_APP_DIR = Path(__file__).resolve().parents[1]


class DataUnavailableError(RuntimeError):
    """A dataset's source (a pip package or a file) is not installed."""


@dataclass(frozen=True)
class DataPool:
    """Every sample of a dataset, plus what its public/private split needs.

    Attributes
    ----------
    samples : SampleSet
        All ``N`` samples, ids unique. Images may be uint8 to save memory; they
        leave this module as float32 in [0, 1].
    class_names : tuple of str
        Label index -> class text.
    groups : numpy.ndarray or None
        ``(N,)`` natural device key per sample (HAPT user, manifest client),
        or None for a Dirichlet split.
    public : numpy.ndarray or None
        ``(N,)`` bool, samples the data itself marks public, or None for a
        seeded public fraction.
    splits : numpy.ndarray
        ``(N,)`` int8, 0 = free, 1 = train, 2 = test (fixed by the data).
    """

    samples: SampleSet
    class_names: tuple[str, ...]
    groups: np.ndarray | None
    public: np.ndarray | None
    splits: np.ndarray


def cache_root(settings: RunSettings) -> Path:
    """Return the directory for derived data, creating it if needed.

    ``settings.cache_dir``, else ``$MLECS_CACHE_DIR``, else
    ``~/.cache/mlecs-flower``. It must lie outside the app directory, which
    Flower packages and ships to every node.
    """
    raw = settings.cache_dir or os.environ.get("MLECS_CACHE_DIR", "")
    path = Path(raw or "~/.cache/mlecs-flower").expanduser().resolve()
    if path == _APP_DIR or _APP_DIR in path.parents:
        raise ConfigError(
            f"cache directory '{path}' (config key 'cache-dir' or $MLECS_CACHE_DIR) "
            f"lies inside the app directory {_APP_DIR}; choose one outside it"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed npz so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def task_info(settings: RunSettings) -> TaskInfo:
    """Return the dataset-level facts: modalities, prompt, classes, corpus.

    ``corpus`` holds the prompt, every distinct target text and every distinct
    text input (the easy-VQA questions), for training a tokenizer.
    """
    pool = _pool(settings)
    prompt = PROMPTS.get(settings.dataset, settings.data.manifest.prompt)
    texts = [prompt, *pool.samples.targets]
    for spec in pool.samples.specs:
        if spec.kind == "text":
            texts.extend(str(t) for t in pool.samples.inputs[spec.name])
    return TaskInfo(
        name=settings.dataset,
        specs=pool.samples.specs,
        prompt=prompt,
        class_names=list(pool.class_names),
        corpus=[t for t in dict.fromkeys(texts) if t],
    )


def build_client_data(
    settings: RunSettings,
    partition_id: int,
    num_partitions: int,
    modalities: tuple[str, ...] | str | None = None,
) -> ClientData:
    """Return the private train/test data and public share of one device.

    Parameters
    ----------
    settings : RunSettings
        Run settings; the same settings always give the same arrays.
    partition_id, num_partitions : int
        This device and the number of devices.
    modalities : tuple of str or str, optional
        The device's modality set (a comma-separated string also works, as
        node configs hold scalars); by default drawn by
        `common.availability.client_modalities` from ``settings.modality``.

    Returns
    -------
    ClientData
        ``train`` / ``test`` capped at ``data.max-train-per-client`` /
        ``data.max-test-per-client``; ``public`` a seeded
        ``data.public-share-fraction`` of the server's ``public_train`` with the
        same ids. All three restricted to the device's modalities, each sample
        missing a held modality with probability ``modality.missing-rate``.

    Raises
    ------
    ConfigError
        On an unknown modality name, a partition id out of range, or more
        partitions than the data can serve.
    """
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition-id {partition_id} not in [0, {num_partitions})")
    pool = _pool(settings)
    names = pool.samples.modality_names
    if modalities is None:
        m = settings.modality
        held = client_modalities(
            names,
            m.scenario,
            m.unimodal_fraction,
            partition_id,
            num_partitions,
            settings.seed,
        )
    else:
        if isinstance(modalities, str):
            modalities = tuple(x.strip() for x in modalities.split(",") if x.strip())
        unknown = [x for x in modalities if x not in names]
        if unknown or not modalities:
            raise ConfigError(
                f"unknown modalities {unknown} for dataset '{settings.dataset}', "
                f"expected a non-empty subset of {list(names)}"
            )
        held = tuple(n for n in names if n in modalities)
    data, seed = settings.data, settings.seed
    own = _partition(settings, num_partitions)[partition_id]
    train, test = _train_test(
        own,
        pool.splits,
        data.test_fraction,
        _rng(seed, _SEED_CLIENT_SPLIT, partition_id),
    )
    train = _cap(train, data.max_train_per_client, _rng(seed, _SEED_CAP, partition_id, 0))
    test = _cap(test, data.max_test_per_client, _rng(seed, _SEED_CAP, partition_id, 1))
    public = _public_split(settings)[0]
    share_rng = _rng(seed, _SEED_SHARE, partition_id)
    size = max(1, round(data.public_share_fraction * len(public)))
    share = np.sort(share_rng.choice(public, size=size, replace=False))

    def view(index: np.ndarray, part: int) -> SampleSet:
        rng = _rng(seed, _SEED_MASK, partition_id, part)
        rate = settings.modality.missing_rate
        return _finalise(restrict(pool.samples.subset(index), held, rate, rng))

    return ClientData(
        modalities=held, train=view(train, 0), test=view(test, 1), public=view(share, 2)
    )


def build_server_data(settings: RunSettings) -> ServerData:
    """Return the public data with every modality, split into train and test.

    The split uses ``data.test-fraction`` and the caps ``data.max-public-train``
    / ``data.max-public-test``; it does not depend on the number of devices.
    Sample ids are indices into the dataset pool, the same ids devices see.
    """
    pool = _pool(settings)
    public_train, public_test = _public_split(settings)
    return ServerData(
        public_train=_finalise(pool.samples.subset(public_train)),
        public_test=_finalise(pool.samples.subset(public_test)),
    )


def _pool(settings: RunSettings) -> DataPool:
    root = str(cache_root(settings))
    if settings.dataset == "hapt":
        h = settings.data.hapt
        return _load_pool("hapt", root, (h.window, h.stride, h.include_transitions))
    if settings.dataset == "easyvqa":
        params = (settings.data.easyvqa.pool_size, settings.seed)
        return _load_pool("easyvqa", root, params)
    path = settings.data.manifest.path
    if not path:
        raise ConfigError("dataset 'manifest' needs config key 'data.manifest.path'")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(f"config key 'data.manifest.path': no file at '{resolved}'")
    # The modification time in the key makes an edited manifest reload.
    return _load_pool("manifest", root, (str(resolved), resolved.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_pool(dataset: str, root: str, params: tuple) -> DataPool:
    """Load a dataset once per process; many virtual clients share it."""
    # Loaders are imported here: they import DataPool from this module, and
    # the manifest loader pulls in the slow `datasets` library.
    if dataset == "hapt":
        from common.hapt import load_hapt_pool

        return load_hapt_pool(Path(root), *params)
    if dataset == "easyvqa":
        from common.easyvqa import load_easyvqa

        return load_easyvqa(Path(root), *params)
    from common.manifest import load_manifest

    return load_manifest(Path(params[0]), Path(root))


@functools.lru_cache(maxsize=8)
def _layout(settings: RunSettings) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Split the pool into public indices, private indices and device groups.

    The groups are the natural per-device split (HAPT users, manifest
    clients) in device order, or empty when the private data has none.
    """
    pool, seed = _pool(settings), settings.seed
    n = len(pool.samples)
    if settings.dataset == "hapt":
        users = np.unique(pool.groups)
        count = settings.data.hapt.public_users
        public_users = _rng(seed, _SEED_PUBLIC_USERS).choice(users, count, False)
        public = np.flatnonzero(np.isin(pool.groups, public_users))
    elif pool.public is not None and pool.public.any():
        public = np.flatnonzero(pool.public)
    else:
        size = min(n - 1, max(1, round(_split_settings(settings).public_fraction * n)))
        public = np.sort(_rng(seed, _SEED_PUBLIC_POOL).choice(n, size, replace=False))
    private = np.setdiff1d(np.arange(n), public)
    if pool.groups is None:
        return public, private, []
    keys = sorted(set(pool.groups[private].tolist()), key=lambda k: (str(type(k)), k))
    if settings.dataset == "hapt":  # devices take the users in a seeded order
        keys = _rng(seed, _SEED_USER_ORDER).permutation(keys).tolist()
    return public, private, [private[pool.groups[private] == k] for k in keys]


@functools.lru_cache(maxsize=8)
def _public_split(settings: RunSettings) -> tuple[np.ndarray, np.ndarray]:
    """Return the server's capped public ``(train, test)`` pool indices."""
    public = _layout(settings)[0]
    data, seed = settings.data, settings.seed
    rng = _rng(seed, _SEED_PUBLIC_SPLIT)
    train, test = _train_test(public, _pool(settings).splits, data.test_fraction, rng)
    train = _cap(train, data.max_public_train, rng)
    return train, _cap(test, data.max_public_test, rng)


@functools.lru_cache(maxsize=8)
def _partition(settings: RunSettings, num_partitions: int) -> list[np.ndarray]:
    """Return each device's private pool indices: natural groups or Dirichlet."""
    _, private, groups = _layout(settings)
    if groups:
        if num_partitions > len(groups):
            what = {"hapt": "private users (30 - data.hapt.public-users)"}
            raise ConfigError(
                f"num-partitions = {num_partitions} exceeds the data's "
                f"{len(groups)} {what.get(settings.dataset, 'manifest clients')}"
            )
        return groups[:num_partitions]
    labels = _pool(settings).samples.labels[private]
    rng = _rng(settings.seed, _SEED_DIRICHLET, num_partitions)
    alpha = _split_settings(settings).dirichlet_alpha
    return [private[p] for p in dirichlet_split(labels, num_partitions, alpha, rng)]


def _split_settings(settings: RunSettings) -> EasyVqaSettings | ManifestSettings:
    """Return the section holding the public fraction and Dirichlet alpha."""
    if settings.dataset == "easyvqa":
        return settings.data.easyvqa
    return settings.data.manifest


def dirichlet_split(
    labels: np.ndarray, num_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Split samples over parts with per-class Dirichlet(alpha) proportions.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` int labels; all ``-1`` gives an iid split.
    num_parts : int
        Number of parts.
    alpha : float
        Concentration; small values give skewed label mixes.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        ``num_parts`` sorted index arrays covering ``range(N)`` once; each
        holds at least ``min(8, N // num_parts)`` indices (topped up from the
        largest part).
    """
    n = len(labels)
    if n < 2 * num_parts:
        raise ConfigError(
            f"{n} private samples cannot serve {num_parts} partitions "
            "(each needs at least 2 for train and test)"
        )
    owner = np.empty(n, dtype=np.int64)
    if (labels < 0).all():
        owner[rng.permutation(n)] = np.arange(n) % num_parts
    else:
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = np.cumsum(rng.dirichlet(np.full(num_parts, alpha)))[:-1]
            for part, chunk in enumerate(np.split(members, (cuts * len(members)).astype(int))):
                owner[chunk] = part
    minimum = min(_MIN_PER_CLIENT, n // num_parts)
    sizes = np.bincount(owner, minlength=num_parts)
    for part in np.flatnonzero(sizes < minimum):
        while sizes[part] < minimum:
            donor = int(sizes.argmax())
            moved = rng.choice(np.flatnonzero(owner == donor))
            owner[moved], sizes[donor], sizes[part] = (
                part,
                sizes[donor] - 1,
                sizes[part] + 1,
            )
    return [np.flatnonzero(owner == part) for part in range(num_parts)]


def _train_test(
    index: np.ndarray,
    splits: np.ndarray,
    test_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into sorted (train, test); fixed splits are respected."""
    fixed_train = index[splits[index] == 1]
    fixed_test = index[splits[index] == 2]
    free = rng.permutation(index[splits[index] == 0])
    n_test = round(test_fraction * len(free))
    if len(free) >= 2:  # keep both sides non-empty when there is room
        n_test = min(max(n_test, 1), len(free) - 1)
    test = np.concatenate([fixed_test, free[:n_test]])
    train = np.concatenate([fixed_train, free[n_test:]])
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def _cap(index: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(index) <= limit:
        return index
    return np.sort(rng.choice(index, size=limit, replace=False))


def _finalise(samples: SampleSet) -> SampleSet:
    """Turn uint8 images into float32 in [0, 1], as `SampleSet` promises."""
    for spec in samples.specs:
        values = samples.inputs[spec.name]
        if spec.kind == "image" and values.dtype == np.uint8:
            samples.inputs[spec.name] = values.astype(np.float32) / 255.0
    return samples


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    """Return a generator for one purpose; negative seeds are valid too."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, *purpose])
