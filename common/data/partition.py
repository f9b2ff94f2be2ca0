"""Who holds which sample: the public/private split, device partitions, train/test cuts.

Every draw is seeded by ``(seed, purpose, ...)``, so the same settings always give
the same split on every process (server and devices compute it independently).
"""

from __future__ import annotations

import functools

import numpy as np

from common.data.pool import load_pool
from common.sections import EasyVqaSettings, JsonlSettings
from common.settings import ConfigError, RunSettings

# Purpose constants mixed into seeds: each draw has its own independent stream.
SEED_PUBLIC_USERS = 1
SEED_USER_ORDER = 2
SEED_PUBLIC_POOL = 3
SEED_DIRICHLET = 4
SEED_PUBLIC_SPLIT = 5
SEED_CLIENT_SPLIT = 6
SEED_CAP = 7
SEED_SHARE = 8
SEED_MASK = 9
SEED_SKEW = 10
_MIN_PER_CLIENT = 8  # Dirichlet split: fewer samples leave no useful train/test


def rng(seed: int, *purpose: int) -> np.random.Generator:
    """Return a generator for one purpose; negative seeds are valid too."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, *purpose])


@functools.lru_cache(maxsize=8)
def layout(settings: RunSettings) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Split the pool into public indices, private indices and device groups.

    The groups are the natural per-device split (HAPT users, JSONL clients) in
    device order, or empty when the private data has none.
    """
    pool, seed = load_pool(settings), settings.seed
    n = len(pool.samples)
    if settings.dataset == "hapt":
        users = np.unique(pool.groups)
        count = settings.data.hapt.public_users
        public_users = rng(seed, SEED_PUBLIC_USERS).choice(users, count, False)
        public = np.flatnonzero(np.isin(pool.groups, public_users))
    elif pool.public is not None and pool.public.any():
        public = np.flatnonzero(pool.public)
    else:
        size = min(n - 1, max(1, round(_split_settings(settings).public_fraction * n)))
        public = np.sort(rng(seed, SEED_PUBLIC_POOL).choice(n, size, replace=False))
    private = np.setdiff1d(np.arange(n), public)
    if pool.groups is None:
        return public, private, []
    keys = sorted(set(pool.groups[private].tolist()), key=lambda k: (str(type(k)), k))
    if settings.dataset == "hapt":  # devices take the users in a seeded order
        keys = rng(seed, SEED_USER_ORDER).permutation(keys).tolist()
    return public, private, [private[pool.groups[private] == k] for k in keys]


@functools.lru_cache(maxsize=8)
def public_split(settings: RunSettings) -> tuple[np.ndarray, np.ndarray]:
    """Return the server's capped public ``(train, test)`` pool indices."""
    public = layout(settings)[0]
    data, seed = settings.data, settings.seed
    r = rng(seed, SEED_PUBLIC_SPLIT)
    train, test = train_test(public, load_pool(settings).splits, data.test_fraction, r)
    train = cap(train, data.max_public_train, r)
    return train, cap(test, data.max_public_test, r)


@functools.lru_cache(maxsize=8)
def partition(settings: RunSettings, num_partitions: int) -> list[np.ndarray]:
    """Return each device's private pool indices: natural groups or Dirichlet."""
    _, private, groups = layout(settings)
    if groups:
        if num_partitions > len(groups):
            what = {"hapt": "private users (30 - data.hapt.public-users)"}
            raise ConfigError(
                f"num-partitions = {num_partitions} exceeds the data's "
                f"{len(groups)} {what.get(settings.dataset, 'JSONL clients')}"
            )
        return groups[:num_partitions]
    labels = load_pool(settings).samples.labels[private]
    r = rng(settings.seed, SEED_DIRICHLET, num_partitions)
    alpha = _split_settings(settings).dirichlet_alpha
    return [private[p] for p in dirichlet_split(labels, num_partitions, alpha, r)]


def _split_settings(settings: RunSettings) -> EasyVqaSettings | JsonlSettings:
    """Return the section holding the public fraction and Dirichlet alpha."""
    if settings.dataset == "easyvqa":
        return settings.data.easyvqa
    return settings.data.jsonl


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


def skew_labels(
    index: np.ndarray, labels: np.ndarray, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Subsample ``index`` so that its label mix follows Dirichlet(``alpha``) proportions.

    Parameters
    ----------
    index : numpy.ndarray
        ``(N,)`` pool indices of one device.
    labels : numpy.ndarray
        Label of every pool sample (``-1``: none).
    alpha : float
        Concentration; small values leave a device with a few dominant classes.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        Sorted subset of ``index``: as many samples as the drawn proportions allow
        without repeating one (the scarcest class relative to its share binds), at
        least two, and every unlabelled sample kept.
    """
    own = labels[index]
    classes = np.unique(own[own >= 0])
    if len(classes) == 0:
        return index
    share = rng.dirichlet(np.full(len(classes), alpha))
    have = np.array([(own == c).sum() for c in classes])
    total = min(have[k] / share[k] for k in range(len(classes)) if share[k] > 0)
    take = np.floor(total * share).astype(int)
    take[share.argmax()] = max(take[share.argmax()], min(2, have[share.argmax()]))
    keep = [index[own < 0]]
    for c, n in zip(classes, take):
        members = index[own == c]
        keep.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)


def train_test(
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


def cap(index: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``limit`` of ``index``, drawn without replacement (order kept)."""
    if len(index) <= limit:
        return index
    return np.sort(rng.choice(index, size=limit, replace=False))
