"""The floor of benchmarks.deploy_round: the bare Flower echo app, driven in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from benchmarks.deploy_round import ECHO_APP, build_parser
from common.run_config import read_toml
from experiments.local_grid import InProcessGrid


def test_the_echo_app_sends_the_payload_and_times_every_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.syspath_prepend(str(ECHO_APP))
    from echo_app.client import app as client_app
    from echo_app.server import main

    config = read_toml(ECHO_APP / "pyproject.toml")["tool"]["flwr"]["app"]["config"]
    out = tmp_path / "floor.json"
    config = {**config, "num-server-rounds": 3, "payload-bytes": 4096, "out-file": str(out)}
    sent: list[int] = []
    grid = InProcessGrid(client_app, config, 3)

    def count(reply):  # what each device echoes: the whole payload, unchanged
        sent.append(reply.content["arrays"]["payload"].numpy().nbytes)
        return reply

    grid.intercept = count
    main(grid, Context(1, 1, {}, RecordDict(), config))
    rounds = json.loads(out.read_text())["rounds"]
    assert len(rounds) == 3 and all(s >= 0 for s in rounds)
    assert sent == [4096] * 9  # 3 devices x 3 rounds
    assert build_parser().parse_args(["--out", "x", "--no-floor"]).no_floor
