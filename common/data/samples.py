"""Containers for multimodal samples: what a dataset loader hands to training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ModalityKind = Literal["sensor", "image", "text", "vector"]


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality of a dataset.

    Attributes
    ----------
    name : str
        Modality name, e.g. ``"acc"``.
    kind : {"sensor", "image", "text", "vector"}
        ``sensor`` arrays are ``(T, C)``, ``image`` arrays ``(H, W, C)`` in [0, 1],
        ``vector`` arrays ``(D,)``; ``text`` values are Python strings.
    shape : tuple of int
        Per-sample array shape; ``()`` for text.
    """

    name: str
    kind: ModalityKind
    shape: tuple[int, ...] = ()


@dataclass
class SampleSet:
    """A set of multimodal samples with their availability mask.

    Attributes
    ----------
    specs : tuple of ModalitySpec
        All modalities of the dataset, in a fixed order ``M``.
    inputs : dict of str to numpy.ndarray
        ``name -> (N, *shape)`` float32 arrays, or ``(N,)`` object arrays of str
        for text. A missing modality still has a (zero / empty) entry.
    mask : numpy.ndarray
        ``(N, M)`` bool, True where the modality is present for the sample.
    targets : list of str
        Target text per sample, length ``N``.
    labels : numpy.ndarray
        ``(N,)`` int64 class index, ``-1`` when the task has no labels.
    ids : numpy.ndarray
        ``(N,)`` int64 sample ids, unique within the pool they come from
        (public ids are shared by the server and every device).
    """

    specs: tuple[ModalitySpec, ...]
    inputs: dict[str, np.ndarray]
    mask: np.ndarray
    targets: list[str]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def subset(self, index: np.ndarray) -> SampleSet:
        """Return the samples at ``index`` (a 1-D int array)."""
        index = np.asarray(index, dtype=np.int64)
        return SampleSet(
            specs=self.specs,
            inputs={k: v[index] for k, v in self.inputs.items()},
            mask=self.mask[index],
            targets=[self.targets[i] for i in index],
            labels=self.labels[index],
            ids=self.ids[index],
        )

    def modality_counts(self) -> dict[str, int]:
        """Number of samples in which each modality is present."""
        counts = self.mask.sum(axis=0)
        return {s.name: int(c) for s, c in zip(self.specs, counts)}


@dataclass
class ClientData:
    """Everything one edge device holds.

    Attributes
    ----------
    modalities : tuple of str
        The device's modality set ``M_j`` (a subset of the dataset's).
    train, test : SampleSet
        Private data, masks restricted to ``M_j``.
    public : SampleSet
        The device's share ``D'_j`` of the public train data, restricted to ``M_j``.
    """

    modalities: tuple[str, ...]
    train: SampleSet
    test: SampleSet
    public: SampleSet


@dataclass
class ServerData:
    """The cloud's public data, with all modalities."""

    public_train: SampleSet
    public_test: SampleSet


@dataclass(frozen=True)
class DataPool:
    """Every sample of a dataset, plus what its public/private split needs.

    Attributes
    ----------
    samples : SampleSet
        All ``N`` samples, ids unique. Images may be uint8 to save memory; they
        leave the data views as float32 in [0, 1].
    class_names : tuple of str
        Label index -> class text.
    groups : numpy.ndarray or None
        ``(N,)`` natural device key per sample (HAPT user, JSONL client),
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


class DataUnavailableError(RuntimeError):
    """A dataset's source (a pip package or a file) is not installed."""


@dataclass
class TaskInfo:
    """Dataset-level facts both sides agree on."""

    name: str
    specs: tuple[ModalitySpec, ...]
    prompt: str
    class_names: list[str] = field(default_factory=list)  # label index -> text
    corpus: list[str] = field(default_factory=list)  # texts to train a tokenizer on
    answers: list[str] = field(default_factory=list)  # every distinct target text
    texts: list[str] = field(default_factory=list)  # every distinct text input
