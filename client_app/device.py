"""One edge device's round: AMT stages, CCL and SE-CCL terms, its update (no Flower)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data.samples import ClientData, SampleSet
from common.data.views import build_client_data, task_info
from common.exchange import DeviceUpdate, GlobalPayload
from common.learning.evaluation import evaluate, fused_representations
from common.learning.loop import train_steps
from common.learning.losses import ExtraLoss, anchor_term, ccl_term, sum_terms
from common.model.adapters import PRIVATE, SHARED, adapter_parameters
from common.model.factory import edge_model
from common.model.multimodal import MultimodalLM
from common.model.state import load_local_state, load_shared_state, local_state, shared_state
from common.settings import RunSettings
from common.state import State, subtract


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is: its partition and, optionally, its declared modalities."""

    partition_id: int
    num_partitions: int
    modalities: tuple[str, ...] | None = None


class Device:
    """A device's data and model for one message, restored from its local state."""

    def __init__(self, settings: RunSettings, ident: DeviceIdentity) -> None:
        self.settings = settings
        self.ident = ident
        self.task = task_info(settings)
        self.data: ClientData = build_client_data(
            settings, ident.partition_id, ident.num_partitions, ident.modalities
        )
        self.model: MultimodalLM = edge_model(
            settings, self.data.modalities, ident.partition_id, self.task
        )

    # ------------------------------------------------------------------ state
    def restore(self, local: State | None, payload: GlobalPayload) -> None:
        """Load the device's own state, then the global shared state over it."""
        if local:
            load_local_state(self.model, local)
        comps = self.settings.components
        if comps.federated and payload.state:
            load_shared_state(self.model, payload.state, heads=comps.mma)

    def shared_state(self) -> State:
        """The state this device shares: shared LoRA and (with MMA) its heads."""
        return shared_state(self.model, heads=self.settings.components.mma)

    def local_state(self) -> State:
        """Everything that stays on the device."""
        return local_state(self.model, keep_shared=not self.settings.components.federated)

    # ---------------------------------------------------------------- training
    def train(self, payload: GlobalPayload, server_round: int) -> DeviceUpdate:
        """Run this round's local training and build the update."""
        s, comps, m, data = self.settings, self.settings.components, self.model, self.data
        start = self.shared_state()
        rng = np.random.default_rng([s.seed, self.ident.partition_id, server_round])
        conn = list(m.connector.parameters())
        enc = list(m.encoders.parameters())
        shared = adapter_parameters(m.lm, SHARED)
        ccl = ccl_term(s.ccl) if comps.ccl else None
        metrics: dict[str, float] = {}
        if comps.amt:
            # Shared stage on the public share: encoders frozen.
            seccl = self._seccl_term(payload) if comps.seccl else None
            out = self._stage(data.public, conn + shared, rng, sum_terms(ccl, seccl))
            metrics.update({f"shared_{k}": v for k, v in out.items()})
            # Only the shared stage's result is uploaded: snapshot it before the
            # private stage adapts the connector (heads included) to private data.
            uploaded = self.shared_state()
            # Private stage on private data: private LoRA and the gate adapt.
            private = adapter_parameters(m.lm, PRIVATE) + list(m.gate.parameters())
            out = self._stage(data.train, enc + conn + private, rng, ccl)
            metrics.update({f"private_{k}": v for k, v in out.items()})
            trained_on = data.public
        else:
            trained_on = data.train
            extra = ccl
            if comps.seccl:
                trained_on = _concat(data.train, data.public)
                extra = sum_terms(ccl, self._seccl_term(payload))
            out = self._stage(trained_on, enc + conn + shared, rng, extra)
            metrics.update({f"train_{k}": v for k, v in out.items()})
            uploaded = self.shared_state()
        if comps.seccl:
            rep_ids, reps = fused_representations(m, data.public)
        else:
            rep_ids, reps = np.zeros(0, np.int64), np.zeros((0, s.model.fused_dim), np.float32)
        delta = subtract(uploaded, start) if comps.federated else {}
        gate = m.gate.values()
        metrics.update({"gate_shared": gate[SHARED], "gate_private": gate[PRIVATE]})
        return DeviceUpdate(
            delta=delta,
            rep_ids=rep_ids,
            reps=reps,
            num_examples=len(trained_on),
            modalities=data.modalities,
            modality_counts=_held_counts(trained_on, data.modalities),
            metrics=metrics,
            partition_id=self.ident.partition_id,
        )

    def _seccl_term(self, payload: GlobalPayload) -> ExtraLoss | None:
        return anchor_term(
            payload.anchor_ids, payload.anchors, self.settings.seccl.weight, self.settings.ccl
        )

    def _stage(self, data, params, rng, extra: ExtraLoss | None) -> dict[str, float]:
        t = self.settings.train
        return train_steps(
            self.model,
            data,
            params,
            batch_size=t.batch_size,
            epochs=t.epochs,
            max_steps=t.max_steps,
            lr=t.lr,
            weight_decay=t.weight_decay,
            rng=rng,
            extra=extra,
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


def _concat(a: SampleSet, b: SampleSet) -> SampleSet:
    return SampleSet(
        specs=a.specs,
        inputs={k: np.concatenate([a.inputs[k], b.inputs[k]]) for k in a.inputs},
        mask=np.concatenate([a.mask, b.mask]),
        targets=a.targets + b.targets,
        labels=np.concatenate([a.labels, b.labels]),
        # Private ids are made negative so they never match a public anchor id.
        ids=np.concatenate([-1 - a.ids, b.ids]),
    )


def _held_counts(data: SampleSet, held: tuple[str, ...]) -> dict[str, int]:
    counts = data.modality_counts()
    return {m: counts[m] for m in held}
