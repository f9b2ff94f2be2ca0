"""A user's own multimodal data: a JSONL data file, validated line by line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common.data.samples import DataPool, ModalitySpec, SampleSet
from common.settings import ConfigError

PUBLIC_CLIENTS = ("server", "public")  # "client" values that mark public data
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FILE_SUFFIXES = (".npy", ".txt", *IMAGE_SUFFIXES)
_KEYS = ("modalities", "target", "label", "id", "client", "split")
_KIND_BY_NDIM = {1: "vector", 2: "sensor", 3: "image"}


def load_jsonl(path: Path, cache_dir: Path) -> DataPool:
    """Read and validate a JSONL data file before any training starts.

    Each line is ``{"modalities": {name: value}, "target": str, "label": int |
    str, "id": int, "client": int | str, "split": "train" | "test"}``; only
    ``modalities`` and ``target`` are required. A value is a file path
    (relative to the file's directory; ``.npy`` array, ``.png``/``.jpg``/
    ``.jpeg`` RGB image in [0, 1], ``.txt`` text), an inline string (text) or
    an inline list (array). A modality's kind follows from its value: text,
    ``(D,)`` vector, ``(T, C)`` sensor or ``(H, W, C)`` image; kind and shape
    must agree on every line.

    Parameters
    ----------
    path : pathlib.Path
        The JSONL file, read through the ``datasets`` library.
    cache_dir : pathlib.Path
        Directory for the ``datasets`` cache.

    Returns
    -------
    DataPool
        ``mask`` False where a line lacks a modality; ``labels`` -1 where a
        line has none (string labels are indexed in sorted order, and each
        class is named by its most frequent target); ``groups`` the lines'
        ``"client"`` when any private line names one; ``public`` marks lines
        whose client is "server" or "public"; ``splits`` from ``"split"``.
        Ids are the lines' ``"id"``, else the sample index.

    Raises
    ------
    ConfigError
        Naming the path, or the 1-based line and the problem: malformed JSON,
        a missing ``target``, an unknown key, a missing file, or a modality
        whose kind or shape differs from an earlier line.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"JSONL data file not found: no file at '{path}'")
    lines = _read_lines(path, cache_dir)
    rows: list[tuple[int, dict[str, Any]]] = []
    specs: dict[str, tuple[ModalitySpec, int]] = {}  # name -> (spec, first line)
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row = _parse_line(text, number, path)
        values = {}
        for name, raw in row["modalities"].items():
            if raw is None:
                continue
            value = _load_value(raw, path.parent, number, name)
            spec = _spec_of(name, value, f"JSONL file {path}, line {number}")
            first = specs.setdefault(name, (spec, number))
            if first[0] != spec:
                raise ConfigError(
                    f"JSONL file {path}, line {number}: modality '{name}' is "
                    f"{_describe(spec)} but line {first[1]} has {_describe(first[0])}"
                )
            values[name] = value
        if not values:
            raise ConfigError(f"JSONL file {path}, line {number}: no modality value")
        rows.append((number, {**row, "modalities": values}))
    if not rows:
        raise ConfigError(f"JSONL file {path} has no samples")
    return _assemble(rows, tuple(s for s, _ in specs.values()), path)


def _read_lines(path: Path, cache_dir: Path) -> list[str]:
    """Read the file's lines, blank ones kept so numbers match the file."""
    import datasets

    # The "text" builder keeps one row per line whatever each line holds; the
    # "json" builder would reject lines whose types differ (e.g. client 0 and
    # client "server"), before we could name the offending line.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(
            "text",
            data_files=str(path),
            split="train",
            cache_dir=str(Path(cache_dir) / "hf-datasets"),
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    return list(table["text"])


def _parse_line(text: str, number: int, path: Path) -> dict[str, Any]:
    where = f"JSONL file {path}, line {number}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: malformed JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    unknown = sorted(set(row) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}, expected {list(_KEYS)}")
    if not isinstance(row.get("target"), str):
        raise ConfigError(f"{where}: missing or non-string 'target'")
    if not isinstance(row.get("modalities"), dict) or not row["modalities"]:
        raise ConfigError(f"{where}: 'modalities' must be a non-empty object")
    checks = {
        "label": lambda v: isinstance(v, str) or (_is_int(v) and v >= 0),
        "id": _is_int,
        "client": lambda v: isinstance(v, str) or _is_int(v),
        "split": lambda v: v in ("train", "test"),
    }
    for key, ok in checks.items():
        if row.get(key) is not None and not ok(row[key]):
            raise ConfigError(f"{where}: invalid '{key}' {row[key]!r}")
    return row


