"""One edge device's round: its training stages, CCL and SE-CCL terms, its update (no Flower).

Every method spends the same ``train.steps`` optimiser steps per round, and every
step trains the device's encoder side (encoders, heads, fusion, map into the fused
space) together with the shared adapters (backbone LoRA and prompt adapter).
Without AMT that is one stage on all the data the device holds (its private train
split and its public share), whose result is uploaded. With AMT the budget is
split: a shared stage on all that data, whose result is uploaded, then a private
stage that goes on tuning the device's own copy of the adapters on its private
data alone. That personal copy never leaves the device; it is the model the device
uses (and is scored with) until the next round's global state arrives. Under the
paper's AMT (``amt.variant = "gate"``) the private stage tunes a private LoRA and
the gate mixing it with the shared one instead; both stay on the device across
rounds. With ``seccl.prototype-weight`` the cloud's class prototypes pull the fused
representation of every labelled sample toward its class, in both stages (with
``seccl.modality-prototypes``, a sample holding only some modalities toward that
subset's prototypes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data.samples import ClientData, SampleSet
from common.data.views import build_client_data, task_info, training_data
from common.exchange import DeviceUpdate, GlobalPayload
from common.learning.evaluation import evaluate, fused_representations
from common.learning.loop import StageReport, Trainer
from common.learning.losses import (
    ExtraLoss,
    anchor_term,
    ccl_term,
    on_unlabelled,
    proximal_term,
)
from common.learning.prototypes import prototype_term, view_prototype_term
from common.lora_ranks import truncate_ranks
from common.model.adapters import PRIVATE, SHARED, adapter_parameters
from common.model.factory import edge_model
from common.model.held_components import train_first_components
from common.model.multimodal import MultimodalLM
from common.model.pretrained_encoders import trainable_parameters
from common.model.state import (
    OWN_SHARED,
    encoder_state,
    load_local_state,
    load_shared_state,
    local_state,
    shareable,
    shared_state,
)
from common.settings import RunSettings
from common.state import ENC_LORA, State, prefixed, subtract


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is: its partition and, optionally, its declared modalities."""

    partition_id: int
    num_partitions: int
    modalities: tuple[str, ...] | None = None


# In the local state: the round the device last trained in (its optimiser's moments
# belong to the basis of the adapters it got then).
TRAINED_ROUND = "device/trained-round"


