"""A sweep's output files with known scores, in the layout experiments.run writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import TINY

LEDGER = {
    "bytes_lora_up": 2000.0,
    "bytes_prompt_up": 500.0,
    "bytes_encoder_up": 0.0,
    "bytes_reps_up": 1500.0,
    "bytes_lora_down": 2000.0,
    "bytes_prompt_down": 500.0,
    "bytes_encoder_down": 0.0,
    "bytes_reps_down": 3000.0,
    "bytes_up_per_client_round": 4000.0,
    "bytes_down_per_client_round": 5500.0,
    "ratio": 0.02,
}


def hapt_config(cache_dir: Path, seed: int, **extra) -> dict:
    """A run config of the tiny HAPT setting with mixed modalities."""
    return {
        **TINY,
        "dataset": "hapt",
        "seed": seed,
        "cache-dir": str(cache_dir),
        "modality.scenario": "mixed",
        "modality.unimodal-fraction": 0.5,
        **extra,
    }


def write_run(
    runs: Path,
    method: str,
    seed: int,
    config: dict,
    num_nodes: int,
    rounds: int,
    score: Callable[[int, int], float],
) -> Path:
    """One finished run: ``score(round, partition id)`` is each device's macro-F1.

    The run's client macro-F1 per round is the mean over devices; its tail is the
    mean of the last 5 rounds' values (as the recorder writes them).
    """
    folder = runs / f"{method}-s{seed}"
    folder.mkdir(parents=True)
    records = []
    for rnd in range(1, rounds + 1):
        clients = {
            str(100 + p): {"f1": score(rnd, p), "rouge_lsum": 0.5, "partition_id": p}
            for p in range(num_nodes)
        }
        f1 = sum(c["f1"] for c in clients.values()) / num_nodes
        records.append(
            {
                "round": rnd,
                "client_f1": f1,
                "client_rouge_lsum": 0.5,
                "server_f1": 0.8,
                "comm": dict(LEDGER),
                "clients": clients,
            }
        )
    tail = [r["client_f1"] for r in records[-5:]]
    scores = {"client_f1": sum(tail) / len(tail), "client_rouge_lsum": 0.5, "server_f1": 0.8}
    summary = {
        "method": method,
        "seed": seed,
        "rounds": rounds,
        "num_nodes": num_nodes,
        "seconds": 12.0,
        "final": {**scores, "client_f1": records[-1]["client_f1"]},
        "tail": scores,
        "comm": {k: LEDGER[k] for k in ("bytes_up_per_client_round", "ratio")},
    }
    (folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps({"run_config": {**config, "method": method}}))
    return folder
