"""Where a difference between two methods comes from: paired per-device tail scores.

A sweep's tables compare methods by the mean over devices. This breaks that
difference down by the devices' modality sets (``--by modality``: unimodal or
multimodal devices differ in what CCL and fusion can do for them) or by their
encoders (``--by encoder``: devices cycle through the encoder families, and a weak
encoder limits what any method can do) or by their device profiles (``--by profile``:
a profile of ``profile-mix`` may lower a box's LoRA rank): for each seed both ran,
each device's tail score (its mean over the last ``--tail`` evaluated rounds of
``rounds.jsonl``) under method ``a`` minus the same device's under ``b`` (from
``--runs-b`` when the two arms are separate sweeps; groups follow ``a``'s runs),
averaged within each group of devices; then over seeds, a mean with a 95%
t interval (the seed stays the unit of replication, as in `experiments.stats`).

Usage::

    python -m experiments.devices --runs outputs/hapt_scarce_skew/runs --a no-ccl --b mlecs \
        [--by modality|encoder|profile] [--runs-b OTHER_SWEEP/runs]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.grid import finished_runs
from experiments.stats import format_interval, mean_interval

Groups = Callable[[dict, int], dict[int, str]]


def device_tail(rounds: list[dict], metric: str, tail: int) -> dict[int, float]:
    """Each device's mean ``metric`` over the last ``tail`` rounds that scored devices.

    Returns
    -------
    dict
        Partition id -> tail mean (devices sampled in none of those rounds are absent).
    """
    scored = [r for r in rounds if r.get("clients")][-tail:]
    values: dict[int, list[float]] = {}
    for r in scored:
        for entry in r["clients"].values():
            if metric in entry:
                values.setdefault(int(entry["partition_id"]), []).append(float(entry[metric]))
    return {pid: float(np.mean(v)) for pid, v in values.items()}


def modality_groups(run_config: dict, num_nodes: int) -> dict[int, str]:
    """Partition id -> ``"multimodal"`` or ``"unimodal"``, as the run drew them."""
    from common.data.views import held_modalities
    from common.settings import RunSettings

    settings = RunSettings.from_run_config(run_config)
    return {
        pid: "multimodal" if len(held_modalities(settings, pid, num_nodes)) > 1 else "unimodal"
        for pid in range(num_nodes)
    }


def encoder_groups(run_config: dict, num_nodes: int) -> dict[int, str]:
    """Partition id -> the device's encoders, e.g. ``"sensor:gru"``, as the run built them.

    Each device's own settings count (``client_app.handlers.device_settings``): a
    device profile from ``profile-mix`` may narrow its encoder families.
    """
    from client_app.handlers import device_settings
    from common.data.views import held_modalities, task_info
    from common.model.encoders import encoder_kind
    from common.model.factory import encoder_choices
    from common.settings import RunSettings

    settings = RunSettings.from_run_config(run_config)
    specs = {s.name: s for s in task_info(settings).specs}
    out = {}
    for pid in range(num_nodes):
        choices = encoder_choices(device_settings(run_config, {"partition-id": pid})[0].model)
        kinds = {
            f"{specs[m].kind}:{encoder_kind(specs[m], choices, pid)}"
            for m in held_modalities(settings, pid, num_nodes)
        }
        out[pid] = "+".join(sorted(kinds))
    return out


def profile_groups(run_config: dict, num_nodes: int) -> dict[int, str]:
    """Partition id -> the device's profile and LoRA rank, e.g. ``"sbc-2gb (rank 2)"``.

    A box that holds the rest (``lora.hold-rest``) and trains its first ``r`` of the
    run's ``R`` components reads ``"sbc-2gb (rank 2 of 8)"``.
    """
    from client_app.handlers import device_settings

    out = {}
    for pid in range(num_nodes):
        settings, profile = device_settings(run_config, {"partition-id": pid})
        name = profile.name if profile is not None else "no profile"
        lora = settings.lora
        trained = lora.trained_rank if 0 < lora.trained_rank < lora.rank else 0
        rank = f"{trained} of {lora.rank}" if trained else f"{lora.rank}"
        out[pid] = f"{name} (rank {rank})"
    return out


GROUPINGS: dict[str, Groups] = {
    "modality": modality_groups,
    "encoder": encoder_groups,
    "profile": profile_groups,
}


def _read_run(folder: Path) -> tuple[list[dict], dict, dict]:
    rounds = [json.loads(x) for x in (folder / "rounds.jsonl").read_text().splitlines() if x]
    config = json.loads((folder / "config.json").read_text())["run_config"]
    summary = json.loads((folder / "summary.json").read_text())
    return rounds, config, summary


def compare(
    runs: Path,
    a: str,
    b: str,
    metric: str = "f1",
    tail: int = 5,
    groups: Groups = modality_groups,
    runs_b: Path | None = None,
) -> dict[str, dict]:
    """Paired per-device differences ``a - b`` by device group, over seeds.

    Parameters
    ----------
    runs : Path
        A sweep's run folder, holding ``<method>-s<seed>/`` folders.
    groups : callable
        ``groups(run_config, num_nodes) -> {partition id: group name}``, from ``a``'s run.
    runs_b : Path, optional
        The run folder of ``b`` when the two arms are separate sweeps (default ``runs``).

    Returns
    -------
    dict
        Group name (and ``"all"``) -> ``{"seeds", "devices", "mean", "low", "high",
        "better", "worse"}``: the number of seeds, of device pairs, the mean over
        seeds of the per-seed mean difference with its 95% t interval, and how
        many device pairs ``a`` scored above / below ``b``.
    """
    per_seed: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    finished_b = finished_runs(runs_b or runs, b)
    for seed, folder_a in finished_runs(runs, a).items():
        if seed not in finished_b:
            continue
        folder_b = finished_b[seed]
        rounds_a, config, summary = _read_run(folder_a)
        rounds_b = _read_run(folder_b)[0]
        va, vb = device_tail(rounds_a, metric, tail), device_tail(rounds_b, metric, tail)
        names = groups(config, int(summary["num_nodes"]))
        by_group: dict[str, list[float]] = {}
        for pid in sorted(set(va) & set(vb)):
            d = va[pid] - vb[pid]
            for g in ("all", names.get(pid, "unknown")):
                by_group.setdefault(g, []).append(d)
        for g, diffs in by_group.items():
            per_seed.setdefault(g, []).append(float(np.mean(diffs)))
            c = counts.setdefault(g, [0, 0, 0])
            c[0] += len(diffs)
            c[1] += sum(x > 0 for x in diffs)
            c[2] += sum(x < 0 for x in diffs)
    out = {}
    for g, means in per_seed.items():
        mean, low, high = mean_interval(means)
        n, better, worse = counts[g]
        out[g] = {
            "seeds": len(means),
            "devices": n,
            "mean": mean,
            "low": low,
            "high": high,
            "better": better,
            "worse": worse,
        }
    return out


def table(result: dict[str, dict], a: str, b: str, metric: str) -> str:
    """A markdown table of :func:`compare`'s result."""
    lines = [
        f"| devices | seeds | device pairs | {a} - {b} ({metric}) | {a} above / below |",
        "|---|---|---|---|---|",
    ]
    for g in sorted(result, key=lambda k: (k != "all", k)):
        r = result[g]
        diff = format_interval(r["mean"], r["low"], r["high"])
        counts = f"{r['better']} / {r['worse']}"
        lines.append(f"| {g} | {r['seeds']} | {r['devices']} | {diff} | {counts} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=Path, required=True, help="a sweep's runs/ folder")
    p.add_argument("--a", required=True, help="method a")
    p.add_argument("--b", required=True, help="method b")
    p.add_argument("--metric", default="f1", help="a per-device metric in rounds.jsonl")
    p.add_argument("--tail", type=int, default=5, help="last evaluated rounds averaged")
    p.add_argument("--by", choices=sorted(GROUPINGS), default="modality", help="device groups")
    p.add_argument("--runs-b", type=Path, help="b's runs/ folder, if not --runs")
    return p


def main(argv: list[str] | None = None) -> None:
    """Print the per-device breakdown of ``a - b``."""
    args = build_parser().parse_args(argv)
    groups = GROUPINGS[args.by]
    result = compare(args.runs, args.a, args.b, args.metric, args.tail, groups, args.runs_b)
    if not result:
        raise SystemExit(f"error: no seed with finished runs of both '{args.a}' and '{args.b}'")
    print(table(result, args.a, args.b, args.metric))


if __name__ == "__main__":
    main()
