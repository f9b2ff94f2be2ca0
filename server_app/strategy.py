"""The ML-ECS strategy: FedAvg's sampling, MMA aggregation and the cloud step."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common.settings import RunSettings
from common.state import State, as_float32
from proto.messages import (
    ROUND_TOKEN,
    SERVER_ROUND,
    PackedState,
    PayloadError,
    instruction,
    pack_global,
    read_evaluate_reply,
    read_train_reply,
)
from proto.records import NUM_EXAMPLES, from_record, to_record
from server_app.aggregation import (
    aggregate_representations,
    aggregate_shared,
    bound_representations,
    mma_weights,
)
from server_app.checkpoint import StrategySnapshot
from server_app.cloud import Cloud
from server_app.contribution import Contribution, check_contribution
from server_app.ledger import Ledger
from server_app.privacy import CentralDp
from server_app.round_result import RoundResult
from server_app.sampling import sample_devices


@dataclass
class _RoundWork:
    """What one round holds between its hooks (dropped when the next round starts)."""

    result: RoundResult
    started: float
    reference: State = field(default_factory=dict)  # numpy view of this round's arrays
    token: str = ""  # the round's token; a train reply must echo it
    sent: list[Message] = field(default_factory=list)  # this round's train instructions

    def sender(self, reply: Message) -> int:
        """The node a reply answers for: the SuperLink (node 1) sends a dead node's error."""
        for msg in self.sent:
            if (
                msg.metadata.message_id
                and msg.metadata.message_id == reply.metadata.reply_to_message_id
            ):
                return msg.metadata.dst_node_id
        return reply.metadata.src_node_id


