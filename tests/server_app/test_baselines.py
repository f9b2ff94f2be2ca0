"""The field's baselines, each checked on its defining mechanism in a real in-process run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord

from client_app.app import app as client_app
from common.settings import RunSettings
from experiments.run import run_one
from proto.records import ARRAYS, REPS, from_record, to_record
from server_app.checkpoint import load_checkpoint
from server_app.run import ServerRun

NODES = 3


def _rounds(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]


def _replies(grid_factory, config: dict, rounds: int = 1):
    """Replies of every round (the real strategy and ClientApp), and the strategy."""
    run = ServerRun(RunSettings.from_run_config(config))
    grid = grid_factory(client_app, config, NODES)
    arrays, out = to_record(run.initial_state), []
    for r in range(1, rounds + 1):
        msgs = list(run.strategy.configure_train(r, arrays, ConfigRecord({}), grid))
        replies = grid.send_and_receive(msgs)
        out.append((msgs, replies))
        arrays, _ = run.strategy.aggregate_train(r, replies)
        run.strategy.finish_round()
    return out, run


def test_fedprox_with_mu_zero_and_svd_at_one_rank_are_fedit(tiny_config: dict):
    out = Path(tiny_config["output-dir"])
    fedit = run_one({**tiny_config, "method": "fedit", "run-name": "fedit"}, NODES)
    prox = run_one(
        {**tiny_config, "method": "fedprox", "fedprox.mu": 0.0, "run-name": "prox0"}, NODES
    )
    run_one({**tiny_config, "method": "fedprox", "fedprox.mu": 10.0, "run-name": "prox10"}, NODES)
    # one rank for all: FlexLoRA's SVD (the default, "auto") never acts, FedAvg as zero-pad
    run_one({**tiny_config, "method": "fedit", "lora.rank-aggregation": "zero-pad",
             "run-name": "padded"}, NODES)  # fmt: skip
    assert prox["final"] == fedit["final"]
    plain, zero, strong, padded = (
        load_checkpoint(out / n).global_state for n in ("fedit", "prox0", "prox10", "padded")
    )
    assert load_checkpoint(out / "fedit").strategy.refactorised_round == 0
    for k, v in plain.items():
        np.testing.assert_array_equal(zero[k], v)  # mu = 0: the very same run
        np.testing.assert_array_equal(padded[k], v)
    assert any(not np.array_equal(strong[k], v) for k, v in plain.items())
    losses = [d["train_loss_prox"] for d in _rounds(out / "prox10")[-1]["training"].values()]
    assert max(losses) > 0  # the proximal term acts when mu > 0


def test_fedsa_shares_the_a_matrices_and_never_sends_b(grid_factory, tiny_config: dict):
    config = {**tiny_config, "method": "fedsa", "run-name": "fedsa"}
    rounds, run = _replies(grid_factory, config, rounds=2)
    assert run.initial_state and all("lora_A" in k for k in run.initial_state)
    for msgs, replies in rounds:
        for msg in msgs:
            assert all("lora_B" not in k for k in from_record(msg.content[ARRAYS]))
        for reply in replies:
            delta = from_record(reply.content[ARRAYS])
            assert delta and all("lora_A" in k for k in delta)


def test_creamfl_sends_representations_and_no_lora(grid_factory, tiny_config: dict):
    config = {**tiny_config, "method": "creamfl", "run-name": "creamfl"}
    rounds, run = _replies(grid_factory, config, rounds=2)
    assert run.initial_state == {}
    for _, replies in rounds:
        for reply in replies:
            assert from_record(reply.content[ARRAYS]) == {}  # no LoRA travels
            assert len(from_record(reply.content[REPS])["ids"]) > 0
    first, second = rounds
    assert all("anchors" not in m.content for m in first[0])  # no consensus yet
    # round 2: anchors are the devices' consensus, not the cloud's representations
    anchors = from_record(second[0][0].content["anchors"])
    cloud_ids, cloud_z = run.cloud.representations()
    row = {int(i): k for k, i in enumerate(cloud_ids)}
    own = [row[int(i)] for i in anchors["ids"]]
    assert not np.allclose(anchors["z"], cloud_z[own])


def test_fedcollm_distils_the_aggregate_before_sending_it_back(grid_factory, tiny_config: dict):
    config = {**tiny_config, "method": "fedcollm", "run-name": "fedcollm"}
    rounds, run = _replies(grid_factory, config, rounds=2)
    result = run.strategy.finish_round()
    assert result.cloud["distill_edge_to_cloud"] >= 0 and result.cloud["distill_cloud_to_edge"] >= 0
    # the state sent in round 2 is the distilled aggregate, not the plain FedAvg
    sent = from_record(rounds[1][0][0].content[ARRAYS])
    assert set(sent) == set(run.initial_state)


def test_centralized_runs_as_a_cell_of_the_runner(tiny_config: dict):
    summary = run_one(
        {**tiny_config, "method": "centralized", "num-server-rounds": 1, "run-name": "central"},
        NODES,
    )
    assert summary["method"] == "centralized"
    assert 0 <= summary["tail"]["client_f1"] <= 1
