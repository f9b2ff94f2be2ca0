"""A sweep skips the cells it finished and resumes the one that stopped part-way."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments import run as runner

NODES = 2


def test_finished_cells_are_skipped_and_a_resumed_cell_counts_as_finished(
    tiny_config: dict, monkeypatch: pytest.MonkeyPatch
):
    config = {**tiny_config, "method": "standalone", "run-name": "standalone-s0"}
    first = runner.sweep([config], NODES, 1)
    run_dir = Path(config["output-dir"]) / "standalone-s0"
    (run_dir / "summary.json").unlink()  # as if stopped after its last checkpoint
    assert runner.prepare(config)["resume"] is True
    resumed = runner.sweep([config], NODES, 1)
    assert resumed[0]["tail"] == first[0]["tail"]

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(runner, "run_one", must_not_run)
    again = runner.sweep([config], NODES, 1)
    assert again[0]["tail"] == first[0]["tail"]
    # a sweep folder moved elsewhere keeps its finished cells
    moved = Path(config["output-dir"]).with_name("moved")
    shutil.move(config["output-dir"], moved)
    elsewhere = runner.sweep([{**config, "output-dir": str(moved)}], NODES, 1)
    assert elsewhere[0]["tail"] == first[0]["tail"]
    assert (moved / "standalone-s0" / "summary.json").exists()
    # another configuration of the same cell is not "finished"
    with pytest.raises(AssertionError, match="run again"):
        runner.sweep([{**config, "output-dir": str(moved), "train.lr": 0.01}], NODES, 1)


def test_every_run_of_a_sweep_has_one_torch_thread_whatever_the_jobs(
    tiny_config: dict, monkeypatch: pytest.MonkeyPatch
):
    import torch

    seen: list[int] = []

    def record(config: dict, num_nodes: int) -> dict:
        seen.append(torch.get_num_threads())
        return {"tail": {}, "seconds": 0.0}

    monkeypatch.setattr(runner, "run_one", record)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        configs = [{**tiny_config, "run-name": f"t{i}", "seed": i} for i in range(2)]
        runner.sweep(configs, 2, jobs=1)
        assert torch.get_num_threads() == 2  # the caller's count, restored
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]  # jobs=2 runs each in a worker pinned to 1 thread too


def test_a_key_added_after_a_run_counts_at_the_value_it_ran_with():
    wanted = runner.resolved({"method": "mlecs", "seed": 0, "ccl.cloud": True})
    older = {k: v for k, v in wanted.items() if k != "ccl.cloud"}  # saved before the key
    assert runner._same_run(older, wanted)
    assert not runner._same_run(older, {**wanted, "ccl.cloud": False})
    assert not runner._same_run({**older, "train.lr": 0.5}, wanted)


def test_ccl_keys_do_not_tell_apart_runs_of_a_method_without_ccl():
    for method, same in (("fedit", True), ("no-ccl", True), ("mlecs", False)):
        a = runner.resolved({"method": method, "seed": 0})
        b = {**a, "ccl.private-stage": not a["ccl.private-stage"], "ccl.weight": 0.3}
        assert runner._same_run(a, b) is same
        assert not runner._same_run(a, {**a, "seccl.weight": 0.3, "train.lr": 0.5})


def test_the_unlabelled_public_key_tells_apart_only_anchored_runs_without_shares():
    key = "seccl.unlabelled-public"
    cases = [("mlecs", False, False), ("creamfl", False, False), ("mlecs", True, True)]
    cases += [("fedit", False, True), ("standalone", False, True)]
    for method, share, same in cases:
        a = runner.resolved({"method": method, "seed": 0, "data.use-public-share": share})
        older = {k: v for k, v in a.items() if k != key}  # saved before the key
        assert runner._same_run(older, {**a, key: True}) is same, method
        assert runner._same_run(older, {**a, key: False})


def test_encoder_adapter_keys_tell_apart_only_runs_that_share_encoders():
    for method, same in (
        ("fedit", True),
        ("standalone", True),
        ("mlecs", False),
        ("no-amt", False),
    ):
        a = runner.resolved({"method": method, "seed": 0})
        older = {k: v for k, v in a.items() if not k.startswith("lora.encoder-")}
        assert runner._same_run(older, a)  # saved before the keys: rank 0
        assert runner._same_run(a, {**a, "lora.encoder-rank": 4}) is same, method
    # At rank 0 the alpha cannot act
    a = runner.resolved({"method": "mlecs", "seed": 0, "lora.encoder-rank": 0})
    assert runner._same_run(a, {**a, "lora.encoder-alpha": 3.0})
    b = {**a, "lora.encoder-rank": 4}
    assert not runner._same_run(b, {**b, "lora.encoder-alpha": 3.0})
    assert runner._same_run(a, {**a, "lora.encoder-share": False})
    assert not runner._same_run(b, {**b, "lora.encoder-share": False})


@pytest.mark.parametrize("key", ["seccl.prototype-views", "seccl.modality-prototypes"])
def test_prototype_switches_tell_apart_only_runs_with_prototypes(key):
    a = runner.resolved({"method": "mlecs", "seed": 0})
    older = {k: v for k, v in a.items() if k != key}
    assert runner._same_run(older, a)  # saved before the key: off
    assert not runner._same_run(a, {**a, key: True})
    off = {**a, "seccl.prototype-weight": 0.0}
    assert runner._same_run(off, {**off, key: True})
    fedit = runner.resolved({"method": "fedit", "seed": 0})
    assert runner._same_run(fedit, {**fedit, key: True})


def test_amt_off_is_the_controls_schedule_and_leaves_mlecs_split_inert():
    ft = runner.resolved({"method": "fedit-ft", "seed": 0})
    assert runner._same_run({**ft, "amt.variant": "schedule"}, {**ft, "amt.variant": "off"})
    assert not runner._same_run({**ft, "amt.variant": "gate"}, {**ft, "amt.variant": "off"})
    ml = runner.resolved({"method": "mlecs", "seed": 0})
    assert ml["amt.variant"] == "off"
    assert runner._same_run(ml, {**ml, "amt.shared-fraction": 0.25})  # no split to set
    assert not runner._same_run(ml, {**ml, "amt.variant": "schedule"})
    older = {k: v for k, v in ml.items() if k != "amt.variant"}  # saved before the key
    assert not runner._same_run(older, ml)
