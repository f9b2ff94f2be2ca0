"""Reproducibility: the same seed gives the same numbers, and a killed run resumes exactly.

Runs are real in-process federations (the strategy and the ClientApp handlers on an
in-process Grid). The killed run is a separate process, killed with SIGKILL after
its first checkpoint, then resumed in this process with ``resume=true``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.run import run_one
from server_app.checkpoint import CheckpointError, load_checkpoint
from server_app.recorder import FINAL_KEYS

ROOT = Path(__file__).resolve().parents[2]
NODES = 3


def metrics(run_dir: Path) -> list[dict]:
    """Every round's scores (client mean, server, per device), without timings."""
    out = []
    for line in (run_dir / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        row = {k: r[f"{side}_{k}"] for side in ("client", "server") for k in FINAL_KEYS}
        row["round"] = r["round"]
        row["devices"] = sorted(
            (c["partition_id"], c.get("f1"), c.get("rouge_lsum")) for c in r["clients"].values()
        )
        out.append(row)
    return out


def assert_same_states(a: Path, b: Path) -> None:
    """The final global state and cloud model (its optimiser included) are bit-identical.

    The tiny test models score near 0, so equal scores alone would prove little.
    """
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for mine, theirs in ((ca.global_state, cb.global_state), (ca.cloud_state, cb.cloud_state)):
        assert mine.keys() == theirs.keys() and mine
        for k, v in mine.items():
            np.testing.assert_array_equal(theirs[k], v, err_msg=k)
    np.testing.assert_array_equal(ca.strategy.anchors, cb.strategy.anchors)


def test_the_same_seed_gives_the_same_metrics_twice(tiny_config: dict):
    first = run_one({**tiny_config, "method": "mlecs", "run-name": "first"}, NODES)
    again = run_one({**tiny_config, "method": "mlecs", "run-name": "again"}, NODES)
    out = Path(tiny_config["output-dir"])
    assert metrics(out / "first") == metrics(out / "again")
    assert first["final"] == again["final"]
    assert_same_states(out / "first", out / "again")


def test_reusing_devices_between_messages_changes_nothing(tiny_config: dict, monkeypatch):
    from client_app import handlers as client_module

    config = {**tiny_config, "method": "mlecs", "num-server-rounds": 3}
    reused = run_one({**config, "run-name": "reused"}, NODES)
    built = client_module._device
    monkeypatch.setattr(client_module, "_device", lambda s, i, reuse: built(s, i, reuse=False))
    rebuilt = run_one({**config, "run-name": "rebuilt"}, NODES)
    out = Path(tiny_config["output-dir"])
    assert metrics(out / "reused") == metrics(out / "rebuilt")
    assert reused["final"] == rebuilt["final"]
    assert_same_states(out / "reused", out / "rebuilt")


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tiny_config: dict):
    config = {**tiny_config, "method": "mlecs", "num-server-rounds": 4}
    out = Path(tiny_config["output-dir"])
    whole = run_one({**config, "run-name": "whole"}, NODES)
    # Execute: the same run in another process, killed after its first checkpoint
    killed = {**config, "run-name": "killed"}
    cfg = out.parent / "killed.json"
    cfg.write_text(json.dumps(killed))
    code = (
        "import json, sys; from experiments.run import run_one; "
        "run_one(json.load(open(sys.argv[1])), int(sys.argv[2]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(NODES)], cwd=ROOT)
    done_round, deadline = 0, time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                done_round = load_checkpoint(out / "killed").server_round
            except CheckpointError:
                done_round = 0
            if done_round >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert 1 <= done_round < 4, "the run was not killed part-way"
    assert not (out / "killed" / "summary.json").exists()
    resumed = run_one({**killed, "resume": True}, NODES)
    # Assert: every round's scores equal the uninterrupted run's, to the last bit
    assert metrics(out / "killed") == metrics(out / "whole")
    assert resumed["final"] == whole["final"] and resumed["rounds"] == 4
    assert_same_states(out / "killed", out / "whole")


def test_a_corrupt_or_foreign_checkpoint_is_refused_by_name(tiny_config: dict):
    from common.settings import RunSettings
    from server_app.run import ServerRun

    config = {**tiny_config, "method": "fedit", "num-server-rounds": 1, "run-name": "ck"}
    run_one(config, NODES)
    run_dir = Path(tiny_config["output-dir"]) / "ck"
    other = {**config, "resume": True, "num-server-rounds": 2, "lora.rank": 4}
    with pytest.raises(CheckpointError, match="lora.rank"):
        ServerRun(RunSettings.from_run_config(other))
    (run_dir / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="checkpoint.npz"):
        ServerRun(RunSettings.from_run_config({**config, "resume": True}))


def test_an_existing_run_folder_is_refused_without_resume(tiny_config: dict):
    from common.settings import ConfigError, RunSettings
    from server_app.run import ServerRun

    config = {**tiny_config, "method": "standalone", "num-server-rounds": 1, "run-name": "taken"}
    run_one(config, NODES)
    with pytest.raises(ConfigError, match="already holds a run"):
        ServerRun(RunSettings.from_run_config(config))
