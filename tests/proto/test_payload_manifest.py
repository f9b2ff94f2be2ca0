"""Payload manifests: round trip, every rejection reason, Flower ConfigRecord transport."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from proto.manifest import (
    ANCHORS,
    GLOBAL_STATE,
    MANIFEST_KEY,
    REPRESENTATIONS,
    SCHEMA_VERSION,
    SHARED_DELTA,
    ManifestError,
    build_manifest,
    kind_value,
    manifest_from,
    manifest_record,
    read_manifest,
    validate_payload,
)
from proto.messages import instruction, pack_global
from proto.mlecs.v1 import manifest_pb2


def _delta() -> dict[str, np.ndarray]:
    return {
        "lora/q_proj.lora_A": np.ones((4, 8), np.float32),
        "head/acc/weight": np.zeros((3, 5), np.float32),
    }


def _reps(n: int = 3) -> dict[str, np.ndarray]:
    return {"ids": np.arange(10, 10 + n, dtype=np.int64), "z": np.ones((n, 6), np.float32)}


def _delta_manifest() -> bytes:
    return build_manifest(
        SHARED_DELTA,
        _delta(),
        modalities=("acc", "gyro"),
        counts={"acc": 5, "gyro": 2},
        partition_id=3,
    )


def _raw(**fields) -> bytes:
    """A manifest built field by field, bypassing build_manifest's own checks."""
    m = manifest_pb2.PayloadManifest(schema_version=SCHEMA_VERSION, **fields)
    return m.SerializeToString()


def test_round_trip_keeps_every_field():
    m = read_manifest(_delta_manifest())
    assert m.schema_version == SCHEMA_VERSION
    assert m.kind == SHARED_DELTA
    assert m.role == manifest_pb2.SENDER_ROLE_DEVICE
    assert m.partition_id == 3
    assert list(m.modalities) == ["acc", "gyro"]
    assert dict(m.modality_counts) == {"acc": 5, "gyro": 2}
    specs = {t.name: (tuple(t.shape), t.dtype) for t in m.tensors}
    assert specs == {
        "lora/q_proj.lora_A": ((4, 8), "float32"),
        "head/acc/weight": ((3, 5), "float32"),
    }
    assert validate_payload(_delta_manifest(), _delta(), expected_kind=SHARED_DELTA) == []


def test_build_is_deterministic():
    counts = {f"m{i}": i for i in range(20)}
    a = build_manifest(GLOBAL_STATE, _delta(), role="server", modalities=counts, counts=counts)
    b = build_manifest(
        GLOBAL_STATE,
        _delta(),
        role="server",
        modalities=counts,
        counts=dict(reversed(counts.items())),
    )
    assert a == b


def test_representations_take_ids_from_the_payload():
    data = build_manifest("REPRESENTATIONS", _reps(), partition_id=0)
    assert list(read_manifest(data).public_ids) == [10, 11, 12]
    assert validate_payload(data, _reps(), expected_kind="representations") == []
    server = build_manifest(ANCHORS, _reps(), role="server")
    assert not read_manifest(server).HasField("partition_id")
    assert validate_payload(server, _reps(), expected_kind=ANCHORS) == []


def test_empty_payload_is_fine():
    data = build_manifest(SHARED_DELTA, {}, partition_id=1)
    assert validate_payload(data, {}) == []


# --------------------------------------------------------------- rejections
def test_undecodable_manifest():
    (problem,) = validate_payload(b"\xff\xff\xff", _delta())
    assert "undecodable manifest" in problem


def test_missing_manifest():
    assert validate_payload(None, _delta()) == ["payload has no manifest (bytes)"]
    assert "not bytes" in validate_payload("text", _delta())[0]  # type: ignore[arg-type]


def test_schema_version_mismatch_stops_the_check():
    m = read_manifest(_delta_manifest())
    m.schema_version = SCHEMA_VERSION + 1
    problems = validate_payload(m.SerializeToString(), {})  # tensors missing too: not reported
    assert problems == [f"manifest schema version {SCHEMA_VERSION + 1}, expected {SCHEMA_VERSION}"]


def test_wrong_kind():
    problems = validate_payload(_delta_manifest(), _delta(), expected_kind=GLOBAL_STATE)
    assert problems == ["payload kind SHARED_DELTA, expected GLOBAL_STATE"]