def _load_value(raw: Any, root: Path, number: int, name: str) -> str | np.ndarray:
    """Turn a modality value into text or a float32 array."""
    where = f"line {number}, modality '{name}'"
    if isinstance(raw, str) and raw.lower().endswith(FILE_SUFFIXES):
        file = (root / raw).resolve()
        if not file.is_file():
            raise ConfigError(f"JSONL file {where}: file '{file}' does not exist")
        suffix = file.suffix.lower()
        try:
            if suffix == ".txt":
                return file.read_text(encoding="utf-8").strip()
            if suffix == ".npy":
                return np.load(file, allow_pickle=False).astype(np.float32)
            from PIL import Image

            with Image.open(file) as image:
                return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, ValueError) as err:
            raise ConfigError(f"JSONL file {where}: cannot read '{file}': {err}") from None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        try:
            return np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError):
            raise ConfigError(
                f"JSONL file {where}: inline list is not a rectangular numeric array"
            ) from None
    raise ConfigError(f"JSONL file {where}: expected a string or a list, got {raw!r}")


def _spec_of(name: str, value: str | np.ndarray, where: str) -> ModalitySpec:
    if isinstance(value, str):
        return ModalitySpec(name, "text")
    kind = _KIND_BY_NDIM.get(value.ndim)
    if kind is None:
        raise ConfigError(
            f"{where}: modality '{name}' has a {value.ndim}-D array "
            f"{value.shape}; expected 1-D, 2-D or 3-D"
        )
    return ModalitySpec(name, kind, tuple(int(d) for d in value.shape))


def _assemble(
    rows: list[tuple[int, dict[str, Any]]],
    specs: tuple[ModalitySpec, ...],
    path: Path,
) -> DataPool:
    """Stack validated rows into a SampleSet and the split metadata."""
    n = len(rows)
    inputs: dict[str, np.ndarray] = {}
    mask = np.zeros((n, len(specs)), dtype=bool)
    for col, spec in enumerate(specs):
        if spec.kind == "text":
            values = np.full(n, "", dtype=object)
        else:
            values = np.zeros((n, *spec.shape), dtype=np.float32)
        for i, (_, row) in enumerate(rows):
            if spec.name in row["modalities"]:
                values[i] = row["modalities"][spec.name]
                mask[i, col] = True
        inputs[spec.name] = values
    targets = [row["target"] for _, row in rows]
    labels, class_names = _labels(rows, targets, path)
    ids = np.array(
        [row["id"] if row.get("id") is not None else k for k, (_, row) in enumerate(rows)],
        dtype=np.int64,
    )
    seen: dict[int, int] = {}
    for (number, _), sample_id in zip(rows, ids.tolist(), strict=True):
        if seen.setdefault(sample_id, number) != number:
            raise ConfigError(
                f"JSONL file {path}, line {number}: id {sample_id} already used on "
                f"line {seen[sample_id]}"
            )
    clients, public = _clients(rows, path)
    splits = np.array(
        [{"train": 1, "test": 2}.get(row.get("split"), 0) for _, row in rows],
        dtype=np.int8,
    )
    samples = SampleSet(specs, inputs, mask, targets, labels, ids)
    return DataPool(samples, tuple(class_names), clients, public, splits)


def _labels(
    rows: list[tuple[int, dict[str, Any]]], targets: list[str], path: Path
) -> tuple[np.ndarray, list[str]]:
    """Label indices (-1 where absent) and each class's most frequent target."""
    given = [(number, row.get("label")) for number, row in rows]
    typed = [(number, v) for number, v in given if v is not None]
    if not typed:
        return np.full(len(rows), -1, dtype=np.int64), []
    first_type = type(typed[0][1])
    for number, value in typed:
        if type(value) is not first_type:
            raise ConfigError(
                f"JSONL file {path}, line {number}: label {value!r} mixes strings and "
                f"integers (line {typed[0][0]} has {typed[0][1]!r})"
            )
    if first_type is str:
        order = sorted({v for _, v in typed})
        index = {name: k for k, name in enumerate(order)}
        labels = [index[v] if v is not None else -1 for _, v in given]
    else:
        labels = [v if v is not None else -1 for _, v in given]
    labels_array = np.array(labels, dtype=np.int64)
    class_names = []
    for k in range(int(labels_array.max()) + 1):
        texts = Counter(t for t, lab in zip(targets, labels, strict=True) if lab == k)
        class_names.append(texts.most_common(1)[0][0] if texts else f"class {k}")
    return labels_array, class_names


def _clients(
    rows: list[tuple[int, dict[str, Any]]], path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return natural device keys and public marks from the ``"client"`` field."""
    raw = [row.get("client") for _, row in rows]
    public = np.array([isinstance(c, str) and c.lower() in PUBLIC_CLIENTS for c in raw], dtype=bool)
    named = [c is not None and not p for c, p in zip(raw, public, strict=True)]
    if not any(named):
        return None, public if public.any() else None
    for (number, _), c, p in zip(rows, raw, public, strict=True):
        if c is None and not p:
            raise ConfigError(
                f"JSONL file {path}, line {number}: no 'client', but other lines "
                "name one; give every private line a client"
            )
    clients = np.array([None if p else c for c, p in zip(raw, public, strict=True)], dtype=object)
    return clients, public if public.any() else None


def _describe(spec: ModalitySpec) -> str:
    return spec.kind if spec.kind == "text" else f"{spec.kind} {spec.shape}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
