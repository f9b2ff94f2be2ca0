"""What each side sees: task facts, a device's private data and public share, the server's data."""

from __future__ import annotations

import numpy as np

from common.data.availability import client_modalities, restrict
from common.data.partition import (
    SEED_CAP,
    SEED_CLIENT_SPLIT,
    SEED_MASK,
    SEED_SHARE,
    SEED_SKEW,
    partition,
    public_split,
    rng,
    skew_labels,
    train_test,
)
from common.data.partition import cap as cap_index
from common.data.pool import load_pool
from common.data.samples import ClientData, SampleSet, ServerData, TaskInfo
from common.settings import ConfigError, RunSettings

PROMPTS = {
    "hapt": "Which activity is this?",
    "easyvqa": "Answer the question about the image.",
}


def task_info(settings: RunSettings) -> TaskInfo:
    """Return the dataset-level facts: modalities, prompt, classes, corpus.

    ``corpus`` holds the prompt, every distinct target text (``answers``) and
    every distinct text input (``texts``, e.g. the easy-VQA questions), for
    training a tokenizer; the tiny backbone's warm-up uses the last two.
    """
    pool = load_pool(settings)
    prompt = PROMPTS.get(settings.dataset, settings.data.jsonl.prompt)
    answers = [t for t in dict.fromkeys(pool.samples.targets) if t]
    inputs: list[str] = []
    for spec in pool.samples.specs:
        if spec.kind == "text":
            inputs.extend(str(t) for t in pool.samples.inputs[spec.name])
    texts = [t for t in dict.fromkeys(inputs) if t]
    return TaskInfo(
        name=settings.dataset,
        specs=pool.samples.specs,
        prompt=prompt,
        class_names=list(pool.class_names),
        corpus=list(dict.fromkeys([prompt, *answers, *texts])),
        answers=answers,
        texts=texts,
    )


def held_modalities(
    settings: RunSettings,
    partition_id: int,
    num_partitions: int,
    modalities: tuple[str, ...] | str | None = None,
) -> tuple[str, ...]:
    """The device's modality set: declared (node config) or drawn from ``settings.modality``.

    Raises
    ------
    ConfigError
        On an unknown or empty declared modality set.
    """
    names = load_pool(settings).samples.modality_names
    if modalities is None:
        m = settings.modality
        return client_modalities(
            names, m.scenario, m.unimodal_fraction, partition_id, num_partitions, settings.seed
        )
    if isinstance(modalities, str):
        modalities = tuple(x.strip() for x in modalities.split(",") if x.strip())
    unknown = [x for x in modalities if x not in names]
    if unknown or not modalities:
        raise ConfigError(
            f"unknown modalities {unknown} for dataset '{settings.dataset}', "
            f"expected a non-empty subset of {list(names)}"
        )
    return tuple(n for n in names if n in modalities)


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
        `common.data.availability.client_modalities` from ``settings.modality``.

    Returns
    -------
    ClientData
        With ``data.label-skew`` > 0, the device's samples are first subsampled
        to a Dirichlet label mix (train and test alike: the device's own
        distribution). ``train`` / ``test`` capped at ``data.max-train-per-client`` /
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
    pool = load_pool(settings)
    held = held_modalities(settings, partition_id, num_partitions, modalities)
    data, seed = settings.data, settings.seed
    own = partition(settings, num_partitions)[partition_id]
    if data.label_skew > 0:
        skew_rng = rng(seed, SEED_SKEW, partition_id)
        own = skew_labels(own, pool.samples.labels, data.label_skew, skew_rng)
    train, test = train_test(
        own, pool.splits, data.test_fraction, rng(seed, SEED_CLIENT_SPLIT, partition_id)
    )
    train = cap_index(train, data.max_train_per_client, rng(seed, SEED_CAP, partition_id, 0))
    test = cap_index(test, data.max_test_per_client, rng(seed, SEED_CAP, partition_id, 1))
    public = public_split(settings)[0]
    share_rng = rng(seed, SEED_SHARE, partition_id)
    size = max(1, round(data.public_share_fraction * len(public)))
    share = np.sort(share_rng.choice(public, size=size, replace=False))

    def view(index: np.ndarray, part: int) -> SampleSet:
        r = rng(seed, SEED_MASK, partition_id, part)
        rate = settings.modality.missing_rate
        return _finalise(restrict(pool.samples.subset(index), held, rate, r))

    return ClientData(
        modalities=held, train=view(train, 0), test=view(test, 1), public=view(share, 2)
    )


def build_server_data(settings: RunSettings) -> ServerData:
    """Return the public data with every modality, split into train and test.

    The split uses ``data.test-fraction`` and the caps ``data.max-public-train``
    / ``data.max-public-test``; it does not depend on the number of devices.
    Sample ids are indices into the dataset pool, the same ids devices see.
    """
    pool = load_pool(settings)
    train, test = public_split(settings)
    return ServerData(
        public_train=_finalise(pool.samples.subset(train)),
        public_test=_finalise(pool.samples.subset(test)),
    )


def _finalise(samples: SampleSet) -> SampleSet:
    """Turn uint8 images into float32 in [0, 1], as `SampleSet` promises."""
    for spec in samples.specs:
        values = samples.inputs[spec.name]
        if spec.kind == "image" and values.dtype == np.uint8:
            samples.inputs[spec.name] = values.astype(np.float32) / 255.0
    return samples


def training_data(settings: RunSettings, data: ClientData) -> SampleSet:
    """What a device trains on: its train split and (``data.use-public-share``) its public share.

    Private ids are made negative (``-1 - id``) so they never match a public anchor id.
    """
    sets = [data.train, data.public] if settings.data.use_public_share else [data.train]
    return SampleSet(
        specs=data.train.specs,
        inputs={k: np.concatenate([x.inputs[k] for x in sets]) for k in data.train.inputs},
        mask=np.concatenate([x.mask for x in sets]),
        targets=[t for x in sets for t in x.targets],
        labels=np.concatenate([x.labels for x in sets]),
        ids=np.concatenate([-1 - data.train.ids, *(x.ids for x in sets[1:])]),
    )