def test_unknown_kind():
    data = _raw(kind=0, role=manifest_pb2.SENDER_ROLE_SERVER)
    assert "unknown payload kind" in validate_payload(data, {})[0]
    with pytest.raises(ManifestError, match="unknown payload kind"):
        kind_value("weights")


def test_wrong_sender_role():
    data = _raw(kind=GLOBAL_STATE, role=manifest_pb2.SENDER_ROLE_DEVICE, partition_id=0)
    assert validate_payload(data, {}) == ["GLOBAL_STATE payload must come from the server"]
    with pytest.raises(ManifestError, match="must come from the device"):
        build_manifest(SHARED_DELTA, {}, role="server")
    with pytest.raises(ManifestError, match="unknown sender role"):
        build_manifest(SHARED_DELTA, {}, role="cloud")


def test_device_without_partition():
    with pytest.raises(ManifestError, match="without a partition id"):
        build_manifest(SHARED_DELTA, _delta())


def test_missing_tensor():
    arrays = _delta()
    del arrays["head/acc/weight"]
    assert validate_payload(_delta_manifest(), arrays) == ["missing tensor 'head/acc/weight'"]


def test_extra_tensor():
    arrays = {**_delta(), "lora/evil": np.zeros(2, np.float32)}
    assert validate_payload(_delta_manifest(), arrays) == [
        "extra tensor 'lora/evil' not in the manifest"
    ]


def test_shape_mismatch():
    arrays = {**_delta(), "head/acc/weight": np.zeros((5, 3), np.float32)}
    assert validate_payload(_delta_manifest(), arrays) == [
        "tensor 'head/acc/weight' has shape (5, 3), manifest says (3, 5)"
    ]


def test_dtype_mismatch():
    arrays = {**_delta(), "head/acc/weight": np.zeros((3, 5), np.float64)}
    assert validate_payload(_delta_manifest(), arrays) == [
        "tensor 'head/acc/weight' has dtype float64, manifest says float32"
    ]


def test_duplicate_tensor_spec():
    spec = manifest_pb2.TensorSpec(name="lora/a", shape=[2], dtype="float32")
    data = _raw(
        kind=SHARED_DELTA,
        role=manifest_pb2.SENDER_ROLE_DEVICE,
        partition_id=0,
        tensors=[spec, spec],
    )
    problems = validate_payload(data, {"lora/a": np.zeros(2, np.float32)})
    assert problems == ["tensor 'lora/a' declared twice"]


def test_ids_length_differs_from_representation_rows():
    data = build_manifest(REPRESENTATIONS, _reps(3), partition_id=0)
    m = read_manifest(data)
    m.tensors[0].shape[:] = [2]  # declare the ids the sender actually sends
    del m.public_ids[2]
    arrays = {"ids": np.arange(10, 12, dtype=np.int64), "z": np.ones((3, 6), np.float32)}
    assert validate_payload(m.SerializeToString(), arrays) == [
        "2 public ids for 3 representation rows"
    ]
    with pytest.raises(ManifestError, match="2 public ids for 3 representation rows"):
        build_manifest(REPRESENTATIONS, _reps(3), public_ids=[10, 11], partition_id=0)


def test_ids_tensor_differs_from_manifest_ids():
    data = build_manifest(REPRESENTATIONS, _reps(3), partition_id=0)
    arrays = {**_reps(3), "ids": np.array([10, 11, 99], np.int64)}
    assert validate_payload(data, arrays) == ["tensor 'ids' differs from the manifest's public ids"]


def test_repeated_ids():
    reps = {"ids": np.array([1, 1], np.int64), "z": np.ones((2, 4), np.float32)}
    with pytest.raises(ManifestError, match="public ids repeat"):
        build_manifest(REPRESENTATIONS, reps, partition_id=0)


def test_representations_need_ids_and_z():
    with pytest.raises(ManifestError, match="needs tensors 'ids' and 'z'"):
        build_manifest(ANCHORS, {"z": np.ones((2, 4), np.float32)}, role="server")
    reps = {"ids": np.arange(4, dtype=np.int64), "z": np.ones(4, np.float32)}
    with pytest.raises(ManifestError, match="must be 2-D"):
        build_manifest(ANCHORS, reps, role="server")


def test_ids_on_a_state_payload():
    with pytest.raises(ManifestError, match="GLOBAL_STATE payload lists 2 public ids"):
        build_manifest(GLOBAL_STATE, _delta(), public_ids=[1, 2], role="server")


