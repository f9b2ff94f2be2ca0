"""The cloud side of a round: the server's model, its SE-CCL step and evaluation."""

from __future__ import annotations

import numpy as np

from common.data.views import build_server_data, task_info
from common.learning.evaluation import evaluate, fused_representations
from common.learning.loop import train_steps
from common.learning.losses import anchor_term, ccl_term, sum_terms
from common.model.adapters import PRIVATE, adapter_parameters
from common.model.factory import cloud_model
from common.model.state import cloud_state, load_cloud_state, load_shared_state
from common.settings import RunSettings
from common.state import LORA, State, select


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
        if self.uses_global_lora and select(state, LORA):
            load_shared_state(self.model, state, heads=False)

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
        return cloud_state(self.model)

    def load_state(self, state: State) -> None:
        """Restore what :meth:`state` returned."""
        load_cloud_state(self.model, state)
