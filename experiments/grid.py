"""Sweep grids: methods x datasets x named settings x seeds, read from a TOML file.

A grid file::

    [grid]
    methods = ["mlecs", "fedit", "standalone"]
    seeds = [0, 1, 2, 3, 4]
    datasets = ["hapt", "easyvqa"]      # optional (default: the base config's)
    num-nodes = 10                      # optional

    [grid.base]                          # optional: overrides for every cell
    num-server-rounds = 20

    [grid.settings.mixed]                # optional: named groups of overrides
    "modality.scenario" = "mixed"

    [grid.settings.missing-30]
    "modality.missing-rate" = 0.3

Every cell is checked (method known, every key a run-config key, every value
valid) before any run starts; a bad entry stops the sweep with its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.methods import METHODS
from common.run_config import flat_toml
from common.settings import ConfigError

CENTRALIZED = "centralized"  # the ceiling: one model on the pooled data (experiments.ceilings)
DEFAULT = "default"  # the group name of a sweep given by flags


class GridError(ValueError):
    """A grid file that cannot be run; the message names the entry."""


@dataclass
class SweepGrid:
    """The axes of a sweep (not Flower's ``Grid``, which reaches the nodes of a run)."""

    methods: list[str]
    seeds: list[int]
    datasets: list[str | None] = field(default_factory=lambda: [None])
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {DEFAULT: {}})
    base: dict[str, Any] = field(default_factory=dict)
    num_nodes: int = 10


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its group (dataset/setting), method, seed and full config."""

    group: str
    method: str
    seed: int
    config: dict


def read_grid(path: Path, base: dict[str, Any] | None = None) -> SweepGrid:
    """Read a grid file.

    Raises
    ------
    GridError
        On a missing ``[grid]`` table, an unknown entry, an empty axis, an
        unknown method or a seed that is not an integer.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise GridError(f"grid file {path}: {err}") from None
    table = raw.get("grid")
    if not isinstance(table, dict):
        raise GridError(f"grid file {path}: no [grid] table")
    known = {"methods", "seeds", "datasets", "settings", "base", "num-nodes"}
    unknown = sorted(set(table) - known) + sorted(set(raw) - {"grid"})
    if unknown:
        raise GridError(f"grid file {path}: unknown entries {unknown} (known: {sorted(known)})")
    grid = SweepGrid(
        methods=_axis(table, "methods", path),
        seeds=_axis(table, "seeds", path),
        base={**(base or {}), **flat_toml(table.get("base", {}))},
        num_nodes=int(table.get("num-nodes", 10)),
    )
    if "datasets" in table:
        grid.datasets = _axis(table, "datasets", path)
    if "settings" in table:
        groups = table["settings"]
        if not isinstance(groups, dict) or not groups:
            raise GridError(f"grid file {path}: [grid.settings] is empty")
        grid.settings = {str(k): flat_toml(v) for k, v in groups.items()}
    bad = [m for m in grid.methods if m not in (*METHODS, CENTRALIZED)]
    if bad:
        raise GridError(
            f"grid file {path}: unknown methods {bad}, expected some of {list(METHODS)}"
        )
    if any(isinstance(s, bool) or not isinstance(s, int) for s in grid.seeds):
        raise GridError(f"grid file {path}: seeds must be integers, got {grid.seeds}")
    return grid


def _axis(table: dict, name: str, path: Path) -> list:
    values = table.get(name)
    if not isinstance(values, list) or not values:
        raise GridError(f"grid file {path}: '{name}' must be a non-empty list")
    return list(values)


def run_name(method: str, seed: int | str) -> str:
    """The folder of one run in a sweep's ``runs`` folder (``seed`` may be a glob's ``*``)."""
    return f"{method}-s{seed}"


def finished_runs(folder: Path, method: str) -> dict[int, Path]:
    """Seed -> run folder, for ``method``'s runs in ``folder`` that wrote their summary.

    A folder of another method whose name starts with this one's (``no-ccl-s3`` for
    ``no``) is not taken, nor a run still going (no ``summary.json`` yet).
    """
    out = {}
    for run in folder.glob(run_name(method, "*")):
        seed = run.name.removeprefix(run_name(method, ""))
        if seed.isdigit() and (run / "summary.json").exists():
            out[int(seed)] = run
    return dict(sorted(out.items()))


def cells(grid: SweepGrid, out: Path) -> list[Cell]:
    """Every cell of ``grid``; run folders under ``out/runs``.

    A sweep given by flags (one dataset, no named settings) keeps the folders
    ``out/runs/<method>-s<seed>``; a grid file's cells live in
    ``out/runs/<dataset>/<setting>/<method>-s<seed>``.
    """
    flat = grid.datasets == [None] and list(grid.settings) == [DEFAULT]
    out_cells = []
    for dataset in grid.datasets:
        for name, overrides in grid.settings.items():
            config = {**grid.base, **overrides}
            if dataset is not None:
                config["dataset"] = dataset
            group = name if dataset is None else f"{dataset}/{name}"
            folder = out / "runs" if flat else out / "runs" / str(dataset or "") / name
            for method in grid.methods:
                for seed in grid.seeds:
                    cell = {
                        **config,
                        "method": method,
                        "seed": seed,
                        "output-dir": str(folder),
                        "run-name": run_name(method, seed),
                    }
                    out_cells.append(Cell(group, method, seed, cell))
    return out_cells


def check(cells_: list[Cell], resolve) -> None:
    """Resolve every cell's settings before any run; name the first bad one.

    Raises
    ------
    GridError
        Naming the cell (group, method, seed) and the problem.
    """
    for c in cells_:
        try:
            resolve(c.config)
        except ConfigError as err:
            raise GridError(f"cell {c.group} / {c.method} / seed {c.seed}: {err}") from None
