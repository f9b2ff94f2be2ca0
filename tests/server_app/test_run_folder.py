"""The run folder: a taken name or a finished resume is refused up front, outputs are private.

No federation runs here: the folders are written by hand (or by the
:class:`Recorder` alone), and the cloud model is never built.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from common.settings import RunSettings
from server_app import run as run_module
from server_app.app import main as server_main
from server_app.checkpoint import Checkpoint, StrategySnapshot, save_checkpoint
from server_app.recorder import Recorder, RunRefused, check_run_folder
from server_app.run import ServerRun


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the cloud (loading data, the model) fails the test: a refusal comes first."""

    def cloud(_settings):
        raise AssertionError("work started before the run folder was checked")

    monkeypatch.setattr(run_module, "Cloud", cloud)


def finished_run(config: dict, rounds: int) -> Path:
    """A run folder as a run of ``rounds`` rounds leaves it (checkpoint, records, summary)."""
    run_dir = Path(config["output-dir"]) / config["run-name"]
    run_dir.mkdir(parents=True)
    snapshot = StrategySnapshot(server_round=rounds)
    state = {"w": np.zeros(2, np.float32)}
    save_checkpoint(run_dir, Checkpoint(state, state, snapshot, {"run-name": "done"}))
    lines = "".join(json.dumps({"round": r}) + "\n" for r in range(1, rounds + 1))
    (run_dir / "rounds.jsonl").write_text(lines)
    (run_dir / "config.json").write_text('{"run_config": {}}')
    (run_dir / "summary.json").write_text(json.dumps({"rounds": rounds}))
    return run_dir


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's content, modification time and mode."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(folder.iterdir())
    }


def run_main(config: dict) -> None:
    """Call the ServerApp's main as Flower does (no grid needed for a refused run)."""
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(config)
    )
    assert server_main(None, context) is None


def one_error(caplog: pytest.LogCaptureFixture) -> str:
    """The only ERROR record (one line, no traceback)."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None and errors[0].exc_text is None
    message = errors[0].getMessage()
    assert "\n" not in message
    return message


def test_a_taken_run_name_is_refused_before_any_work(tiny_config: dict, no_work):
    config = {**tiny_config, "run-name": "taken"}
    run_dir = finished_run(config, 2)
    with pytest.raises(RunRefused, match="resume=true") as refused:
        ServerRun(RunSettings.from_run_config(config))
    assert str(run_dir) in str(refused.value) and "run-name" in str(refused.value)


def test_the_serverapp_ends_a_taken_run_name_with_one_error_line(
    tiny_config: dict, no_work, caplog: pytest.LogCaptureFixture
):
    config = {**tiny_config, "run-name": "taken"}
    run_dir = finished_run(config, 2)
    before = snapshot(run_dir)
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_main(config)
    message = one_error(caplog)
    assert str(run_dir) in message and "resume=true" in message and "run-name" in message
    assert snapshot(run_dir) == before


def test_resuming_a_finished_run_says_so_and_changes_nothing(
    tiny_config: dict, no_work, caplog: pytest.LogCaptureFixture
):
    config = {**tiny_config, "run-name": "done", "num-server-rounds": 2, "resume": True}
    run_dir = finished_run(config, 2)
    before = snapshot(run_dir)
    with pytest.raises(RunRefused, match="already finished its 2 rounds.*num-server-rounds"):
        ServerRun(RunSettings.from_run_config(config))
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_main(config)
    message = one_error(caplog)
    assert "'done'" in message and "already finished its 2 rounds" in message
    assert snapshot(run_dir) == before  # config.json, rounds, summary, checkpoint untouched


def test_a_finished_run_may_be_extended_or_have_its_summary_written(tiny_config: dict):
    config = {**tiny_config, "run-name": "done", "num-server-rounds": 2, "resume": True}
    run_dir = finished_run(config, 2)
    check_run_folder(RunSettings.from_run_config({**config, "num-server-rounds": 3}), run_dir)
    # stopped after its last checkpoint, before its summary: the resume finishes it
    (run_dir / "summary.json").unlink()
    check_run_folder(RunSettings.from_run_config(config), run_dir)


def test_run_outputs_are_private_to_their_owner(tiny_config: dict):
    config = {**tiny_config, "run-name": "private"}
    old = os.umask(0o022)  # the usual default: new files 0644, folders 0755
    try:
        recorder = Recorder(RunSettings.from_run_config(config))
        recorder.record_round({"round": 1, "client_f1": 0.5, "server_f1": 0.4, "seconds": 1.0})
        save_checkpoint(
            recorder.dir,
            Checkpoint({}, {}, StrategySnapshot(server_round=1)),
        )
        recorder.finish()
    finally:
        os.umask(old)
    out = Path(config["output-dir"])
    files = sorted(p.name for p in recorder.dir.iterdir())
    assert files == [
        "checkpoint.npz",
        "config.json",
        "metrics.png",
        "rounds.jsonl",
        "summary.json",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # created by the run
    assert stat.S_IMODE(recorder.dir.stat().st_mode) == 0o700
    for path in recorder.dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