class MlEcsStrategy(FedAvg):
    """FedAvg subclass running every method of the framework.

    The global shared state is Flower's ``arrays`` only: each round reads it once
    (``configure_train``), packs it once for all devices, and ``aggregate_train``
    returns the next one. ``configure_train`` adds, per device, the server's
    fused representations of that device's public ids; ``aggregate_train``
    validates each reply against its manifest, applies MMA (or FedAvg) and runs
    the cloud's SE-CCL step; ``aggregate_evaluate`` collects per-device metrics.
    What a round produced is :meth:`finish_round`'s :class:`RoundResult`; the
    state a resumed run needs is :meth:`snapshot` / :meth:`restore`.
    """

    def __init__(self, settings: RunSettings, cloud: Cloud, edge_param_bytes: int = 0) -> None:
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
        self.edge_param_bytes = edge_param_bytes
        self.ledger = Ledger()
        self.all_modalities = tuple(s.name for s in cloud.task.specs)
        self._snapshot = StrategySnapshot(
            anchors=np.zeros((0, settings.model.fused_dim), np.float32)
        )
        self._node_partition: dict[int, int] = {}
        self._round: _RoundWork | None = None
        self._offset = 0  # rounds completed before this start() (a resumed run)
        self._dp: CentralDp | None = None  # central DP, built at the first private release

    # ---------------------------------------------------------------- rounds
    def round_number(self, flower_round: int) -> int:
        """The run's round number of Flower's ``flower_round`` (counts resumed rounds)."""
        return self._offset + flower_round

    def snapshot(self) -> StrategySnapshot:
        """The strategy's state after the last finished round (for a checkpoint)."""
        return self._snapshot

    def restore(self, snapshot: StrategySnapshot) -> None:
        """Continue after ``snapshot``: round numbers, anchors and device public ids."""
        self._snapshot = snapshot
        self._offset = snapshot.server_round

    def finish_round(self) -> RoundResult:
        """Close the current round: its result, with timing and communication."""
        work = self._round
        if work is None:
            raise RuntimeError("finish_round() called before any round started")
        work.result.seconds = round(time.time() - work.started, 2)
        work.result.comm = self.ledger.summary(self.edge_param_bytes)
        self._snapshot.server_round = work.result.server_round
        return work.result

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample devices; send the global state (packed once) and each device's anchors."""
        n = self.round_number(server_round)
        token = f"{n}-{secrets.token_hex(8)}"
        work = _RoundWork(RoundResult(n), time.time(), as_float32(from_record(arrays)), token)
        self._round = work
        self.ledger.reset()
        config[SERVER_ROUND] = n
        config[ROUND_TOKEN] = token  # devices echo it: replies from elsewhere are refused
        st = self.settings.strategy
        nodes = sample_devices(
            grid, st.fraction_train, st.min_nodes, st.round_timeout, n, seed=self.settings.seed
        )
        dtype = self.settings.transport.dtype
        packed = pack_global(work.reference, dtype)
        protos = self._prototypes()
        for node in nodes:
            content = instruction(packed, config, self._anchors_for(node), dtype, protos)
            work.sent.append(Message(content, message_type=MessageType.TRAIN, dst_node_id=node))
            self.ledger.add_down(node, content)
        return work.sent

    def _prototypes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The cloud's class prototypes (SE-CCL with ``seccl.prototype-weight`` > 0), or None.

        Computed from the cloud model as it stands, the same for every device of
        the round (and after a resume, as the cloud is restored).
        """
        s = self.settings
        if not (s.components.seccl and s.seccl.prototype_weight > 0):
            return None
        return self.cloud.prototypes()

    def _anchors_for(self, node: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Anchors for ``node``: its public ids' rows of the anchor table, or all of them.

        The table is the cloud's ``z^s`` (SE-CCL) or the devices' last consensus
        (CreamFL). A device the server has not heard from yet (round 1, a
        newcomer) gets the whole table, as the server does not know its share.
        """
        snap, comps = self._snapshot, self.settings.components
        if not (comps.seccl or comps.rep_exchange):
            return None
        if not len(snap.anchor_ids):
            if not comps.seccl:
                return None  # CreamFL before the first consensus
            snap.anchor_ids, snap.anchors = self.cloud.representations()
        ids = snap.public_ids.get(self._node_partition.get(node, -1))
        if ids is None:
            return snap.anchor_ids, snap.anchors
        row = {int(i): r for r, i in enumerate(snap.anchor_ids)}
        ids = np.array([i for i in ids if int(i) in row], np.int64)
        return ids, snap.anchors[[row[int(i)] for i in ids]]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate (MMA or FedAvg), then run the cloud step."""
        work = self._round
        assert work is not None, "aggregate_train before configure_train"
        n, result, reference = self.round_number(server_round), work.result, work.reference
        s, comps = self.settings, self.settings.components
        accepted: list[Contribution] = []
        replies = list(replies)
        for reply in replies:
            node = work.sender(reply)
            if reply.has_error():
                result.rejected[node] = f"error reply: {reply.error.reason[:200]}"
                continue
            self.ledger.add_up(node, reply.content)
            try:
                update = read_train_reply(reply.content)
            except PayloadError as err:
                result.rejected[node] = str(err)
                continue
            if update.round_token != work.token:
                result.rejected[node] = (
                    f"reply belongs to another round or run (token {update.round_token!r})"
                )
                continue
            contrib = Contribution.from_update(node, update)
            problems = check_contribution(
                contrib,
                reference,
                self.all_modalities,
                s.model.fused_dim,
                self.cloud.public_ids,
                s.mma.max_update_bytes,
            )
            known = self._snapshot.public_ids.get(update.partition_id)
            if (
                known is not None
                and len(contrib.rep_ids)
                and not np.array_equal(np.sort(contrib.rep_ids), np.sort(known))
            ):
                problems.append("representations for public ids outside the device's share")
            if problems:
                result.rejected[node] = "; ".join(problems)
                continue
            accepted.append(contrib)
            result.training[node] = dict(update.metrics)
            if update.evaluation:
                result.clients[node] = {**update.evaluation, "partition_id": update.partition_id}
            if len(contrib.rep_ids):
                self._snapshot.public_ids[update.partition_id] = contrib.rep_ids
            self._node_partition[node] = update.partition_id
        # Replies arrive in any order; aggregate in partition order, so that a run's
        # floating-point sums (and so its results) do not depend on arrival order.
        accepted.sort(key=lambda c: (self._node_partition.get(c.node_id, -1), c.node_id))
        for node, why in result.rejected.items():
            log(WARNING, "round %s: rejected update of node %s: %s", n, node, why)
        answered = {work.sender(r) for r in replies}
        result.missing = sorted({m.metadata.dst_node_id for m in work.sent} - answered)
        if result.missing:
            log(
                WARNING,
                "round %s: no reply from nodes %s within the round timeout",
                n,
                result.missing,
            )
        result.accepted = len(accepted)
        new_state = reference
        if len(accepted) < s.strategy.min_nodes:
            log(
                WARNING,
                "round %s: aggregation skipped: %d updates accepted (strategy.min-nodes = %d)",
                n,
                len(accepted),
                s.strategy.min_nodes,
            )
            accepted = []
        if comps.federated and accepted:
            if s.dp.noise_multiplier > 0:
                delta, result.privacy = self._private_aggregate(accepted, n)
                final = np.full(len(accepted), 1 / len(accepted))
            else:
                delta, final = self._mma(accepted, n)
            new_state = {
                k: (v + delta[k]).astype(np.float32) if k in delta else v
                for k, v in reference.items()
            }
            result.weights = {str(c.node_id): round(float(w), 4) for c, w in zip(accepted, final)}
        # Cloud step: SE-CCL toward the edge consensus, then new anchors.
        cons_ids, cons = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        if s.exchange_representations and accepted:
            weights = mma_weights(accepted, len(self.all_modalities), s.mma.beta, s.mma.clip_factor)
            snap = self._snapshot
            reps, mult, notes = bound_representations(
                accepted, snap.anchor_ids, snap.anchors, s.mma.clip_factor, s.mma.disagreement
            )
            for node, note in notes.items():
                log(INFO, "round %s: node %s: %s", n, node, note)
            cons_ids, cons = aggregate_representations(accepted, weights * mult, reps)
        self.cloud.load_global(new_state)
        result.cloud = self.cloud.step(cons_ids, cons, n)
        if comps.distill and new_state:
            distilled, info = self.cloud.distill(n)
            new_state = {k: distilled[k] for k in new_state}
            result.cloud.update(info)
        if comps.seccl:
            self._snapshot.anchor_ids, self._snapshot.anchors = self.cloud.representations()
        elif comps.rep_exchange and len(cons_ids):
            self._snapshot.anchor_ids, self._snapshot.anchors = cons_ids, cons
        metrics = MetricRecord({"accepted": len(accepted), "rejected": len(result.rejected)})
        return (to_record(new_state) if new_state else ArrayRecord()), metrics

    def _mma(self, accepted: list[Contribution], n: int) -> tuple[State, np.ndarray]:
        """MMA (or, for methods without it, FedAvg) of the shared deltas; clipped ones logged."""
        s, comps = self.settings, self.settings.components
        beta = s.mma.beta if comps.mma else 0.0
        clip = s.mma.clip_factor if comps.mma else 0.0
        dis = s.mma.disagreement if comps.mma else 0.0
        weights = mma_weights(accepted, len(self.all_modalities), beta, clip)
        delta, final, scales = aggregate_shared(accepted, weights, clip, dis)
        for c, scale in zip(accepted, scales):
            if scale < 1:
                log(INFO, "round %s: update of node %s clipped (x%.3g)", n, c.node_id, scale)
        return delta, final

    def _private_aggregate(self, accepted: list[Contribution], n: int) -> tuple[State, dict]:
        """Central DP: clipped deltas, equal weights, Gaussian noise; the privacy spent."""
        s = self.settings
        if self._dp is None:
            population = len(self._round.sent) if self._round else len(accepted)
            self._dp = CentralDp(s.dp, population, self._snapshot.dp_releases)
        rng = np.random.default_rng([s.seed, 9973, n])
        delta, info = self._dp.aggregate([c.delta for c in accepted], rng)
        self._snapshot.dp_releases = list(self._dp.releases)
        if "dp_epsilon" in info:
            log(
                INFO,
                "round %s: privacy spent epsilon %.3f at delta %g",
                n,
                info["dp_epsilon"],
                s.dp.delta,
            )
        return delta, info

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every ``strategy.evaluate-every`` rounds, send the aggregated state for evaluation.

        Devices score their personal model in every train reply; this separate
        evaluation scores the aggregated shared state with each device's own parts.
        """
        n = self.round_number(server_round)
        every = self.settings.strategy.evaluate_every
        if every == 0 or n % every:
            return []
        st = self.settings.strategy
        nodes = sample_devices(
            grid,
            st.fraction_evaluate,
            st.min_nodes,
            st.round_timeout,
            n,
            "evaluation",
            seed=self.settings.seed,
        )
        if not nodes:
            return []
        config[SERVER_ROUND] = n
        packed: PackedState = pack_global(from_record(arrays), self.settings.transport.dtype)
        messages = []
        for node in nodes:
            content = instruction(packed, config)
            messages.append(Message(content, message_type=MessageType.EVALUATE, dst_node_id=node))
            self.ledger.add_down(node, content)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Mean of the devices' metrics (unweighted: every device counts once)."""
        n = self.round_number(server_round)
        clients: dict[int, dict[str, float]] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "round %s: evaluation failed on node %s", n, node)
                continue
            self.ledger.add_up(node, reply.content)
            metrics = read_evaluate_reply(reply.content)
            if metrics is not None:
                if node in self._node_partition:
                    metrics["partition_id"] = self._node_partition[node]
                clients[node] = metrics
        if self._round is not None:
            self._round.result.clients_global = clients
        if not clients:
            return None
        keys = set.intersection(*(set(m) for m in clients.values()))
        mean = {
            k: float(np.mean([m[k] for m in clients.values()]))
            for k in sorted(keys)
            if k not in (NUM_EXAMPLES, "partition_id")
        }
        return MetricRecord(mean)
