"""One edge device's round: AMT stages, CCL and SE-CCL terms, its update (no Flower)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.adapters import PRIVATE, SHARED, adapter_parameters, adapter_state, load_adapter_state
from common.datasets import build_client_data, task_info
from common.factory import edge_model
from common.learning import (
    ExtraLoss,
    anchor_term,
    ccl_term,
    evaluate,
    fused_representations,
    sum_terms,
    train_steps,
)
from common.model import MultimodalLM
from common.samples import ClientData
from common.settings import RunSettings
from common.state import (
    HEAD,
    LORA,
    State,
    load_module_state,
    module_state,
    prefixed,
    select,
    subtract,
)


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is: its partition and, optionally, its declared modalities."""

    partition_id: int
    num_partitions: int
    modalities: tuple[str, ...] | None = None


@dataclass
class GlobalPayload:
    """What the server sends: global shared state and SE-CCL anchors.

    Attributes
    ----------
    state : State
        ``lora/<key>`` shared LoRA and ``head/<modality>/<param>`` shared heads.
    anchor_ids : numpy.ndarray
        ``(N,)`` public sample ids the anchors belong to.
    anchors : numpy.ndarray
        ``(N, fused_dim)`` the server's fused representations ``z^s``.
    """

    state: State = field(default_factory=dict)
    anchor_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


@dataclass
class DeviceUpdate:
    """What the device sends back after training.

    Attributes
    ----------
    delta : State
        ``lora/...`` and ``head/...`` deltas against the received global state.
    rep_ids, reps : numpy.ndarray
        ``(N,)`` public ids and ``(N, fused_dim)`` the device's ``z^c`` for them.
    num_examples : int
        Samples the shared state was trained on.
    modalities : tuple of str
        The device's modality set.
    modality_counts : dict of str to int
        Per-modality present-sample counts in the data the shared state saw.
    metrics : dict of str to float
        Training losses.
    """

    delta: State
    rep_ids: np.ndarray
    reps: np.ndarray
    num_examples: int
    modalities: tuple[str, ...]
    modality_counts: dict[str, int]
    metrics: dict[str, float]


# Local (never uploaded) state is stored under these prefixes.
_ENC, _CONN, _GATE, _PRIV, _OWN_SHARED = "enc/", "conn/", "gate/", "private/", "shared/"


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
        m = self.model
        if local:
            load_module_state(m.encoders, local, _ENC)
            load_module_state(m.connector, local, _CONN)
            load_module_state(m.gate, local, _GATE)
            load_adapter_state(m.lm, PRIVATE, select(local, _PRIV))
            own = select(local, _OWN_SHARED)
            if own:
                load_adapter_state(m.lm, SHARED, own)
        comps = self.settings.components
        if comps.federated and payload.state:
            lora = select(payload.state, LORA)
            if lora:
                load_adapter_state(m.lm, SHARED, lora)
            if comps.mma:
                self._load_heads(select(payload.state, HEAD))

    def _load_heads(self, heads: State) -> None:
        for name in self.model.held:
            own = select(heads, name + "/")
            if own:
                load_module_state(self.model.connector.heads[name], own)

    def shared_state(self) -> State:
        """The state this device shares: shared LoRA and (with MMA) its heads."""
        state = prefixed(adapter_state(self.model.lm, SHARED), LORA)
        if self.settings.components.mma:
            for name in self.model.held:
                head = module_state(self.model.connector.heads[name])
                state.update(prefixed(head, f"{HEAD}{name}/"))
        return state

    def local_state(self) -> State:
        """Everything that stays on the device."""
        m = self.model
        state = {
            **module_state(m.encoders, _ENC),
            **module_state(m.connector, _CONN),
            **module_state(m.gate, _GATE),
            **prefixed(adapter_state(m.lm, PRIVATE), _PRIV),
        }
        if not self.settings.components.federated:
            state.update(prefixed(adapter_state(m.lm, SHARED), _OWN_SHARED))
        return state

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


def _concat(a, b):
    from common.samples import SampleSet

    return SampleSet(
        specs=a.specs,
        inputs={k: np.concatenate([a.inputs[k], b.inputs[k]]) for k in a.inputs},
        mask=np.concatenate([a.mask, b.mask]),
        targets=a.targets + b.targets,
        labels=np.concatenate([a.labels, b.labels]),
        # Private ids are made negative so they never match a public anchor id.
        ids=np.concatenate([-1 - a.ids, b.ids]),
    )


def _held_counts(data, held: tuple[str, ...]) -> dict[str, int]:
    counts = data.modality_counts()
    return {m: counts[m] for m in held}
