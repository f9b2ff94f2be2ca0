"""The messages of a round as Flower ``RecordDict`` contents, and back.

Server -> device (train and evaluate): ``arrays`` (global shared state) with its
manifest, ``config`` (``server-round``), and for training ``anchors`` (``ids``,
``z``: the server's fused representations of the device's public ids) and
``prototypes`` (``classes``, ``z``: the cloud's class prototypes, and with
``seccl.modality-prototypes`` one ``set/<a>+<b>`` table per subset of the modalities).
Device -> server (train reply): ``arrays`` (shared-state delta) whose manifest
carries the device facts (modality set, per-modality counts, partition),
``reps`` (``ids``, ``z``), ``metrics`` (``num-examples`` and training losses) and
``evaluation`` (the device's scores of its personal model after training).
Device -> server (evaluate reply): ``metrics``.

Every reader validates the whole message before returning anything, so a
receiver never applies half of a bad payload.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.exchange import DeviceUpdate, GlobalPayload
from common.state import State, as_float32
from proto.manifest import (
    CLASSES,
    IDS,
    MODALITY_SET,
    ManifestError,
    Z,
    manifest_from,
    read_manifest,
)
from proto.records import (
    ANCHORS,
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PROTOTYPES,
    REPS,
    get_payload,
    manifest_key,
    metric_record,
    pack_payload,
    put_payload,
)

SERVER_ROUND = "server-round"  # injected into every instruction's config by FedAvg
ROUND_TOKEN = "round-token"  # the server's token for the round, echoed in train replies
REFACTORISED_ROUND = "refactorised-round"  # the last round FlexLoRA changed the adapters' basis
EVALUATION = "evaluation"  # a train reply's scores of the device's personal model


class PayloadError(ValueError):
    """A message whose payloads contradict their manifests or lack a part.

    Attributes
    ----------
    problems : list of str
        Every problem found, human-readable.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PackedState:
    """The global state packed once per round, shared by every instruction of that round."""

    record: ArrayRecord
    manifest: ConfigRecord


def pack_global(state: State, dtype: str | None = None) -> PackedState:
    """Pack the global shared state (in the transport ``dtype``) with its manifest."""
    record, manifest = pack_payload(state, "GLOBAL_STATE", dtype, role="server")
    return PackedState(record, manifest)


def _read_pair(
    content: RecordDict, kind: str, extra_key: str, extra_kind: str, what: str
) -> tuple[State, State]:
    """The ``arrays`` payload of ``kind`` and the optional ``extra_key`` payload, validated.

    Raises
    ------
    PayloadError
        Listing every contradiction of either payload with its manifest.
    """
    main, problems = get_payload(content, ARRAYS, kind)
    extra: State = {}
    if extra_key in content.array_records:
        extra, more = get_payload(content, extra_key, extra_kind)
        problems += more
    if problems:
        raise PayloadError(
            [f"{what} payload (it contradicts its manifest): " + "; ".join(problems)]
        )
    return main, extra


# ------------------------------------------------------------------ server -> device
def instruction(
    packed: PackedState,
    config: ConfigRecord,
    anchors: tuple[np.ndarray, np.ndarray] | None = None,
    dtype: str | None = None,
    prototypes: tuple[np.ndarray, np.ndarray] | None = None,
    modality_prototypes: dict[tuple[str, ...], np.ndarray] | None = None,
) -> RecordDict:
    """Content of a train or evaluate instruction for one device.

    Parameters
    ----------
    packed : PackedState
        The round's global state (the same objects go to every device).
    config : ConfigRecord
        The round's config (holds ``server-round``).
    anchors : tuple of numpy.ndarray, optional
        ``(ids (N,), z (N, F))``: SE-CCL anchors for this device's public ids.
    prototypes : tuple of numpy.ndarray, optional
        ``(classes (K,), z (K, F))``: the cloud's class prototypes.
    modality_prototypes : dict, optional
        Subset of the modalities (sorted names) -> ``(K, F)`` prototypes of the same
        classes with only that subset present; sent beside ``prototypes``.
    """
    content = RecordDict(
        {ARRAYS: packed.record, manifest_key(ARRAYS): packed.manifest, CONFIG: config}
    )
    if anchors is not None and len(anchors[0]):
        ids, z = anchors
        payload = {IDS: np.asarray(ids, np.int64), Z: np.asarray(z, np.float32)}
        put_payload(content, ANCHORS, payload, "ANCHORS", dtype, role="server")
    if prototypes is not None and len(prototypes[0]):
        classes, z = prototypes
        payload = {CLASSES: np.asarray(classes, np.int64), Z: np.asarray(z, np.float32)}
        for names, table in (modality_prototypes or {}).items():
            if bad := [m for m in names if "+" in m]:
                raise ValueError(f"modality names {bad} contain '+', which names a set on the wire")
            payload[MODALITY_SET + "+".join(sorted(names))] = np.asarray(table, np.float32)
        put_payload(content, PROTOTYPES, payload, "PROTOTYPES", dtype, role="server")
    return content


