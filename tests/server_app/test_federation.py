"""The real strategy and ClientApp handlers, in-process (no Ray): every method runs,
bad replies are rejected while the round goes on, private state stays on the device."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client_app.app import app as client_app
from client_app.local_state import KEY, DeviceStateError, read_device_state
from common.settings import RunSettings
from proto.records import ARRAYS, REPS, from_record, to_record
from server_app.run import ServerRun


def run_federation(grid_factory, config: dict, num_nodes: int = 3, intercept=None):
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = grid_factory(client_app, config, num_nodes)
    grid.intercept = intercept
    summary = run.run(grid)
    return run, grid, summary


@pytest.mark.parametrize(
    "method", ["mlecs", "fedit", "standalone", "no-ccl", "no-amt", "no-mma", "no-seccl"]
)
def test_every_method_runs_two_rounds(grid_factory, tiny_config: dict, method: str):
    config = {**tiny_config, "method": method, "run-name": method}
    run, _, summary = run_federation(grid_factory, config)
    rounds = [json.loads(x) for x in (run.recorder.dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert summary["method"] == method
    assert summary["environment"]["cpu_capability"] and summary["environment"]["threads"] >= 1
    for key in ("client_rouge_lsum", "server_rouge_lsum", "client_f1", "server_f1"):
        assert summary["final"][key] is not None
    comm = summary["comm"]
    if method == "standalone":
        assert comm["bytes_lora_up"] == 0 and comm["bytes_reps_up"] == 0
    else:
        assert comm["bytes_lora_up"] > 0
    assert (comm["bytes_reps_up"] > 0) == (method in ("mlecs", "no-ccl", "no-amt", "no-mma"))
    assert (run.recorder.dir / "checkpoint.npz").exists()


def test_console_has_one_line_per_round_and_no_flower_dump(grid_factory, tiny_config, caplog):
    config = {**tiny_config, "method": "fedit", "run-name": "console"}
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_federation(grid_factory, config)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [m.split(":")[0] for m in info if m.startswith("round ")] == [
        "round 0",
        "round 1/2",
        "round 2/2",
    ]
    flower_chatter = ("[ROUND", "Global evaluation", "Final results", "\t", "Starting ")
    assert not [m for m in info if m.startswith(flower_chatter) or not m.strip()]
    assert any(m.startswith("Strategy execution finished") for m in info)
    assert len(info) <= 6, info  # round 0, two rounds, Flower's finish line, notes


def test_malformed_reply_is_rejected_and_round_goes_on(grid_factory, tiny_config, caplog):
    # Prepare: node 102 sends NaNs in every round
    def poison(reply: Message) -> Message:
        if reply.metadata.src_node_id == 102 and ARRAYS in reply.content:
            state = from_record(reply.content[ARRAYS])
            state = {k: np.full_like(v, np.nan) for k, v in state.items()}
            reply.content[ARRAYS] = to_record(state)
        return reply

    config = {**tiny_config, "method": "mlecs", "run-name": "poison"}
    # Execute
    with caplog.at_level(logging.WARNING, logger="flwr"):
        run, _, _ = run_federation(grid_factory, config, intercept=poison)
    # Assert: rejected with a reason naming node and problem, others aggregated
    assert any(
        "node 102" in r.getMessage() and "non-finite" in r.getMessage() for r in caplog.records
    )
    rounds = [json.loads(x) for x in (run.recorder.dir / "rounds.jsonl").read_text().splitlines()]
    assert all(
        r["aggregation"]["rejected"] == 1 and r["aggregation"]["accepted"] == 2 for r in rounds
    )
    assert all(np.isfinite(v).all() for v in from_record(run.global_arrays).values())


def test_client_error_reply_does_not_stop_the_round(grid_factory, tiny_config, caplog):
    from flwr.app import Error

    def fail(reply: Message) -> Message:
        if reply.metadata.src_node_id == 101 and ARRAYS in reply.content:
            err = Message(Error(code=2, reason="device exploded"), reply_to=reply)
            err.metadata.__dict__["_src_node_id"] = 101
            return err
        return reply

    config = {**tiny_config, "method": "fedit", "run-name": "err"}
    with caplog.at_level(logging.WARNING, logger="flwr"):
        run, _, _ = run_federation(grid_factory, config, intercept=fail)
    assert run.results[-1].accepted == 2
    assert any("device exploded" in r.getMessage() for r in caplog.records)


def test_reply_holds_only_shared_state_and_public_representations(grid_factory, tiny_config):
    config = {**tiny_config, "method": "mlecs", "run-name": "reply"}
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = grid_factory(client_app, config, 2)
    msgs = list(
        run.strategy.configure_train(1, to_record(run.initial_state), ConfigRecord({}), grid)
    )
    replies = grid.send_and_receive(msgs)
    public = run.cloud.public_ids
    for reply in replies:
        delta = from_record(reply.content[ARRAYS])
        assert delta and all(k.startswith(("lora/", "prompt/")) for k in delta)
        assert not any("private" in k for k in delta)
        ids = from_record(reply.content[REPS])["ids"]
        assert len(ids) > 0 and set(ids.tolist()) <= public


def test_private_state_persists_across_messages_and_restarts(grid_factory, tiny_config, tmp_path):
    config = {
        **tiny_config,
        "method": "mlecs",
        "amt.variant": "schedule",
        "run-name": "state",
        "strategy.min-nodes": 1,
    }
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    node_cfg = {"partition-id": 0, "num-partitions": 2, "state-dir": str(tmp_path / "dev")}
    grid = grid_factory(client_app, config, 1, node_configs=[node_cfg])
    msgs = list(
        run.strategy.configure_train(1, to_record(run.initial_state), ConfigRecord({}), grid)
    )
    grid.send_and_receive(msgs)
    ctx = grid.contexts[101]
    saved = read_device_state(ctx, settings, 0, server_round=2)
    # encoders, connector, optimiser moments, (AMT) the personal copy of the adapters and
    # the round it trained in
    assert {k.split("/")[0] for k in saved} == {"enc", "conn", "opt", "shared", "device"}
    assert int(saved["device/trained-round"]) == 1
    # the file is keyed by run name and partition
    assert (tmp_path / "dev" / "state" / "partition-0.npz").exists()
    # A restarted SuperNode has an empty context.state but the same state-dir.
    fresh = Context(1, 101, node_cfg, RecordDict(), config)
    assert KEY not in fresh.state.array_records
    assert read_device_state(fresh, settings, 0, server_round=1) is None  # a new run starts afresh
    restored = read_device_state(fresh, settings, 0, server_round=2)
    assert restored.keys() == saved.keys()
    for k in saved:
        np.testing.assert_array_equal(restored[k], saved[k])
    # a corrupt file is named, never half-loaded
    (tmp_path / "dev" / "state" / "partition-0.npz").write_bytes(b"not an npz")
    with pytest.raises(DeviceStateError, match="partition-0.npz"):
        read_device_state(fresh, settings, 0, server_round=2)


def test_reply_that_contradicts_its_manifest_is_rejected(grid_factory, tiny_config, caplog):
    # Prepare: node 103 adds a tensor its manifest does not declare
    def smuggle(reply: Message) -> Message:
        if reply.metadata.src_node_id == 103 and ARRAYS in reply.content:
            state = from_record(reply.content[ARRAYS])
            state["lora/extra"] = np.zeros(3, np.float32)
            reply.content[ARRAYS] = to_record(state)
        return reply

    config = {**tiny_config, "method": "fedit", "run-name": "manifest", "num-server-rounds": 1}
    with caplog.at_level(logging.WARNING, logger="flwr"):
        run, _, _ = run_federation(grid_factory, config, intercept=smuggle)
    assert len(run.results[-1].rejected) == 1
    assert any(
        "node 103" in r.getMessage() and "manifest" in r.getMessage() for r in caplog.records
    )
    assert "lora/extra" not in from_record(run.global_arrays)


def test_device_refuses_server_payload_that_contradicts_its_manifest(grid_factory, tiny_config):
    config = {**tiny_config, "method": "fedit", "run-name": "bad-global"}
    settings = RunSettings.from_run_config(config)
    run = ServerRun(settings)
    grid = grid_factory(client_app, config, 2)
    msgs = list(
        run.strategy.configure_train(1, to_record(run.initial_state), ConfigRecord({}), grid)
    )
    state = from_record(msgs[0].content[ARRAYS])
    key = next(iter(state))
    state[key] = state[key][:1]  # wrong shape
    msgs[0].content[ARRAYS] = to_record(state)
    replies = grid.send_and_receive(msgs)
    assert replies[0].has_error() and "shape" in replies[0].error.reason
    assert not replies[1].has_error(), replies[1].error.reason
    bad_node = msgs[0].metadata.dst_node_id
    assert KEY not in grid.contexts[bad_node].state.array_records  # nothing applied or saved


def test_server_resumes_from_its_last_checkpoint(grid_factory, tiny_config):
    from server_app.checkpoint import load_checkpoint

    # Prepare: a run that "crashed" after round 1 (its checkpoint is on disk)
    config = {**tiny_config, "method": "mlecs", "run-name": "resume", "num-server-rounds": 1}
    first, _, _ = run_federation(grid_factory, config)
    saved = load_checkpoint(first.recorder.dir)
    saved_global, saved_cloud = saved.global_state, saved.cloud_state
    # Execute: the same run, resumed, asked for 3 rounds in total
    resumed_cfg = {**config, "num-server-rounds": 3, "resume": True}
    run = ServerRun(RunSettings.from_run_config(resumed_cfg))
    # Assert: it starts from the checkpoint, not from scratch ...
    assert run.strategy.round_number(0) == 1
    for k, v in saved_global.items():
        np.testing.assert_array_equal(run.initial_state[k], v)
    for k, v in run.cloud.state().items():
        np.testing.assert_array_equal(v, saved_cloud[k])
    # ... and runs only the missing rounds, numbered on
    grid = grid_factory(client_app, resumed_cfg, 3)
    summary = run.run(grid)
    rounds = [
        json.loads(x)["round"] for x in (run.recorder.dir / "rounds.jsonl").read_text().splitlines()
    ]
    assert rounds == [1, 2, 3]
    assert summary["rounds"] == 3


def test_resume_requires_a_run_name(tiny_config):
    from common.settings import ConfigError

    with pytest.raises(ConfigError, match="run-name"):
        RunSettings.from_run_config({**tiny_config, "resume": True})


def test_bad_data_input_fails_before_any_training(tiny_config, tmp_path):
    from common.settings import ConfigError

    missing = {
        **tiny_config,
        "dataset": "jsonl",
        "data.jsonl.path": str(tmp_path / "no.jsonl"),
    }
    with pytest.raises(ConfigError, match="no.jsonl"):
        ServerRun(RunSettings.from_run_config(missing))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"modalities": {"x": [1, 2]}, "target": "a"}\n{"modalities": \n')
    with pytest.raises(ConfigError, match="line 2"):
        ServerRun(
            RunSettings.from_run_config(
                {**tiny_config, "dataset": "jsonl", "data.jsonl.path": str(bad)}
            )
        )


def test_anchors_sent_only_for_the_devices_own_public_ids(grid_factory, tiny_config):
    config = {**tiny_config, "method": "mlecs", "run-name": "anchors"}
    run = ServerRun(RunSettings.from_run_config(config))
    grid = grid_factory(client_app, config, 3)
    st = run.strategy
    msgs = list(st.configure_train(1, to_record(run.initial_state), ConfigRecord({}), grid))
    arrays, _ = st.aggregate_train(1, grid.send_and_receive(msgs))
    msgs = list(st.configure_train(2, arrays, ConfigRecord({}), grid))
    for msg in msgs:
        node = msg.metadata.dst_node_id
        ids = from_record(msg.content["anchors"])["ids"]
        assert len(ids) > 0 and set(ids.tolist()) <= set(
            st.snapshot().public_ids[st._node_partition[node]].tolist()
        )
    # every device got its own anchors, not a shared copy
    assert len({id(m.content) for m in msgs}) == len(msgs)


def test_tensorboard_event_files_hold_the_round_metrics(grid_factory, tiny_config):
    from tensorboardX.proto import event_pb2

    config = {**tiny_config, "method": "fedit", "run-name": "tb", "log.tensorboard": True}
    run, _, _ = run_federation(grid_factory, config)
    files = list((run.recorder.dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files
    tags, data = set(), files[0].read_bytes()
    pos = 0
    while pos < len(data):  # TFRecord: length (8), crc (4), payload, crc (4)
        n = int.from_bytes(data[pos : pos + 8], "little")
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        tags.update(v.tag for v in event.summary.value)
        pos += 16 + n
    assert {"client/f1", "server/rouge_lsum", "comm/ratio"} <= tags


def test_int8_transport_runs_and_sends_far_fewer_bytes(grid_factory, tiny_config):
    base = {**tiny_config, "method": "mlecs", "num-server-rounds": 1}
    _, _, f32 = run_federation(grid_factory, {**base, "run-name": "f32"})
    _, _, i8 = run_federation(grid_factory, {**base, "run-name": "i8", "transport.dtype": "int8"})
    assert i8["final"]["client_f1"] is not None
    # (each array also carries its .npy header and, in int8, a scale: tiny tensors here)
    for kind in ("bytes_lora_up", "bytes_lora_down", "bytes_reps_up"):
        assert i8["comm"][kind] < 0.5 * f32["comm"][kind]
