"""The ML-ECS strategy: FedAvg's sampling, MMA aggregation and the cloud step."""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common.records import (
    ANCHORS,
    ARRAYS,
    COUNT_PREFIX,
    DEVICE,
    METRICS,
    NUM_EXAMPLES,
    REPS,
    as_float32,
    from_record,
    get_payload,
    put_payload,
    to_record,
)
from common.settings import RunSettings
from common.state import State
from server_app.aggregation import (
    Contribution,
    aggregate_heads,
    aggregate_lora,
    aggregate_representations,
    check_contribution,
    mma_weights,
)
from server_app.cloud import Cloud
from server_app.ledger import Ledger


class MlEcsStrategy(FedAvg):
    """FedAvg subclass running every method of the framework.

    ``configure_train`` adds, per device, the server's fused representations of
    that device's public ids; ``aggregate_train`` validates each reply, applies MMA
    (or FedAvg), and runs the cloud's SE-CCL step; ``aggregate_evaluate`` keeps the
    per-device metrics for the round record.
    """

    def __init__(self, settings: RunSettings, cloud: Cloud, ledger: Ledger) -> None:
        st = settings.strategy
        super().__init__(
            fraction_train=st.fraction_train,
            fraction_evaluate=st.fraction_evaluate,
            min_train_nodes=st.min_nodes,
            min_evaluate_nodes=st.min_nodes if st.fraction_evaluate > 0 else 0,
            min_available_nodes=st.min_nodes,
        )
        self.settings = settings
        self.cloud = cloud
        self.ledger = ledger
        self.all_modalities = tuple(s.name for s in cloud.task.specs)
        self.global_state: State = {}
        self.anchor_ids = np.zeros(0, np.int64)
        self.anchors = np.zeros((0, settings.model.fused_dim), np.float32)
        self.node_public_ids: dict[int, np.ndarray] = {}
        self.round_info: dict[str, object] = {}
        self.client_metrics: dict[int, dict[str, float]] = {}
        self.round_started = time.time()
        self.round_offset = 0  # rounds already done before a resume

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample devices; attach each device's SE-CCL anchors."""
        server_round += self.round_offset
        self.round_started = time.time()
        if not self.global_state:  # round 1: the initial state (later rounds keep fp32 here)
            self.global_state = as_float32(from_record(arrays))
        messages = list(super().configure_train(server_round, arrays, config, grid))
        comps = self.settings.components
        row = {int(i): r for r, i in enumerate(self.anchor_ids)}
        dtype = self.settings.transport.dtype
        for msg in messages:
            node = msg.metadata.dst_node_id
            self._own_content(msg)
            ids = self.node_public_ids.get(node, np.zeros(0, np.int64))
            if comps.seccl and len(ids) and row:
                ids = np.array([i for i in ids if int(i) in row], np.int64)
                anchors = {"ids": ids, "z": self.anchors[[row[int(i)] for i in ids]]}
                put_payload(msg.content, ANCHORS, anchors, "ANCHORS", dtype, role="server")
            self.ledger.add_down(node, msg.content)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate (MMA or FedAvg), then run the cloud step."""
        server_round += self.round_offset
        s, comps = self.settings, self.settings.components
        accepted: list[Contribution] = []
        rejected: dict[int, str] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                rejected[node] = f"error reply: {reply.error.reason[:200]}"
                continue
            self.ledger.add_up(node, reply.content)
            contrib, problem = self._parse(reply)
            if contrib is None:
                rejected[node] = problem
                continue
            problems = check_contribution(
                contrib,
                self.global_state,
                self.all_modalities,
                s.model.fused_dim,
                self.cloud.public_ids,
                s.mma.max_update_bytes,
            )
            if problems:
                rejected[node] = "; ".join(problems)
                continue
            accepted.append(contrib)
            self.node_public_ids[node] = contrib.rep_ids
        for node, why in rejected.items():
            log(WARNING, "round %s: rejected update of node %s: %s", server_round, node, why)
        info: dict[str, object] = {"accepted": len(accepted), "rejected": len(rejected)}
        if comps.federated and accepted:
            beta = s.mma.beta if comps.mma else 0.0
            clip = s.mma.clip_factor if comps.mma else 0.0
            dis = s.mma.disagreement if comps.mma else 0.0
            weights = mma_weights(accepted, len(self.all_modalities), beta)
            delta, final = aggregate_lora(accepted, weights, clip, dis)
            if comps.mma:
                delta.update(aggregate_heads(accepted))
            self.global_state = {
                k: (v + delta[k]).astype(np.float32) if k in delta else v
                for k, v in self.global_state.items()
            }
            info["weights"] = {str(c.node_id): round(float(w), 4) for c, w in zip(accepted, final)}
        # Cloud step: SE-CCL toward the edge consensus, then new anchors.
        cons_ids, cons = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        if comps.seccl and accepted:
            weights = mma_weights(accepted, len(self.all_modalities), s.mma.beta)
            cons_ids, cons = aggregate_representations(accepted, weights)
        self.cloud.load_global(self.global_state)
        info.update(self.cloud.step(cons_ids, cons, server_round))
        if comps.seccl:
            self.anchor_ids, self.anchors = self.cloud.representations()
        self.round_info = info
        metrics = MetricRecord({"accepted": len(accepted), "rejected": len(rejected)})
        dtype = s.transport.dtype
        arrays = to_record(self.global_state, dtype) if self.global_state else ArrayRecord()
        return arrays, metrics

    def _own_content(self, msg: Message) -> None:
        # FedAvg gives every message the same RecordDict: give each its own before
        # adding per-device payloads, then put the global state (transport dtype)
        # with its manifest.
        msg.content = RecordDict(dict(msg.content))
        put_payload(
            msg.content,
            ARRAYS,
            self.global_state,
            "GLOBAL_STATE",
            self.settings.transport.dtype,
            role="server",
        )

    def _parse(self, reply: Message) -> tuple[Contribution | None, str]:
        content = reply.content
        delta, problems = get_payload(content, ARRAYS, "SHARED_DELTA")
        reps: dict = {}
        if REPS in content.array_records:
            reps, more = get_payload(content, REPS, "REPRESENTATIONS")
            problems += more
        if problems:
            return None, "payload does not match its manifest: " + "; ".join(problems)
        try:
            metrics = content.metric_records[METRICS]
            device = content.config_records[DEVICE]
            modalities = tuple(m for m in str(device["modalities"]).split(",") if m)
            counts = {
                k[len(COUNT_PREFIX) :]: int(v)
                for k, v in metrics.items()
                if k.startswith(COUNT_PREFIX)
            }
            return Contribution(
                node_id=reply.metadata.src_node_id,
                delta=delta,
                num_examples=int(metrics[NUM_EXAMPLES]),
                modalities=modalities,
                modality_counts=counts,
                rep_ids=reps.get("ids", np.zeros(0, np.int64)),
                reps=reps.get("z", np.zeros((0, 0), np.float32)),
            ), ""
        except (KeyError, TypeError, ValueError) as err:
            return None, f"malformed reply ({type(err).__name__}: {err})"

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the new global state to the devices for personal evaluation."""
        server_round += self.round_offset
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        for msg in messages:
            self._own_content(msg)
            self.ledger.add_down(msg.metadata.dst_node_id, msg.content)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Mean of the devices' metrics (unweighted: every device counts once)."""
        server_round += self.round_offset
        self.client_metrics = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "round %s: evaluation failed on node %s", server_round, node)
                continue
            self.ledger.add_up(node, reply.content)
            rec = reply.content.metric_records.get(METRICS)
            if rec is not None:
                self.client_metrics[node] = {k: float(v) for k, v in rec.items()}
        if not self.client_metrics:
            return None
        keys = set.intersection(*(set(m) for m in self.client_metrics.values()))
        mean = {
            k: float(np.mean([m[k] for m in self.client_metrics.values()]))
            for k in sorted(keys)
            if k not in (NUM_EXAMPLES, "partition_id")
        }
        return MetricRecord(mean)