def read_instruction(content: RecordDict) -> GlobalPayload:
    """The global state, anchors and prototypes of an instruction, validated.

    Raises
    ------
    PayloadError
        Naming every contradiction; nothing may be applied then.
    """
    state, anchors = _read_pair(content, "GLOBAL_STATE", ANCHORS, "ANCHORS", "rejected server")
    protos: State = {}
    if PROTOTYPES in content.array_records:
        protos, problems = get_payload(content, PROTOTYPES, "PROTOTYPES")
        if problems:
            raise PayloadError(["rejected server prototypes: " + "; ".join(problems)])
    config = content.config_records.get(CONFIG)
    server_round = int(config[SERVER_ROUND]) if config and SERVER_ROUND in config else 0
    token = str(config[ROUND_TOKEN]) if config and ROUND_TOKEN in config else ""
    refactorised = int(config[REFACTORISED_ROUND]) if config and REFACTORISED_ROUND in config else 0
    return GlobalPayload(
        round_token=token,
        state=as_float32(state),
        anchor_ids=anchors.get(IDS, np.zeros(0, np.int64)),
        anchors=anchors.get(Z, np.zeros((0, 0), np.float32)).astype(np.float32),
        prototype_classes=protos.get(CLASSES, np.zeros(0, np.int64)),
        prototypes=protos.get(Z, np.zeros((0, 0), np.float32)).astype(np.float32),
        modality_prototypes={
            tuple(k.removeprefix(MODALITY_SET).split("+")): v.astype(np.float32)
            for k, v in protos.items()
            if k.startswith(MODALITY_SET)
        },
        server_round=server_round,
        refactorised_round=refactorised,
    )


# ------------------------------------------------------------------ device -> server
def train_reply(update: DeviceUpdate, dtype: str | None = None) -> RecordDict:
    """Content of a train reply: delta (with the device facts), representations, metrics."""
    content = RecordDict(
        {METRICS: metric_record({NUM_EXAMPLES: update.num_examples, **update.metrics})}
    )
    put_payload(
        content,
        ARRAYS,
        update.delta,
        "SHARED_DELTA",
        dtype,
        modalities=update.modalities,
        counts=update.modality_counts,
        partition_id=update.partition_id,
        round_token=update.round_token,
    )
    if len(update.rep_ids):
        reps = {IDS: np.asarray(update.rep_ids, np.int64), Z: update.reps}
        put_payload(content, REPS, reps, "REPRESENTATIONS", dtype, partition_id=update.partition_id)
    if update.evaluation:
        content[EVALUATION] = metric_record(update.evaluation)
    return content


def read_train_reply(content: RecordDict) -> DeviceUpdate:
    """A device's update, built from the validated payloads and manifest only.

    Raises
    ------
    PayloadError
        When a payload contradicts its manifest, or ``metrics`` lacks a valid
        ``num-examples``.
    """
    delta, reps = _read_pair(content, "SHARED_DELTA", REPS, "REPRESENTATIONS", "mismatched")
    try:
        facts = read_manifest(manifest_from(content.config_records.get(manifest_key(ARRAYS))))
    except ManifestError as err:  # validated above; kept for a clear message
        raise PayloadError([str(err)]) from None
    if reps:
        rep_facts = read_manifest(manifest_from(content.config_records[manifest_key(REPS)]))
        if rep_facts.partition_id != facts.partition_id:
            raise PayloadError(["representations come from another partition than the delta"])
    metrics = content.metric_records.get(METRICS)
    if metrics is None or NUM_EXAMPLES not in metrics:
        raise PayloadError([f"metrics lack '{NUM_EXAMPLES}'"])
    num = metrics[NUM_EXAMPLES]
    if not isinstance(num, int):
        raise PayloadError([f"'{NUM_EXAMPLES}' is {num!r}, not an integer"])
    return DeviceUpdate(
        delta=delta,
        rep_ids=reps.get(IDS, np.zeros(0, np.int64)),
        reps=reps.get(Z, np.zeros((0, 0), np.float32)),
        num_examples=num,
        modalities=tuple(facts.modalities),
        modality_counts={str(k): int(v) for k, v in facts.modality_counts.items()},
        metrics={k: float(v) for k, v in metrics.items() if k != NUM_EXAMPLES},
        partition_id=int(facts.partition_id),
        evaluation=_floats(content.metric_records.get(EVALUATION)),
        round_token=facts.round_token,
    )


def _floats(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if not isinstance(v, list)}


def evaluate_reply(metrics: dict[str, float], num_examples: int) -> RecordDict:
    """Content of an evaluate reply."""
    return RecordDict({METRICS: metric_record({NUM_EXAMPLES: num_examples, **metrics})})


def read_evaluate_reply(content: RecordDict) -> dict[str, float] | None:
    """A device's evaluation metrics (``num-examples`` included), or None if absent."""
    rec = content.metric_records.get(METRICS)
    return None if rec is None else _floats(rec)
