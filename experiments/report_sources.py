"""What a report reads: the run folders a run or a sweep wrote, and each device's facts.

A report is written from output files only, never from memory of a run. A run
folder holds ``summary.json`` (the run's scores and ledger), ``rounds.jsonl`` (one
record per round) and ``config.json`` (its run config). A sweep's folder holds
them under ``runs/`` (``runs/<method>-s<seed>`` for a sweep given by flags,
``runs/<dataset>/<setting>/<method>-s<seed>`` for a grid); every run folder found
below the source is read, so runs added to a folder by later sweeps are included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.grid import run_name

RUN_FILES = ("summary.json", "rounds.jsonl", "config.json")


@dataclass
class Run:
    """One finished run, as its files hold it."""

    folder: Path
    summary: dict
    rounds: list[dict]
    run_config: dict

    @property
    def method(self) -> str:
        return str(self.summary.get("method", self.run_config.get("method", "?")))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.run_config.get("seed", 0)))


@dataclass
class Device:
    """What a device held in one run: its modalities, encoders and missing shares.

    ``missing`` maps each held modality to the share of the device's samples
    (train, test and public share together) without it; ``None`` where the run's
    data could not be rebuilt here (the dataset's package missing, or a
    deployment whose devices declared their modalities in their node config).
    """

    partition_id: int
    modalities: tuple[str, ...]
    encoders: str
    missing: dict[str, float] | None


Groups = dict[str, dict[str, list[Run]]]  # group -> method -> runs, by seed


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run's files."""
    return all((folder / name).is_file() for name in RUN_FILES)


def read_run(folder: Path) -> Run:
    """The run in ``folder``.

    Raises
    ------
    ValueError
        When a file is missing or not the JSON it should be, naming the file.
    """
    try:
        summary = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "config.json").read_text()).get("run_config", {})
        lines = (folder / "rounds.jsonl").read_text().splitlines()
        rounds = [json.loads(x) for x in lines if x.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder}: unreadable run files ({err})") from None
    return Run(folder=folder, summary=summary, rounds=rounds, run_config=config)


def read_source(source: Path) -> Groups:
    """Every finished run at or below ``source``, grouped like the sweep's tables.

    A run folder given directly is one group (``"run"``). Below a sweep's folder,
    the group is the run folder's parent path under ``runs/`` (``"default"`` for
    a sweep given by flags). Methods are in alphabetical order, with ``mlecs``
    first when present, so that the paired differences are taken against it.

    Raises
    ------
    FileNotFoundError
        When ``source`` holds no finished run.
    """
    if is_run_folder(source):
        run = read_run(source)
        return {"run": {run.method: [run]}}
    base = source / "runs" if (source / "runs").is_dir() else source
    found = sorted(p.parent for p in base.rglob("summary.json") if is_run_folder(p.parent))
    if not found:
        raise FileNotFoundError(
            f"no finished run below {source} (a run folder holds {', '.join(RUN_FILES)})"
        )
    groups: Groups = {}
    for folder in found:
        run = read_run(folder)
        if folder.name != run_name(run.method, run.seed):
            continue  # not a sweep's run folder (e.g. a copy); its place is ambiguous
        group = str(folder.parent.relative_to(base)) if folder.parent != base else "default"
        groups.setdefault(group.replace("\\", "/"), {}).setdefault(run.method, []).append(run)
    out: Groups = {}
    for group, by_method in groups.items():
        order = sorted(by_method, key=lambda m: (m != "mlecs", m))
        out[group] = {m: sorted(by_method[m], key=lambda r: r.seed) for m in order}
    return out


def devices(run: Run) -> list[Device]:
    """Each device of ``run`` as the run drew it (from its run config).

    Devices whose data cannot be rebuilt here keep their partition id with no
    modalities, encoders ``"?"`` and ``missing`` None.
    """
    num_nodes = int(run.summary.get("num_nodes", 0))
    try:
        from common.data.views import build_client_data
        from common.settings import RunSettings
        from experiments.devices import encoder_groups

        settings = RunSettings.from_run_config(run.run_config)
        encoders = encoder_groups(run.run_config, num_nodes)
        out = []
        for pid in range(num_nodes):
            data = build_client_data(settings, pid, num_nodes)
            names = data.train.modality_names
            mask = np.concatenate([data.train.mask, data.test.mask, data.public.mask])
            missing = {m: float(1.0 - mask[:, names.index(m)].mean()) for m in data.modalities}
            out.append(Device(pid, data.modalities, encoders[pid], missing))
        return out
    except Exception:  # noqa: BLE001 -- a report still renders what the files hold
        return [Device(pid, (), "?", None) for pid in range(num_nodes)]


def modality_names(run: Run) -> tuple[str, ...]:
    """The dataset's modality names, or ``()`` where its data cannot be loaded here."""
    try:
        from common.data.views import task_info
        from common.settings import RunSettings

        return tuple(s.name for s in task_info(RunSettings.from_run_config(run.run_config)).specs)
    except Exception:  # noqa: BLE001 -- see devices()
        return ()
