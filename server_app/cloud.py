"""The cloud side of a round: the server's model, its SE-CCL step and evaluation."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from common.data.views import build_server_data, task_info
from common.learning.evaluation import evaluate, fused_representations
from common.learning.loop import Trainer
from common.learning.losses import ExtraLoss, anchor_term, ccl_term
from common.learning.prototypes import class_prototypes, subset_prototypes
from common.model.adapters import PRIVATE, adapter_parameters
from common.model.factory import cloud_model
from common.model.pretrained_encoders import trainable_parameters
from common.model.state import cloud_state, load_cloud_state, load_shared_state, shared_state
from common.settings import ConfigError, RunSettings
from common.state import State
from server_app.distill import mutual_distillation


class Cloud:
    """The server's model on the public data.

    The cloud model holds every modality. Its own LoRA lives in the ``private``
    adapter slot. When it shares the devices' backbone (``server.backbone =
    "edge"``) and the method federates, the global shared adapters (backbone LoRA
    and prompt adapter) sit, frozen, in its shared slots, and the cloud learns to
    feed that federated decoder; otherwise it trains its own prompt adapter and the
    two sides meet only in the fused space.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.task = task_info(settings)
        self.data = build_server_data(settings)
        self.model = cloud_model(settings, self.task)
        self.uses_global = settings.server.backbone == "edge" and settings.components.federated
        self.public_ids = set(int(i) for i in self.data.public_train.ids)
        m = self.model
        self._encoder_side = [*trainable_parameters(m.encoders), *m.connector.private_parameters()]
        self._params = [*self._encoder_side, *adapter_parameters(m.lm, PRIVATE)]
        if not self.uses_global:
            self._params += m.connector.shared_parameters()
        elif not settings.components.share_b:
            # FedSA: only the A matrices are global; like a device, the cloud keeps its B.
            self._params += [
                p
                for n, p in [*m.lm.named_parameters(), *m.connector.named_parameters()]
                if "lora_B" in n and ".private." not in n
            ]
        self.trainer = Trainer(m, self._params, lr=settings.server.lr)

    def load_global(self, state: State) -> None:
        """Put the global shared adapters into the cloud model (when backbones match)."""
        if self.uses_global and state:
            load_shared_state(self.model, state)

    def step(
        self, consensus_ids: np.ndarray, consensus: np.ndarray, server_round: int
    ) -> dict[str, float]:
        """Train the cloud's encoders, connector and LoRA on the public train split.

        Loss: LM + CCL (if on) + an alignment term pulling ``z^s_i`` toward the
        edge consensus ``z^c_i`` (volume InfoNCE, consensus as anchor; if on).
        """
        s, comps = self.settings, self.settings.components
        if s.server.steps == 0:
            return {}
        terms: dict[str, ExtraLoss] = {}
        if comps.ccl and s.ccl.cloud and (term := ccl_term(s.ccl)) is not None:
            terms["ccl"] = term
        if comps.seccl or comps.rep_exchange:
            term = anchor_term(consensus_ids, consensus, s.seccl.server_weight, s.ccl)
            if term is not None:
                terms["align"] = term
        rng = np.random.default_rng([s.seed, 7919, server_round])
        report = self.trainer.run(
            self.data.public_train,
            self._params,
            s.server.steps,
            s.server.batch_size,
            rng,
            terms,
            probe=self._encoder_side,
            max_share={"ccl": s.ccl.max_share},
        )
        return report.flat("server")

    def distill(self, server_round: int) -> tuple[State, dict[str, float]]:
        """FedCoLLM: mutual distillation on the public data; the updated global state.

        Raises
        ------
        ConfigError
            When the cloud does not share the devices' backbone (token-level
            distillation needs one vocabulary).
        """
        s = self.settings
        if not self.uses_global:
            raise ConfigError("method 'fedcollm' needs server.backbone = \"edge\"")
        rng = np.random.default_rng([s.seed, 4241, server_round])
        info = mutual_distillation(
            self.model,
            self.data.public_train,
            s.server.steps,
            s.server.batch_size,
            s.server.lr,
            rng,
        )
        return shared_state(self.model), info

    def representations(self) -> tuple[np.ndarray, np.ndarray]:
        """``z^s`` for every public train sample: ``(N,)`` ids, ``(N, F)``."""
        return fused_representations(self.model, self.data.public_train)

    def prototypes(self, ids: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class prototypes of the public train samples' ``z`` (e.g. :meth:`representations`).

        Parameters
        ----------
        ids : numpy.ndarray
            ``(N,)`` public train ids, the rows of ``z``.
        z : numpy.ndarray
            ``(N, F)`` their fused representations.

        Returns
        -------
        classes, prototypes : numpy.ndarray
            ``(K,)`` and ``(K, F)``, from the samples' labels.
        """
        return class_prototypes(z, self._public_labels(ids))

    def modality_prototypes(
        self, classes: np.ndarray, prototypes: np.ndarray
    ) -> dict[tuple[str, ...], np.ndarray]:
        """Prototypes of the same classes for each proper subset of the modalities.

        Parameters
        ----------
        classes, prototypes : numpy.ndarray
            ``(K,)`` and ``(K, F)``: the prototypes of complete samples
            (:meth:`prototypes`), each row the fallback of a class that no public
            train sample holding the subset has.

        Returns
        -------
        dict of tuple of str to numpy.ndarray
            Sorted modality names -> ``(K, F)``, from the cloud's ``z`` of the public
            train samples with every other modality masked out.
        """
        names = self.model.held
        out = {}
        for size in range(1, len(names)):
            for subset in combinations(names, size):
                ids, z = fused_representations(self.model, self.data.public_train, only=subset)
                table = subset_prototypes(z, self._public_labels(ids), classes, prototypes)
                out[tuple(sorted(subset))] = table
        return out

    def _public_labels(self, ids: np.ndarray) -> np.ndarray:
        """``(N,)`` int64 class labels of the public train samples ``ids``."""
        data = self.data.public_train
        label_of = dict(zip(data.ids.tolist(), data.labels.tolist()))
        return np.array([label_of[int(i)] for i in ids], np.int64)

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
        """Everything needed to restore the cloud model and its optimiser (for checkpoints)."""
        return {**cloud_state(self.model), **self.trainer.state()}

    def load_state(self, state: State) -> None:
        """Restore what :meth:`state` returned."""
        load_cloud_state(self.model, state)
        self.trainer.load_state(state)
