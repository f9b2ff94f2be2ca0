"""The cloud side of a round: the server's model, its SE-CCL step and evaluation."""

from __future__ import annotations

import numpy as np

from common.adapters import PRIVATE, SHARED, adapter_parameters, adapter_state, load_adapter_state
from common.datasets import build_server_data, task_info
from common.factory import cloud_model, edge_model
from common.learning import (
    anchor_term,
    ccl_term,
    evaluate,
    fused_representations,
    sum_terms,
    train_steps,
)
from common.model import MultimodalLM
from common.settings import RunSettings
from common.state import HEAD, LORA, State, load_module_state, module_state, prefixed, select


def reference_edge_model(settings: RunSettings) -> MultimodalLM:
    """An edge model holding every modality: the shapes every device shares."""
    task = task_info(settings)
    return edge_model(settings, tuple(s.name for s in task.specs), slot=0, task=task)


def initial_global_state(settings: RunSettings, model: MultimodalLM) -> State:
    """The round-1 global state: shared LoRA and (with MMA) one head per modality.

    Taken from ``model`` (see :func:`reference_edge_model`); empty for methods
    that share nothing.
    """
    comps = settings.components
    if not comps.federated:
        return {}
    state = prefixed(adapter_state(model.lm, SHARED), LORA)
    if comps.mma:
        for name in model.held:
            state.update(prefixed(module_state(model.connector.heads[name]), f"{HEAD}{name}/"))
    return state


class Cloud:
    """The server's model on the public data.

    The cloud model holds every modality. Its own LoRA lives in the ``private``
    adapter slot. When it shares the devices' backbone (``server.backbone =
    "edge"``) and the method federates LoRA, the global shared LoRA sits, frozen,
    in its ``shared`` slot; otherwise the two sides meet only in the fused space.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.task = task_info(settings)
        self.data = build_server_data(settings)
        self.model = cloud_model(settings, self.task)
        self.uses_global_lora = settings.server.backbone == "edge" and settings.components.federated
        self.public_ids = set(int(i) for i in self.data.public_train.ids)

    def load_global(self, state: State) -> None:
        """Put the global shared LoRA into the cloud model (when backbones match)."""
        lora = select(state, LORA)
        if self.uses_global_lora and lora:
            load_adapter_state(self.model.lm, SHARED, lora)

    def step(
        self, consensus_ids: np.ndarray, consensus: np.ndarray, server_round: int
    ) -> dict[str, float]:
        """Train encoders, connector and the cloud LoRA on the public train split.

        Loss: LM + CCL (if on) + an alignment term pulling ``z^s_i`` toward the
        edge consensus ``z^c_i`` (volume InfoNCE, consensus as anchor; if on).
        """
        s, comps, m = self.settings, self.settings.components, self.model
        if s.server.steps == 0:
            return {}
        extra = sum_terms(
            ccl_term(s.ccl) if comps.ccl else None,
            anchor_term(consensus_ids, consensus, s.seccl.server_weight, s.ccl)
            if comps.seccl
            else None,
        )
        params = (
            list(m.encoders.parameters())
            + list(m.connector.parameters())
            + adapter_parameters(m.lm, PRIVATE)
        )
        rng = np.random.default_rng([s.seed, 7919, server_round])
        out = train_steps(
            m,
            self.data.public_train,
            params,
            batch_size=s.server.batch_size,
            epochs=1000,
            max_steps=s.server.steps,
            lr=s.server.lr,
            weight_decay=0.0,
            rng=rng,
            extra=extra,
        )
        return {f"server_{k}": v for k, v in out.items()}

    def representations(self) -> tuple[np.ndarray, np.ndarray]:
        """``z^s`` for every public train sample: ``(N,)`` ids, ``(N, F)``."""
        return fused_representations(self.model, self.data.public_train)

    def evaluate(self) -> dict[str, float]:
        """Score the cloud model on the public test split."""
        t = self.settings.train
        return evaluate(
            self.model,
            self.data.public_test,
            self.task,
            self.settings.eval,
            t.eval_batch_size,
            t.max_new_tokens,
        )

    def state(self) -> State:
        """Everything needed to restore the cloud model (for checkpoints)."""
        m = self.model
        return {
            **module_state(m.encoders, "enc/"),
            **module_state(m.connector, "conn/"),
            **prefixed(adapter_state(m.lm, PRIVATE), "private/"),
        }

    def load_state(self, state: State) -> None:
        """Restore what :meth:`state` returned."""
        m = self.model
        load_module_state(m.encoders, state, "enc/")
        load_module_state(m.connector, state, "conn/")
        load_adapter_state(m.lm, PRIVATE, select(state, "private/"))
