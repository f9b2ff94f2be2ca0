"""The ML-ECS strategy: FedAvg's sampling, MMA aggregation and the cloud step."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common.exchange import DeviceUpdate
from common.lora_ranks import next_global, refactorises, state_rank, truncate_ranks
from common.settings import RunSettings
from common.state import State, as_float32
from proto.messages import (
    REFACTORISED_ROUND,
    ROUND_TOKEN,
    SERVER_ROUND,
    PackedState,
    instruction,
    pack_global,
    read_evaluate_reply,
)
from proto.records import NUM_EXAMPLES, from_record, to_record
from server_app.aggregation import (
    aggregate_shared,
    mma_in_force,
    mma_weights,
    representation_consensus,
)
from server_app.anchors import anchors_for, fill_anchors, prototypes, update_anchors
from server_app.checkpoint import StrategySnapshot
from server_app.cloud import Cloud
from server_app.contribution import Contribution
from server_app.ledger import Ledger
from server_app.notes import NodeNotes
from server_app.privacy import CentralDp
from server_app.replies import RoundWork, check_reply, enough
from server_app.round_result import RoundResult
from server_app.sampling import sample_devices


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
        self.notes = NodeNotes()  # per-node notes, each kind logged once per run
        self.all_modalities = tuple(s.name for s in cloud.task.specs)
        self._snapshot = StrategySnapshot(
            anchors=np.zeros((0, settings.model.fused_dim), np.float32)
        )
        self._node_partition: dict[int, int] = {}
        self._node_rank: dict[int, int | None] = {}  # a device's LoRA rank below the run's
        self._round: RoundWork | None = None
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
        ranks, run_rank = self._node_rank, state_rank(work.reference)
        work.result.comm_by_device = self.ledger.by_device(self._node_partition, ranks, run_rank)
        work.result.repeated_notes = self.notes.repeated
        self._snapshot.server_round = work.result.server_round
        return work.result

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample devices; send the global state (packed once) and each device's anchors."""
        n = self.round_number(server_round)
        token = f"{n}-{secrets.token_hex(8)}"
        work = RoundWork(RoundResult(n), time.time(), as_float32(from_record(arrays)), token)
        self._round = work
        self.ledger.reset()
        self.notes.start_round()
        config[SERVER_ROUND] = n
        config[ROUND_TOKEN] = token  # devices echo it: replies from elsewhere are refused
        s, snap = self.settings, self._snapshot
        config[REFACTORISED_ROUND] = snap.refactorised_round
        st = s.strategy
        nodes = sample_devices(
            grid, st.fraction_train, st.min_nodes, st.round_timeout, n, seed=s.seed
        )
        dtype, packs = s.transport.dtype, {}
        fill_anchors(s, snap, self.cloud)
        protos, by_subset = prototypes(s, snap, self.cloud)
        for node in nodes:
            packed = self._pack_for(node, work.reference, packs)
            anchors = anchors_for(s, snap, self._node_partition.get(node, -1))
            content = instruction(packed, config, anchors, dtype, protos, by_subset)
            work.sent.append(Message(content, message_type=MessageType.TRAIN, dst_node_id=node))
            self.ledger.add_down(node, content)
        return work.sent

    def _pack_for(self, node: int, state: State, packs: dict) -> PackedState:
        """``state`` as ``node`` takes it: cut to its LoRA rank once known, packed once per rank."""
        # Devices that hold the rest (lora.hold-rest) take the run's rank whatever they upload.
        rank = None if self.settings.holds_rest else self._node_rank.get(node)
        if rank not in packs:
            packs[rank] = pack_global(truncate_ranks(state, rank), self.settings.transport.dtype)
        return packs[rank]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the replies, aggregate the accepted ones, then run the cloud step.

        The steps, in order: accept the replies that pass every check (the
        round's result records the others), skip aggregation below
        ``strategy.min-nodes``, aggregate the shared deltas (MMA, FedAvg or
        central DP), form the devices' representation consensus, train the
        cloud toward it, and refresh the anchors for the next round.
        """
        work = self._round
        assert work is not None, "aggregate_train before configure_train"
        n = self.round_number(server_round)
        accepted = self._accept(work, list(replies), n)
        accepted = enough(accepted, self.settings.strategy.min_nodes, n)
        new_state = self._aggregate(accepted, work.reference, n)
        cons_ids, cons = self._consensus(accepted, n)
        new_state = self._cloud_step(new_state, cons_ids, cons, n)
        update_anchors(self.settings, self._snapshot, self.cloud, cons_ids, cons)
        metrics = MetricRecord({"accepted": len(accepted), "rejected": len(work.result.rejected)})
        return (to_record(new_state) if new_state else ArrayRecord()), metrics

    def _accept(self, work: RoundWork, replies: list[Message], n: int) -> list[Contribution]:
        """The contributions of the replies that pass every check, in partition order.

        Each reply is checked by :func:`~server_app.replies.check_reply`. Fills the
        round's result: why each rejected reply was rejected, the nodes that did
        not answer, and each accepted device's training report and scores.
        """
        result = work.result
        accepted: list[Contribution] = []
        for reply in replies:
            node = work.sender(reply)
            if not reply.has_error():
                self.ledger.add_up(node, reply.content)
            checked = check_reply(
                work,
                reply,
                self.settings,
                self.all_modalities,
                self.cloud.public_ids,
                self._snapshot.public_ids,
            )
            if isinstance(checked, str):
                result.rejected[node] = checked
                continue
            contrib, update = checked
            accepted.append(contrib)
            self._record_device(result, node, contrib, update)
        # Replies arrive in any order; aggregate in partition order, so that a run's
        # floating-point sums (and so its results) do not depend on arrival order.
        accepted.sort(key=lambda c: (self._node_partition.get(c.node_id, -1), c.node_id))
        self._report_absent(work, replies, n)
        result.accepted = len(accepted)
        return accepted

    def _record_device(
        self, result: RoundResult, node: int, contrib: Contribution, update: DeviceUpdate
    ) -> None:
        """Keep an accepted device's report and scores, its public ids and its partition."""
        result.training[node] = dict(update.metrics)
        if update.evaluation:
            result.clients[node] = {**update.evaluation, "partition_id": update.partition_id}
        if len(contrib.rep_ids):
            self._snapshot.public_ids[update.partition_id] = contrib.rep_ids
        self._node_partition[node] = update.partition_id
        self._node_rank[node] = contrib.rank  # what it is sent from now on

    def _report_absent(self, work: RoundWork, replies: list[Message], n: int) -> None:
        """Log the rejected replies; record and log the nodes that did not answer."""
        result = work.result
        for node, why in result.rejected.items():
            log(WARNING, "round %s: rejected update of node %s: %s", n, node, why)
        missing = result.missing = work.missing(replies)
        if missing:
            log(WARNING, "round %s: no reply from nodes %s within the round timeout", n, missing)

    def _aggregate(self, accepted: list[Contribution], reference: State, n: int) -> State:
        """The next global state: ``reference`` plus the aggregate of the accepted deltas.

        MMA (FedAvg for methods without it), or equal weights with central DP;
        the final weights go to the round's result. ``reference`` itself when the
        method does not federate or nothing was accepted.
        """
        s, result = self.settings, self._round.result
        if not (s.components.federated and accepted):
            return reference
        how, scales = s.rank_aggregation, np.ones(len(accepted))
        if s.dp.noise_multiplier > 0:  # never an SVD here: "auto" pads, the SVD kinds are refused
            delta, result.privacy = self._private_aggregate(accepted, n)
            final = np.full(len(accepted), 1 / len(accepted))
        else:
            delta, final, scales = self._mma(accepted, n)
        result.weights = {str(c.node_id): round(float(w), 4) for c, w in zip(accepted, final)}
        deltas, ranks = [c.delta for c in accepted], [c.rank for c in accepted]
        if refactorises(how, ranks):  # devices drop their moments of the old basis
            self._snapshot.refactorised_round = n
        return next_global(how, reference, delta, deltas, ranks, final, scales)

    def _consensus(self, accepted: list[Contribution], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The devices' consensus ``z^c`` per public id: bounded rows, MMA-weighted.

        Without MMA: unbounded rows averaged by example counts. Empty when the
        method exchanges no representations or nothing was accepted.
        """
        s = self.settings
        if not (s.exchange_representations and accepted):
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        snap, mma = self._snapshot, mma_in_force(s)
        ids, cons, notes = representation_consensus(
            accepted, len(self.all_modalities), mma, snap.anchor_ids, snap.anchors
        )
        for node, note in notes.items():
            self.notes.note(n, node, note)
        return ids, cons

    def _cloud_step(
        self, new_state: State, cons_ids: np.ndarray, cons: np.ndarray, n: int
    ) -> State:
        """Train the cloud toward the consensus; the next global state (FedCoLLM: distilled)."""
        result = self._round.result
        self.cloud.load_global(new_state)
        result.cloud = self.cloud.step(cons_ids, cons, n)
        if not (self.settings.components.distill and new_state):
            return new_state
        distilled, info = self.cloud.distill(n)
        result.cloud.update(info)
        return {k: distilled[k] for k in new_state}

    def _mma(self, accepted: list[Contribution], n: int) -> tuple[State, np.ndarray, np.ndarray]:
        """MMA (or FedAvg) of the shared deltas, final weights, scales; clipped ones logged."""
        mma = mma_in_force(self.settings)
        weights = mma_weights(accepted, len(self.all_modalities), mma.beta, mma.clip_factor)
        clip, dis = mma.clip_factor, mma.disagreement
        delta, final, scales = aggregate_shared(accepted, weights, clip, dis)
        for c, scale in zip(accepted, scales):
            if scale < 1:
                self.notes.note(n, c.node_id, f"update clipped (x{scale:.3g})")
        return delta, final, scales

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
            eps = info["dp_epsilon"]
            log(INFO, "round %s: privacy spent epsilon %.3f at delta %g", n, eps, s.dp.delta)
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
        s, st = self.settings, self.settings.strategy
        nodes = sample_devices(
            grid, st.fraction_evaluate, st.min_nodes, st.round_timeout, n, "evaluation", seed=s.seed
        )
        if not nodes:
            return []
        config[SERVER_ROUND] = n
        state, packs, messages = from_record(arrays), {}, []
        for node in nodes:
            content = instruction(self._pack_for(node, state, packs), config)
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
