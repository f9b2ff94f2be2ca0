"""Sweep grids: read, expanded into cells, refused with the bad entry named."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.grid import GridError, cells, check, read_grid
from experiments.report import csv_text, rows
from experiments.run import main, resolved

ROOT = Path(__file__).resolve().parents[2]


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_the_shipped_grids_are_valid(tmp_path: Path):
    for name in ("quick", "full"):
        grid = read_grid(ROOT / "conf" / "grids" / f"{name}.toml")
        grid_cells = cells(grid, tmp_path)
        check(grid_cells, resolved)
        assert len(grid_cells) == (
            len(grid.methods) * len(grid.seeds) * len(grid.datasets) * len(grid.settings)
        )


def test_cells_cross_datasets_settings_methods_and_seeds(tmp_path: Path):
    path = _grid(
        tmp_path,
        """
[grid]
methods = ["mlecs", "fedit"]
seeds = [0, 1]
datasets = ["hapt", "easyvqa"]
[grid.base]
num-server-rounds = 3
[grid.settings.a]
"modality.missing-rate" = 0.3
[grid.settings.b]
"modality.scenario" = "full"
""",
    )
    grid_cells = cells(read_grid(path), tmp_path / "out")
    assert len(grid_cells) == 2 * 2 * 2 * 2
    c = next(c for c in grid_cells if c.group == "easyvqa/a" and c.method == "fedit")
    assert c.config["dataset"] == "easyvqa" and c.config["modality.missing-rate"] == 0.3
    assert c.config["num-server-rounds"] == 3
    assert c.config["output-dir"].endswith("runs/easyvqa/a")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[grid]\nmethods = ["mlecs", "fedavgx"]\nseeds = [0]', "fedavgx"),
        ("[grid]\nmethods = []\nseeds = [0]", "'methods'"),
        ('[grid]\nmethods = ["mlecs"]\nseeds = []', "'seeds'"),
        ('[grid]\nmethods = ["mlecs"]\nseeds = [0]\ncolour = "red"', "colour"),
        ('[grid]\nmethods = ["mlecs"]\nseeds = ["x"]', "integers"),
        ("[other]\nx = 1", r"no \[grid\] table"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_entry(tmp_path: Path, text: str, named: str):
    with pytest.raises(GridError, match=named):
        read_grid(_grid(tmp_path, text))


def test_a_bad_key_stops_the_sweep_before_any_run(tmp_path: Path, capsys):
    path = _grid(
        tmp_path,
        '[grid]\nmethods = ["mlecs"]\nseeds = [0]\n[grid.settings.x]\n"lora.rnak" = 4\n',
    )
    with pytest.raises(SystemExit, match="lora.rnak"):
        main(["--grid", str(path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "runs").exists()


def test_results_csv_has_one_row_per_run_with_tail_and_ledger():
    summary = {
        "seed": 3,
        "rounds": 2,
        "final": {"client_f1": 0.5},
        "tail": {"client_f1": 0.4},
        "comm": {"ratio": 0.01},
    }
    table = rows({"hapt/mixed": {"mlecs": [summary], "fedit": [dict(summary, seed=4)]}})
    text = csv_text(table)
    lines = text.strip().splitlines()
    assert len(lines) == 3 and "tail_client_f1" in lines[0] and "comm_ratio" in lines[0]
    assert lines[1].startswith("hapt/mixed,mlecs,3")
