"""``MlEcsStrategy.aggregate_train`` on hand-built replies, against hand-computed states.

As Flower tests its own strategies: the instructions come from the strategy, the
replies are built here (no ClientApp runs), and the expected global state is
computed by hand. The cloud is a stand-in that records what it is given.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message
from flwr.supercore.task_identity import TaskIdentity

from common.exchange import DeviceUpdate
from common.sections import PAPER_MMA
from common.settings import RunSettings
from proto.messages import read_instruction, train_reply
from proto.records import from_record, to_record
from server_app.strategy import MlEcsStrategy
from tests.server_app.fakes import FUSED, MODS, FakeCloud, FakeGrid

LORA_KEY = "lora/layer.lora_A.weight"
PROMPT_KEY = "prompt/lora_B"
REF = {
    LORA_KEY: np.zeros((2, 3), np.float32),
    PROMPT_KEY: np.zeros((2, 2), np.float32),
}


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def strategy(method: str, **overrides) -> MlEcsStrategy:
    config = {"method": method, "model.fused-dim": FUSED, "strategy.min-nodes": 1, **overrides}
    return MlEcsStrategy(RunSettings.from_run_config(config), FakeCloud())


def instructions(st: MlEcsStrategy, nodes=(1, 2, 3)) -> dict[int, Message]:
    msgs = st.configure_train(1, to_record(REF), ConfigRecord({}), FakeGrid(nodes))
    return {m.metadata.dst_node_id: m for m in msgs}


def reply(msg: Message, lora: float, n: int, mods, prompt=None, counts=None, reps=None) -> Message:
    delta = {
        LORA_KEY: np.full((2, 3), lora, np.float32),
        PROMPT_KEY: np.full((2, 2), lora if prompt is None else prompt, np.float32),
    }
    ids, z = reps if reps is not None else (np.zeros(0, np.int64), np.zeros((0, FUSED), np.float32))
    update = DeviceUpdate(
        delta=delta,
        rep_ids=np.asarray(ids, np.int64),
        reps=np.asarray(z, np.float32),
        num_examples=n,
        modalities=tuple(mods),
        modality_counts=counts or {m: n for m in mods},
        metrics={"loss": 1.0},
        partition_id=msg.metadata.dst_node_id,
        round_token=read_instruction(msg.content).round_token,
    )
    return Message(train_reply(update), reply_to=msg)


def test_fedit_is_fedavg_by_example_counts():
    # Prepare
    st = strategy("fedit")
    msgs = instructions(st)
    replies = [reply(msgs[1], 1.0, 10, MODS), reply(msgs[2], 2.0, 20, MODS)]
    replies.append(reply(msgs[3], 4.0, 30, MODS))
    # Execute
    arrays, metrics = st.aggregate_train(1, replies)
    # Assert: (10*1 + 20*2 + 30*4) / 60, for both shared adapters
    state = from_record(arrays)
    np.testing.assert_allclose(state[LORA_KEY], np.full((2, 3), 170 / 60), rtol=1e-6)
    np.testing.assert_allclose(state[PROMPT_KEY], np.full((2, 2), 170 / 60), rtol=1e-6)
    assert metrics["accepted"] == 3 and metrics["rejected"] == 0
    assert st.cloud.loaded[LORA_KEY][0, 0] == pytest.approx(170 / 60)


def test_mma_weights_by_modality_coverage():
    # Prepare: node 1 holds both modalities (n=10), node 2 acc only (n=20),
    # node 3 gyro only (n=40); updates point the same way, no clipping applies.
    # MMA is off by default since 2026-12-07: the paper's keys turn it on.
    st = strategy("mlecs", **PAPER_MMA)
    msgs = instructions(st)
    replies = [
        reply(msgs[1], 1.0, 10, MODS, prompt=2.0),
        reply(msgs[2], 1.5, 20, ("acc",), prompt=3.0),
        reply(msgs[3], 2.0, 40, ("gyro",), prompt=4.0),
    ]
    # Execute
    arrays, _ = st.aggregate_train(1, replies)
    result = st.finish_round()
    # Assert: w = 10*(2/2), 20*(1/2), 40*(1/2) -> 1/4, 1/4, 1/2
    state = from_record(arrays)
    np.testing.assert_allclose(state[LORA_KEY], 0.25 * 1.0 + 0.25 * 1.5 + 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(state[PROMPT_KEY], 0.25 * 2.0 + 0.25 * 3.0 + 0.5 * 4.0, rtol=1e-6)
    assert result.weights == {"1": 0.25, "2": 0.25, "3": 0.5}
    assert (
        result.server_round == 1 and result.accepted == 3 and result.cloud == {"server_loss": 0.5}
    )


def test_mma_clips_an_oversized_update_to_twice_the_median_norm():
    st = strategy("mlecs", **{"mma.clip-factor": 2.0})
    msgs = instructions(st)
    replies = [reply(msgs[i], v, 10, MODS) for i, v in ((1, 1.0), (2, 1.0), (3, 100.0))]
    arrays, _ = st.aggregate_train(1, replies)
    # the third update is scaled to 2x the median norm: (1 + 1 + 2) / 3
    np.testing.assert_allclose(from_record(arrays)[LORA_KEY], 4 / 3, rtol=1e-5)


def test_a_rejected_reply_leaves_the_others_average():
    st = strategy("fedit")
    msgs = instructions(st)
    bad = reply(msgs[3], 9.0, 10, ("acc", "lidar"))  # a modality the task does not have
    arrays, metrics = st.aggregate_train(
        1, [reply(msgs[1], 1.0, 10, MODS), reply(msgs[2], 3.0, 30, MODS), bad]
    )
    np.testing.assert_allclose(from_record(arrays)[LORA_KEY], (10 * 1 + 30 * 3) / 40, rtol=1e-6)
    assert metrics["rejected"] == 1
    assert "lidar" in st.finish_round().rejected[3]


def test_edge_consensus_and_anchors_follow_the_devices_public_ids():
    # Prepare: two devices send z^c for overlapping public ids
    st = strategy("mlecs", **{"mma.beta": 0.0, "mma.disagreement": 0.0})
    msgs = instructions(st, nodes=(1, 2))
    z1, z2 = np.ones((2, FUSED), np.float32), np.full((2, FUSED), 3.0, np.float32)
    replies = [
        reply(msgs[1], 1.0, 10, MODS, reps=([100, 101], z1)),
        reply(msgs[2], 1.0, 30, MODS, reps=([101, 102], z2)),
    ]
    # Execute
    arrays, _ = st.aggregate_train(1, replies)
    nxt = {
        m.metadata.dst_node_id: m
        for m in st.configure_train(2, arrays, ConfigRecord({}), FakeGrid((1, 2)))
    }
    # Assert: consensus per id, weighted 1:3 where both sent it
    ids, z = st.cloud.consensus
    assert ids.tolist() == [100, 101, 102]
    np.testing.assert_allclose(z[:, 0], [1.0, (1 * 1 + 3 * 3) / 4, 3.0])
    # each device's next instruction carries anchors for exactly its own public ids
    anchors = from_record(nxt[1].content["anchors"])
    assert anchors["ids"].tolist() == [100, 101]
    np.testing.assert_array_equal(anchors["z"], st.cloud.representations()[1][:2])
    assert from_record(nxt[2].content["anchors"])["ids"].tolist() == [101, 102]
    # and the round number runs on across a restore (a resumed run)
    resumed = strategy("mlecs")
    resumed.restore(st.snapshot())
    assert resumed.round_number(1) == st.snapshot().server_round + 1


def test_too_few_nodes_skip_the_round_after_the_timeout_instead_of_waiting():
    import time

    st = strategy("fedit", **{"strategy.min-nodes": 3, "strategy.round-timeout": 0.3})
    start = time.monotonic()
    msgs = st.configure_train(1, to_record(REF), ConfigRecord({}), FakeGrid((1, 2)))
    assert list(msgs) == [] and time.monotonic() - start < 5
    arrays, metrics = st.aggregate_train(1, [])
    np.testing.assert_array_equal(from_record(arrays)[LORA_KEY], REF[LORA_KEY])  # unchanged
    assert metrics["accepted"] == 0


def test_fewer_accepted_updates_than_the_minimum_are_not_aggregated():
    st = strategy("fedit", **{"strategy.min-nodes": 3})
    msgs = instructions(st)
    arrays, _ = st.aggregate_train(
        1, [reply(msgs[1], 1.0, 10, MODS), reply(msgs[2], 2.0, 10, MODS)]
    )
    np.testing.assert_array_equal(from_record(arrays)[LORA_KEY], REF[LORA_KEY])
    assert st.finish_round().missing == [3]


def test_a_dead_nodes_error_reply_is_blamed_on_that_node_not_the_superlink():
    from flwr.app import Error

    st = strategy("fedit")
    msgs = instructions(st)
    for node, msg in msgs.items():  # as the Grid does when it pushes them
        msg.metadata.__dict__["_message_id"] = f"m{node}"
    dead = Message(Error(code=5, reason="Node Unavailable"), reply_to=msgs[2])
    dead.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for a dead node
    st.aggregate_train(1, [reply(msgs[1], 1.0, 10, MODS), dead, reply(msgs[3], 1.0, 10, MODS)])
    result = st.finish_round()
    assert set(result.rejected) == {2} and "Node Unavailable" in result.rejected[2]
    assert result.missing == []


@pytest.mark.parametrize(
    ("method", "weight", "sent"),
    [("mlecs", 1.0, True), ("mlecs", 0.0, False), ("no-seccl", 1.0, False), ("fedit", 1.0, False)],
)
def test_the_clouds_prototypes_reach_every_device_only_under_se_ccl(method, weight, sent):
    st = strategy(method, **{"seccl.prototype-weight": weight})
    msgs = instructions(st)
    for msg in msgs.values():
        payload = read_instruction(msg.content)
        if sent:
            assert payload.prototype_classes.tolist() == [0, 2, 5]
            np.testing.assert_array_equal(payload.prototypes, np.eye(3, FUSED, dtype=np.float32))
        else:
            assert len(payload.prototype_classes) == 0 and "prototypes" not in msg.content


@pytest.mark.parametrize("on", [True, False])
def test_the_modality_subsets_prototypes_travel_only_under_their_key(on):
    st = strategy("mlecs", **{"seccl.modality-prototypes": on})
    for msg in instructions(st).values():
        payload = read_instruction(msg.content)
        if on:
            assert sorted(payload.modality_prototypes) == [("acc",), ("gyro",)]
            want = np.eye(3, FUSED, dtype=np.float32) + 2
            np.testing.assert_array_equal(payload.modality_prototypes[("gyro",)], want)
        else:
            assert payload.modality_prototypes == {}
        assert payload.prototype_classes.tolist() == [0, 2, 5]