def test_modality_problems():
    data = _raw(
        kind=SHARED_DELTA,
        role=manifest_pb2.SENDER_ROLE_DEVICE,
        partition_id=0,
        modalities=["acc", "acc"],
        modality_counts={"gyro": 1, "acc": -2},
    )
    assert validate_payload(data, {}) == [
        "modalities ['acc', 'acc'] repeat a name",
        "negative count -2 for modality 'acc'",
        "count for modality 'gyro' outside the modality set",
    ]


def test_every_problem_is_reported_at_once():
    arrays = {
        "lora/q_proj.lora_A": np.ones((4, 8), np.float16),  # dtype
        "lora/extra": np.ones(1, np.float32),  # extra
    }  # and head/acc/weight missing
    problems = validate_payload(_delta_manifest(), arrays, expected_kind=GLOBAL_STATE)
    assert len(problems) == 4, problems


# ------------------------------------------------------------ Flower transport
def test_config_record_round_trip():
    data = _delta_manifest()
    record = manifest_record(data)
    assert isinstance(record, ConfigRecord)
    assert record[MANIFEST_KEY] == data
    content = RecordDict({"arrays-manifest": record})
    assert manifest_from(content.config_records["arrays-manifest"]) == data
    assert validate_payload(manifest_from(record), _delta()) == []


def test_config_record_without_manifest():
    assert manifest_from(None) is None
    assert manifest_from(ConfigRecord({})) is None
    assert manifest_from(ConfigRecord({MANIFEST_KEY: "not bytes"})) is None
    assert validate_payload(manifest_from(ConfigRecord({})), {}) == [
        "payload has no manifest (bytes)"
    ]


def _protos() -> dict[str, np.ndarray]:
    return {"classes": np.array([0, 3], np.int64), "z": np.ones((2, 4), np.float32)}


def test_prototypes_come_from_the_server_with_classes_and_rows():
    manifest = build_manifest("PROTOTYPES", _protos(), role="server")
    assert validate_payload(manifest, _protos(), expected_kind="PROTOTYPES") == []
    with pytest.raises(ManifestError, match="must come from the server"):
        build_manifest("PROTOTYPES", _protos(), role="device", partition_id=0)


@pytest.mark.parametrize(
    ("classes", "z", "problem"),
    [
        (np.array([0, 0], np.int64), np.ones((2, 4), np.float32), "distinct and non-negative"),
        (np.array([0, -1], np.int64), np.ones((2, 4), np.float32), "distinct and non-negative"),
        (np.array([0, 1, 2], np.int64), np.ones((2, 4), np.float32), "do not match"),
        (np.array([0.0, 1.0], np.float32), np.ones((2, 4), np.float32), "not an integer"),
    ],
)
def test_malformed_prototypes_are_named(classes, z, problem):
    with pytest.raises(ManifestError, match=problem):
        build_manifest("PROTOTYPES", {"classes": classes, "z": z}, role="server")
    with pytest.raises(ManifestError, match="needs tensors 'classes' and 'z'"):
        build_manifest("PROTOTYPES", {"z": z}, role="server")


def test_prototypes_of_modality_subsets_travel_beside_the_full_ones():
    sets = {"set/acc": np.zeros((2, 4), np.float32), "set/acc+gyro": np.ones((2, 4), np.float32)}
    manifest = build_manifest("PROTOTYPES", {**_protos(), **sets}, role="server")
    assert validate_payload(manifest, {**_protos(), **sets}, expected_kind="PROTOTYPES") == []
    with pytest.raises(ManifestError, match="'set/acc' \\(3, 4\\), not \\(2, 4\\)"):
        build_manifest("PROTOTYPES", {**_protos(), "set/acc": np.ones((3, 4))}, role="server")
    scaled = {**_protos(), "set/acc": np.zeros((2, 4), np.int8), "set/acc::scale": np.ones(1)}
    build_manifest("PROTOTYPES", scaled, role="server")  # int8 transport adds scales
    with pytest.raises(ManifestError, match="'extra' is neither"):
        build_manifest("PROTOTYPES", {**_protos(), "extra": np.ones((2, 4))}, role="server")


def test_a_modality_name_with_a_plus_cannot_name_a_set_on_the_wire():
    protos = (np.array([0, 1], np.int64), np.eye(2, 4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\['a\+b'\] contain '\+'"):
        instruction(pack_global({}), ConfigRecord({}), None, None, protos, {("a+b",): protos[1]})
