"""Build payload manifests and check a payload against its manifest before applying it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ConfigRecord
from google.protobuf.message import DecodeError

from proto.mlecs.v1 import manifest_pb2 as pb

SCHEMA_VERSION = 1
MANIFEST_KEY = "manifest"  # key of the manifest bytes in their ConfigRecord

GLOBAL_STATE = pb.PAYLOAD_KIND_GLOBAL_STATE
SHARED_DELTA = pb.PAYLOAD_KIND_SHARED_DELTA
ANCHORS = pb.PAYLOAD_KIND_ANCHORS
REPRESENTATIONS = pb.PAYLOAD_KIND_REPRESENTATIONS
PROTOTYPES = pb.PAYLOAD_KIND_PROTOTYPES
# Who may send what: the server sends state, anchors and prototypes, devices the rest.
SENDER = {
    GLOBAL_STATE: pb.SENDER_ROLE_SERVER,
    ANCHORS: pb.SENDER_ROLE_SERVER,
    PROTOTYPES: pb.SENDER_ROLE_SERVER,
    SHARED_DELTA: pb.SENDER_ROLE_DEVICE,
    REPRESENTATIONS: pb.SENDER_ROLE_DEVICE,
}
# Representation payloads hold these two tensors: ids (N,) int64, z (N, F) float32;
# prototype payloads hold classes (K,) int64 and z (K, F) float32, and optionally one
# (K, F) table per subset of the modalities, named "set/<a>+<b>" (sorted names).
IDS, Z, CLASSES = "ids", "z", "classes"
MODALITY_SET = "set/"
SCALE = "::scale"  # int8 transport: "<name>::scale" holds the float32 scale of "<name>"

Kind = int | str
Arrays = Mapping[str, np.ndarray]


class ManifestError(ValueError):
    """A manifest that cannot be built or decoded."""


def kind_value(kind: Kind) -> int:
    """``PayloadKind`` number of ``kind``: the enum value or a name like ``"ANCHORS"``."""
    if isinstance(kind, str):
        name = kind.upper().replace("-", "_")
        name = name if name.startswith("PAYLOAD_KIND_") else "PAYLOAD_KIND_" + name
        try:
            return pb.PayloadKind.Value(name)
        except ValueError:
            raise ManifestError(f"unknown payload kind '{kind}'") from None
    return int(kind)


def kind_name(kind: int) -> str:
    """Short name of a ``PayloadKind`` number (``"ANCHORS"``), or the number if unknown."""
    try:
        return pb.PayloadKind.Name(kind).removeprefix("PAYLOAD_KIND_")
    except ValueError:
        return str(kind)


def _role_value(role: str) -> int:
    try:
        return pb.SenderRole.Value("SENDER_ROLE_" + role.upper())
    except ValueError:
        raise ManifestError(f"unknown sender role '{role}' (server or device)") from None


def build_manifest(
    kind: Kind,
    arrays: Arrays,
    *,
    modalities: Iterable[str] = (),
    counts: Mapping[str, int] | None = None,
    public_ids: np.ndarray | Iterable[int] | None = None,
    role: str = "device",
    partition_id: int = -1,
    round_token: str = "",
) -> bytes:
    """Describe a payload in a serialized ``PayloadManifest``.

    Parameters
    ----------
    kind : int or str
        A ``PayloadKind`` (e.g. :data:`ANCHORS`) or its short name (``"ANCHORS"``).
    arrays : mapping of str to numpy.ndarray
        The payload; every tensor is declared with its shape and dtype.
    modalities : iterable of str
        The sending device's modality set.
    counts : mapping of str to int, optional
        Per-modality present-sample counts (keys among ``modalities``).
    public_ids : array_like of int, optional
        ``(N,)`` public ids, one per row of ``arrays["z"]``; defaults to
        ``arrays["ids"]`` for representation payloads.
    role : {"device", "server"}
        The sender.
    partition_id : int
        The sending device's partition; negative for none (the server).
    round_token : str
        The round the payload belongs to (the server's token, echoed by devices).

    Returns
    -------
    bytes
        The manifest, serialized deterministically.

    Raises
    ------
    ManifestError
        On an unknown kind or role, or when the payload contradicts its own
        manifest (the same checks as :func:`validate_payload`).
    """
    k = kind_value(kind)
    if public_ids is None and k in (ANCHORS, REPRESENTATIONS) and IDS in arrays:
        public_ids = arrays[IDS]
    m = pb.PayloadManifest(
        schema_version=SCHEMA_VERSION,
        kind=k,
        role=_role_value(role),
        modalities=list(modalities),
        modality_counts={str(n): int(c) for n, c in (counts or {}).items()},
        public_ids=[] if public_ids is None else np.asarray(public_ids, np.int64).tolist(),
        round_token=round_token,
    )
    if partition_id >= 0:
        m.partition_id = int(partition_id)
    for name, value in arrays.items():
        a = np.asarray(value)
        m.tensors.add(name=name, shape=a.shape, dtype=a.dtype.name)
    # Map order is otherwise unspecified: deterministic bytes make manifests comparable.
    data = m.SerializeToString(deterministic=True)
    problems = validate_payload(data, arrays)
    if problems:
        raise ManifestError("inconsistent payload: " + "; ".join(problems))
    return data


def read_manifest(data: bytes | None) -> pb.PayloadManifest:
    """Decode manifest bytes (call :func:`validate_payload` first to check them).

    Raises
    ------
    ManifestError
        When ``data`` is missing or not a ``PayloadManifest``.
    """
    if data is None:
        raise ManifestError("payload has no manifest (bytes)")
    if not isinstance(data, (bytes, bytearray)):
        raise ManifestError(f"manifest is {type(data).__name__}, not bytes")
    m = pb.PayloadManifest()
    try:
        m.ParseFromString(bytes(data))
    except DecodeError as err:
        raise ManifestError(f"undecodable manifest: {err}") from None
    return m


def validate_payload(
    manifest: bytes | None, arrays: Arrays, *, expected_kind: Kind | None = None
) -> list[str]:
    """Every way ``arrays`` contradicts its manifest; empty when the payload is sound.

    Nothing is modified: check the whole payload first and apply it only when
    this returns no problem, so a bad payload is never half-applied. Values
    (e.g. finiteness) are the receiver's business, not the manifest's.

    Parameters
    ----------
    manifest : bytes or None
        Serialized ``PayloadManifest`` (None: the payload came without one).
    arrays : mapping of str to numpy.ndarray
        The received payload.
    expected_kind : int or str, optional
        The kind the receiver expects here.

    Returns
    -------
    list of str
        Human-readable problems, all of them (one for an undecodable manifest
        or an unknown schema version, as nothing else can then be trusted).
    """
    try:
        m = read_manifest(manifest)
    except ManifestError as err:
        return [str(err)]
    if m.schema_version != SCHEMA_VERSION:
        return [f"manifest schema version {m.schema_version}, expected {SCHEMA_VERSION}"]
    problems = _kind_problems(m, expected_kind)
    problems += _tensor_problems(m, arrays)
    problems += _device_problems(m)
    if m.kind in (ANCHORS, REPRESENTATIONS):
        problems += _id_problems(m, arrays)
    elif m.kind == PROTOTYPES:
        problems += _prototype_problems(arrays)
    if m.public_ids and m.kind not in (ANCHORS, REPRESENTATIONS):
        problems.append(f"{kind_name(m.kind)} payload lists {len(m.public_ids)} public ids")
    return problems


def _kind_problems(m: pb.PayloadManifest, expected_kind: Kind | None) -> list[str]:
    if m.kind not in SENDER:
        return [f"unknown payload kind {kind_name(m.kind)}"]
    out = []
    if expected_kind is not None and m.kind != kind_value(expected_kind):
        out.append(
            f"payload kind {kind_name(m.kind)}, expected {kind_name(kind_value(expected_kind))}"
        )
    if m.role != SENDER[m.kind]:
        role = pb.SenderRole.Name(SENDER[m.kind]).removeprefix("SENDER_ROLE_").lower()
        out.append(f"{kind_name(m.kind)} payload must come from the {role}")
    return out


def _tensor_problems(m: pb.PayloadManifest, arrays: Arrays) -> list[str]:
    out: list[str] = []
    declared: dict[str, pb.TensorSpec] = {}
    for spec in m.tensors:
        if spec.name in declared:
            out.append(f"tensor '{spec.name}' declared twice")
        declared[spec.name] = spec
    for name, spec in declared.items():
        if name not in arrays:
            out.append(f"missing tensor '{name}'")
            continue
        a = np.asarray(arrays[name])
        if tuple(spec.shape) != a.shape:
            out.append(f"tensor '{name}' has shape {a.shape}, manifest says {tuple(spec.shape)}")
        if spec.dtype != a.dtype.name:
            out.append(f"tensor '{name}' has dtype {a.dtype.name}, manifest says {spec.dtype}")
    out += [f"extra tensor '{name}' not in the manifest" for name in arrays if name not in declared]
    return out


def _device_problems(m: pb.PayloadManifest) -> list[str]:
    out = []
    if m.role == pb.SENDER_ROLE_DEVICE and not m.HasField("partition_id"):
        out.append("device payload without a partition id")
    if len(set(m.modalities)) != len(m.modalities):
        out.append(f"modalities {list(m.modalities)} repeat a name")
    for name, count in sorted(m.modality_counts.items()):
        if name not in m.modalities:
            out.append(f"count for modality '{name}' outside the modality set")
        if count < 0:
            out.append(f"negative count {count} for modality '{name}'")
    return out


def _id_problems(m: pb.PayloadManifest, arrays: Arrays) -> list[str]:
    if Z not in arrays or IDS not in arrays:
        return [f"{kind_name(m.kind)} payload needs tensors '{IDS}' and '{Z}'"]
    z, ids = np.asarray(arrays[Z]), np.asarray(arrays[IDS])
    rows = z.shape[0] if z.ndim == 2 else None
    out = []
    if rows is None:
        out.append(f"representations '{Z}' must be 2-D, got shape {z.shape}")
    elif len(m.public_ids) != rows:
        out.append(f"{len(m.public_ids)} public ids for {rows} representation rows")
    if ids.shape != (len(m.public_ids),) or not np.array_equal(ids, np.asarray(m.public_ids)):
        out.append(f"tensor '{IDS}' differs from the manifest's public ids")
    if len(set(m.public_ids)) != len(m.public_ids):
        out.append("public ids repeat")
    return out


def _prototype_problems(arrays: Arrays) -> list[str]:
    if Z not in arrays or CLASSES not in arrays:
        return [f"PROTOTYPES payload needs tensors '{CLASSES}' and '{Z}'"]
    z, classes = np.asarray(arrays[Z]), np.asarray(arrays[CLASSES])
    out = []
    if z.ndim != 2 or classes.shape != (z.shape[0],):
        out.append(f"prototypes '{Z}' {z.shape} and '{CLASSES}' {classes.shape} do not match")
    if not np.issubdtype(classes.dtype, np.integer):
        out.append(f"prototype classes have dtype {classes.dtype.name}, not an integer type")
    elif (classes < 0).any() or len(np.unique(classes)) != classes.size:
        out.append("prototype classes must be distinct and non-negative")
    for name in sorted(set(arrays) - {Z, CLASSES}):
        if name.endswith(SCALE):  # a quantised tensor's scale, checked on dequantising
            continue
        if not name.startswith(MODALITY_SET) or name == MODALITY_SET:
            out.append(f"prototype tensor '{name}' is neither '{Z}', '{CLASSES}' nor 'set/<a>+<b>'")
        elif np.asarray(arrays[name]).shape != z.shape:
            out.append(f"prototypes '{name}' {np.asarray(arrays[name]).shape}, not {z.shape}")
    return out


def manifest_record(manifest: bytes, key: str = MANIFEST_KEY) -> ConfigRecord:
    """Wrap manifest bytes in a Flower ConfigRecord ``{key: manifest}`` for its message."""
    return ConfigRecord({key: bytes(manifest)})


def manifest_from(record: ConfigRecord | None, key: str = MANIFEST_KEY) -> bytes | None:
    """Return the manifest bytes in ``record`` (from :func:`manifest_record`), else None.

    Pass the result straight to :func:`validate_payload`, which reports a
    missing or malformed manifest as a problem.
    """
    if record is None or key not in record:
        return None
    value = record[key]
    return value if isinstance(value, bytes) else None