class Device:
    """A device's data, model and optimiser for one message, restored from its local state."""

    def __init__(self, settings: RunSettings, ident: DeviceIdentity) -> None:
        self.settings = settings
        self.ident = ident
        self.task = task_info(settings)
        self.data: ClientData = build_client_data(
            settings, ident.partition_id, ident.num_partitions, ident.modalities
        )
        self.held = training_data(settings, self.data)
        self.model: MultimodalLM = edge_model(
            settings, self.data.modalities, ident.partition_id, self.task
        )
        m, t = self.model, settings.train
        # Frozen pretrained encoder weights are never trained (nor kept in any state).
        self.encoder_side = [*trainable_parameters(m.encoders), *m.connector.private_parameters()]
        self.shared_params = [
            *m.connector.shared_parameters(),
            *adapter_parameters(m.lm, SHARED),
            *m.encoder_adapters.parameters(),
        ]
        if settings.lora.trained_rank:  # lora.hold-rest: train the first, hold the rest
            train_first_components(m, settings.lora.trained_rank)
        # The paper's AMT (amt.variant = "gate"): a private LoRA and the gate, tuned
        # in the private stage only, never shared.
        self.private_params = (
            [*adapter_parameters(m.lm, PRIVATE), *m.gate.parameters()] if m.gate else []
        )
        self.trainer = Trainer(
            m,
            self.encoder_side + self.shared_params + self.private_params,
            lr=t.lr,
            weight_decay=t.weight_decay,
        )
        self.trained_round = 0  # restored from the local state

    # ------------------------------------------------------------------ state
    def restore(self, local: State | None, payload: GlobalPayload) -> None:
        """Load the device's own state (optimiser included), then the global shared state."""
        if local:
            load_local_state(self.model, local)
            self.trainer.load_state(local)
            self.trained_round = int(local.get(TRAINED_ROUND, 0))
            if self.trained_round and payload.refactorised_round >= self.trained_round:
                # The server re-factorised these adapters since (FlexLoRA): in the
                # new basis the moments of the old one point nowhere in particular.
                m = self.model
                self.trainer.forget(
                    [*m.connector.shared_parameters(), *adapter_parameters(m.lm, SHARED)]
                )
        if self.settings.components.federated and payload.state:
            # The run's adapter, cut to this device's LoRA rank (a profile may lower it).
            load_shared_state(self.model, truncate_ranks(payload.state, self.settings.lora.rank))

    def shared_state(self) -> State:
        """The state this device shares: the shared low-rank adapters (FedSA: their A).

        Under ``lora.trained-rank`` only the components it trains (the first ones).
        """
        state = truncate_ranks(shared_state(self.model), self.settings.lora.trained_rank or None)
        if not self.settings.lora.encoder_share:
            state = {k: v for k, v in state.items() if not k.startswith(ENC_LORA)}
        return shareable(state, self.settings.components.share_b)

    def local_state(self) -> State:
        """Everything that stays on the device: its parts, personal adapters, optimiser."""
        comps = self.settings.components
        keep = comps.amt or not comps.federated or not comps.share_b
        state = {**local_state(self.model, keep_shared=keep), **self.trainer.state()}
        state[TRAINED_ROUND] = np.asarray(self.trained_round, np.int64)
        if not self.settings.lora.encoder_share:  # never in the global state: keep them here
            state.update(prefixed(encoder_state(self.model), OWN_SHARED))
        return state

    # ---------------------------------------------------------------- training
    def train(self, payload: GlobalPayload, server_round: int) -> DeviceUpdate:
        """Run this round's local training and build the update."""
        s, comps = self.settings, self.settings.components
        self.trained_round = server_round
        start = self.shared_state()
        rng = np.random.default_rng([s.seed, self.ident.partition_id, server_round])
        terms = self._loss_terms(payload, rng)
        shared_steps, private_steps = (
            s.amt.split(s.train.steps) if comps.amt else (s.train.steps, 0)
        )
        report = self._stage(self.held, self.shared_params, shared_steps, rng, terms)
        metrics = report.flat("shared" if comps.amt else "train")
        # What is uploaded is the state after the shared stage: the adapters' delta
        # and the fused representations of the device's public share.
        uploaded = self.shared_state()
        rep_ids, reps = self._public_representations()
        if comps.amt:
            metrics.update(self._private_stage(private_steps, rng, terms))
        return DeviceUpdate(
            delta=subtract(uploaded, start) if comps.federated else {},
            rep_ids=rep_ids,
            reps=reps,
            num_examples=len(self.held),
            modalities=self.data.modalities,
            modality_counts=_held_counts(self.held, self.data.modalities),
            metrics=metrics,
            partition_id=self.ident.partition_id,
            round_token=payload.round_token,
        )

    def _loss_terms(self, payload: GlobalPayload, rng: np.random.Generator) -> dict[str, ExtraLoss]:
        """The extra loss terms of this round's training, by name (CCL, SE-CCL, ...)."""
        s, comps, m = self.settings, self.settings.components, self.model
        terms: dict[str, ExtraLoss] = {}
        if comps.ccl and (term := ccl_term(s.ccl)) is not None:
            terms["ccl"] = term
        if comps.seccl or comps.rep_exchange:
            # SE-CCL: the cloud's z^s as anchors; CreamFL: the devices' consensus.
            term = anchor_term(payload.anchor_ids, payload.anchors, s.seccl.weight, s.ccl)
            if term is not None and not s.data.use_public_share and s.seccl.unlabelled_public:
                # The anchored public share is not in the training batches: align
                # its representations to the anchors without using its labels.
                term = on_unlabelled(term, m, self.data.public, s.train.batch_size, rng)
            if term is not None:
                terms["seccl" if comps.seccl else "creamfl"] = term
        if comps.seccl and s.seccl.prototype_weight > 0:
            sc = s.seccl
            term = prototype_term(
                payload.prototype_classes,
                payload.prototypes,
                sc.prototype_weight,
                sc.prototype_temperature,
                payload.modality_prototypes,
                m.held,
            )
            if term is not None:
                terms["proto"] = term
            if sc.prototype_views:
                term = view_prototype_term(
                    payload.prototype_classes,
                    payload.prototypes,
                    sc.prototype_weight,
                    sc.prototype_temperature,
                    m.connector.fuse,
                )
                if term is not None:
                    terms["proto_views"] = term
        if comps.prox:
            terms["prox"] = proximal_term(self.shared_params, s.fedprox.mu)
        return terms

    def _public_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """The fused ``z^c`` of the device's public share, when the method exchanges them."""
        s = self.settings
        if s.exchange_representations:
            return fused_representations(self.model, self.data.public)
        return np.zeros(0, np.int64), np.zeros((0, s.model.fused_dim), np.float32)

    def _private_stage(
        self, steps: int, rng: np.random.Generator, terms: dict[str, ExtraLoss]
    ) -> dict[str, float]:
        """AMT's private stage on the private data; its report (and the gate's values).

        The device's own copy of the shared adapters goes on learning, or (gate)
        its private adapter and the gate.
        """
        s, m = self.settings, self.model
        if not s.ccl.private_stage:
            terms.pop("ccl", None)
        own = self.private_params or self.shared_params
        metrics = self._stage(self.data.train, own, steps, rng, terms).flat("private")
        if m.gate is not None:
            metrics.update({f"gate_{a}": v for a, v in m.gate.values().items()})
        return metrics

    def _stage(
        self,
        data: SampleSet,
        adapters: list,
        steps: int,
        rng: np.random.Generator,
        terms: dict[str, ExtraLoss],
    ) -> StageReport:
        # Every step trains the encoder side and the adapters (equal updates across
        # methods); the gradient shares are measured on the encoder side, where
        # every loss term acts.
        return self.trainer.run(
            data,
            self.encoder_side + adapters,
            steps,
            self.settings.train.batch_size,
            rng,
            terms,
            probe=self.encoder_side,
            max_share={"ccl": self.settings.ccl.max_share},
        )

    # -------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Score the device's model on its private test split."""
        t = self.settings.train
        return evaluate(
            self.model,
            self.data.test,
            self.task,
            self.settings.eval,
            t.eval_batch_size,
            t.max_new_tokens,
        )


def _held_counts(data: SampleSet, held: tuple[str, ...]) -> dict[str, int]:
    counts = data.modality_counts()
    return {m: counts[m] for m in held}
