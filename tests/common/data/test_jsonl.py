"""Tests for the JSONL data loader and its validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.data.jsonl import load_jsonl
from common.data.views import build_client_data, build_server_data, task_info
from common.settings import ConfigError, RunSettings


def _write(path: Path, rows: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder with sensor arrays, images and a text file."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(root / f"s{i}.npy", rng.normal(size=(10, 3)).astype(np.float32))
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
    (root / "note.txt").write_text("a note from a file\n")
    return root


def test_manifest_loads_files_inline_values_and_missing_modalities(
    data_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    path = _write(
        data_dir / "m.jsonl",
        [
            {
                "modalities": {"sig": "s0.npy", "img": "img/0.png", "txt": "note.txt"},
                "target": "cat",
                "label": "b",
            },
            {
                "modalities": {"sig": "s1.npy", "txt": "inline words", "v": [1, 2]},
                "target": "dog",
                "label": "a",
                "split": "test",
            },
            "",
            {"modalities": {"img": "img/2.png", "v": [3.5, 4]}, "target": "cat"},
        ],
    )

    # Execute
    pool = load_jsonl(path, tmp_path / "cache")

    # Assert
    s = pool.samples
    kinds = {spec.name: (spec.kind, spec.shape) for spec in s.specs}
    assert kinds == {
        "sig": ("sensor", (10, 3)),
        "img": ("image", (8, 8, 3)),
        "txt": ("text", ()),
        "v": ("vector", (2,)),
    }
    assert s.modality_names == ("sig", "img", "txt", "v")
    np.testing.assert_array_equal(
        s.mask,
        [[1, 1, 1, 0], [1, 0, 1, 1], [0, 1, 0, 1]],
    )
    np.testing.assert_allclose(s.inputs["sig"][1], np.load(data_dir / "s1.npy"))
    assert (s.inputs["sig"][2] == 0).all()
    pixels = np.asarray(Image.open(data_dir / "img" / "2.png"), dtype=np.float32)
    np.testing.assert_allclose(s.inputs["img"][2], pixels / 255.0)
    assert s.inputs["img"].dtype == np.float32 and s.inputs["img"].max() <= 1.0
    assert list(s.inputs["txt"]) == ["a note from a file", "inline words", ""]
    np.testing.assert_allclose(s.inputs["v"], [[0, 0], [1, 2], [3.5, 4]])
    assert s.targets == ["cat", "dog", "cat"]
    np.testing.assert_array_equal(s.labels, [1, 0, -1])  # "a" -> 0, "b" -> 1
    assert pool.class_names == ("dog", "cat")
    np.testing.assert_array_equal(s.ids, [0, 1, 2])
    np.testing.assert_array_equal(pool.splits, [0, 2, 0])
    assert pool.groups is None and pool.public is None


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (['{"modalities": {"t": "x"}, "target": "a"}', "{not json"], "line 2.*JSON"),
        ([{"modalities": {"t": "x"}}], "line 1.*'target'"),
        (
            [{"modalities": {"t": "x"}, "target": "a"}, "", {"modalities": {}}],
            "line 3",
        ),
        (
            [{"modalities": {"s": "missing.npy"}, "target": "a"}],
            "line 1.*modality 's'.*missing.npy.*does not exist",
        ),
        (
            [
                {"modalities": {"v": [1, 2]}, "target": "a"},
                {"modalities": {"v": [1, 2, 3]}, "target": "b"},
            ],
            r"line 2.*'v' is vector \(3,\) but line 1 has vector \(2,\)",
        ),
        (
            [
                {"modalities": {"v": [1, 2]}, "target": "a"},
                {"modalities": {"v": "text now"}, "target": "b"},
            ],
            "line 2.*'v' is text",
        ),
        ([{"modalities": {"v": [[1], [2, 3]]}, "target": "a"}], "line 1.*'v'"),
        ([{"modalities": {"v": [1]}, "target": "a", "targte": "b"}], "line 1.*targte"),
        (
            [
                {"modalities": {"v": [1]}, "target": "a", "label": 1},
                {"modalities": {"v": [1]}, "target": "b", "label": "x"},
            ],
            "line 2.*mixes",
        ),
        (
            [
                {"modalities": {"v": [1]}, "target": "a", "id": 5},
                {"modalities": {"v": [1]}, "target": "b", "id": 5},
            ],
            "line 2: id 5 already used on line 1",
        ),
        (
            [
                {"modalities": {"v": [1]}, "target": "a", "client": 1},
                {"modalities": {"v": [1]}, "target": "b"},
            ],
            "line 2.*no 'client'",
        ),
        ([{"modalities": {"v": [1]}, "target": "a", "split": "dev"}], "line 1.*split"),
    ],
)
def test_bad_manifests_name_the_line_and_problem(
    tmp_path: Path, rows: list[Any], match: str
) -> None:
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError, match=match):
        load_jsonl(path, tmp_path / "cache")


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "nowhere" / "m.jsonl"
    settings = RunSettings.from_run_config(
        {
            "dataset": "jsonl",
            "data.jsonl.path": str(path),
            "cache-dir": str(tmp_path),
        }
    )

    # Execute / Assert
    with pytest.raises(ConfigError, match=r"nowhere/m\.jsonl"):
        task_info(settings)
    with pytest.raises(ConfigError, match=r"nowhere/m\.jsonl"):
        load_jsonl(path, tmp_path)


def test_manifest_clients_give_a_natural_split(tmp_path: Path) -> None:
    # Prepare: clients 10 and 2 (numeric order: 2 first), plus public lines
    rows = []
    for i in range(30):
        client = [2, 10, "server"][i % 3]
        rows.append(
            {
                "modalities": {"v": [i, 1.0], "q": f"question {i}"},
                "target": f"answer {i % 2}",
                "label": i % 2,
                "client": client,
                "id": 1000 + i,
            }
        )
    path = _write(tmp_path / "m.jsonl", rows)
    settings = RunSettings.from_run_config(
        {
            "dataset": "jsonl",
            "data.jsonl.path": str(path),
            "data.jsonl.prompt": "Say it.",
            "cache-dir": str(tmp_path / "cache"),
            "modality.scenario": "full",
            "modality.missing-rate": 0.0,
        }
    )

    # Execute
    info = task_info(settings)
    first = build_client_data(settings, 0, 2)
    second = build_client_data(settings, 1, 2)
    server = build_server_data(settings)

    # Assert
    assert info.prompt == "Say it." and info.class_names == ["answer 0", "answer 1"]
    assert "question 3" in info.corpus and "Say it." in info.corpus
    first_ids = np.concatenate([first.train.ids, first.test.ids]) - 1000
    second_ids = np.concatenate([second.train.ids, second.test.ids]) - 1000
    assert sorted(first_ids % 3) == [0] * 10
    assert sorted(second_ids % 3) == [1] * 10
    public_ids = np.concatenate([server.public_train.ids, server.public_test.ids])
    assert sorted(public_ids - 1000) == list(range(2, 30, 3))
    assert set(first.public.ids) <= set(server.public_train.ids)
    with pytest.raises(ConfigError, match="num-partitions = 3"):
        build_client_data(settings, 0, 3)
    with pytest.raises(ConfigError, match="'audio'"):
        build_client_data(settings, 0, 2, modalities=("audio",))
