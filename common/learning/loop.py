"""The training loop: one optimiser per model, kept across stages and rounds.

A stage optimises a chosen set of parameters for a fixed number of steps on the
LM loss plus named extra terms. The optimiser (AdamW) lives as long as the model:
parameters that stay on a device keep their moments from round to round, and a
parameter frozen in a stage gets no gradient and is not moved (``zero_grad`` sets
gradients to None, which AdamW skips).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from common.data.samples import SampleSet
from common.learning.losses import ExtraLoss
from common.model.multimodal import MultimodalLM
from common.state import State

OPT = "opt/"


def set_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Freeze everything in ``model`` except ``params``; return them as a list."""
    keep = list(params)
    ids = {id(p) for p in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return keep


@dataclass
class StageReport:
    """What one training stage did.

    Attributes
    ----------
    steps, examples : int
        Optimiser steps taken and samples seen.
    losses : dict of str to float
        Mean of each loss term over the stage (``lm``, extra terms by name, ``total``).
    grad_share : dict of str to float
        Each term's share of the summed gradient norms at the stage's first step,
        measured on the probe parameters (the encoder side, where every term acts),
        before any cap.
    scale : dict of str to float
        The factor each capped term was scaled by for the stage (1 when under its cap).
    """

    steps: int = 0
    examples: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    grad_share: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)

    def flat(self, prefix: str) -> dict[str, float]:
        """``{prefix}_steps``, ``{prefix}_loss_<term>``, ``{prefix}_share_<term>``..."""
        out = {f"{prefix}_steps": float(self.steps), f"{prefix}_examples": float(self.examples)}
        out.update({f"{prefix}_loss_{k}": v for k, v in self.losses.items()})
        out.update({f"{prefix}_share_{k}": v for k, v in self.grad_share.items()})
        out.update({f"{prefix}_scale_{k}": v for k, v in self.scale.items()})
        return out


class Trainer:
    """The optimiser of one model over its whole life.

    Parameters
    ----------
    model : MultimodalLM
        The model.
    params : iterable of torch.nn.Parameter
        Every parameter any stage may train (the optimiser's scope).
    lr, weight_decay : float
        AdamW settings.
    """

    def __init__(
        self,
        model: MultimodalLM,
        params: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
    ) -> None:
        self.model = model
        self.opt = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)
        self._names = {id(p): n for n, p in model.named_parameters()}

    # ------------------------------------------------------------------ state
    def state(self) -> State:
        """AdamW moments and step counts by parameter name (``opt/<name>/<field>``)."""
        out: State = {}
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p)
                if not st:
                    continue
                name = OPT + self._names[id(p)]
                out[f"{name}/exp_avg"] = st["exp_avg"].detach().cpu().numpy().copy()
                out[f"{name}/exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy().copy()
                out[f"{name}/step"] = np.asarray(float(st["step"]), np.float32)
        return out

    def load_state(self, state: State) -> None:
        """Restore what :meth:`state` returned (entries of unknown parameters are ignored).

        Whatever the optimiser held before is dropped first.
        """
        self.opt.state.clear()
        by_name = {self._names[id(p)]: p for g in self.opt.param_groups for p in g["params"]}
        for key, value in state.items():
            if not key.startswith(OPT) or not key.endswith("/step"):
                continue
            name = key[len(OPT) : -len("/step")]
            p = by_name.get(name)
            if p is None:
                continue
            prefix = f"{OPT}{name}/"

            def moment(field: str, p: nn.Parameter = p, prefix: str = prefix) -> torch.Tensor:
                value = torch.as_tensor(np.asarray(state[prefix + field]))
                return value.reshape(p.shape).to(p.device, p.dtype)

            self.opt.state[p] = {
                "step": torch.tensor(float(np.asarray(value).sum()), dtype=torch.float32),
                "exp_avg": moment("exp_avg"),
                "exp_avg_sq": moment("exp_avg_sq"),
            }

    def forget(self, params: list[nn.Parameter]) -> None:
        """Drop the optimiser's moments of ``params``: they start again at their next step."""
        for p in params:
            self.opt.state.pop(p, None)

    # ----------------------------------------------------------------- stages
    def run(
        self,
        data: SampleSet,
        params: list[nn.Parameter],
        steps: int,
        batch_size: int,
        rng: np.random.Generator,
        terms: dict[str, ExtraLoss] | None = None,
        probe: list[nn.Parameter] | None = None,
        max_share: dict[str, float] | None = None,
    ) -> StageReport:
        """Train ``params`` for ``steps`` mini-batches of ``data``.

        Parameters
        ----------
        terms : dict of str to ExtraLoss, optional
            Extra loss terms by name, added to the LM loss.
        probe : list of torch.nn.Parameter, optional
            Where the gradient shares are measured (default: ``params``).
        max_share : dict of str to float, optional
            Caps on terms' gradient shares: a term whose share at the first step
            is above its cap is scaled down for the whole stage to sit at the cap.

        Returns
        -------
        StageReport
        """
        model, terms = self.model, terms or {}
        if len(data) == 0 or not params or steps <= 0:
            return StageReport()
        set_trainable(model, params)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        shares: dict[str, float] = {}
        scale: dict[str, float] = {}
        order = np.array([], dtype=np.int64)
        seen = 0
        for step in range(steps):
            if len(order) == 0:
                order = rng.permutation(len(data))
            index, order = order[:batch_size], order[batch_size:]
            batch = model.make_batch(data, index)
            e, z = model.represent(batch)
            parts = {"lm": model.lm_loss(batch, z)}
            for name, term in terms.items():
                value = term(batch, e, z)
                if value is not None:
                    parts[name] = value
            if step == 0 and len(parts) > 1:
                shares = _grad_shares(parts, [p for p in (probe or params) if p.requires_grad])
                scale = capped_scales(shares, max_share or {})
            for name, k in scale.items():
                if name in parts:
                    parts[name] = k * parts[name]
            loss = sum(parts.values())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            for name, value in [*parts.items(), ("total", loss)]:
                sums[name] = sums.get(name, 0.0) + value.detach()
                counts[name] = counts.get(name, 0) + 1
            seen += len(index)
        set_trainable(model, [])
        model.eval()
        # One host synchronisation per stage, not per step.
        losses = {k: float(v) / counts[k] for k, v in sums.items()}
        return StageReport(steps, seen, losses, shares, scale)


def capped_scales(shares: dict[str, float], max_share: dict[str, float]) -> dict[str, float]:
    """The factor that brings each capped term's gradient share down to its cap.

    Scaling term ``c`` (share ``s``) by ``k`` gives it the share
    ``k s / (k s + 1 - s)``; ``k = m (1 - s) / ((1 - m) s)`` sets that to the cap ``m``.
    Terms at or under their cap keep 1; a cap of 1 is no cap (no entry).
    """
    out = {}
    for name, cap in max_share.items():
        if name in shares and cap < 1:
            s = shares[name]
            out[name] = cap * (1 - s) / ((1 - cap) * s) if s > cap else 1.0
    return out


def _grad_shares(parts: dict[str, torch.Tensor], probe: list[nn.Parameter]) -> dict[str, float]:
    """Each term's gradient norm on ``probe`` as a share of their sum."""
    if not probe:
        return {}
    norms = {}
    for name, value in parts.items():
        if not value.requires_grad:  # e.g. CCL with the encoder side frozen
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(value, probe, retain_graph=True, allow_unused=True)
        squares = [(g.float() ** 2).sum() for g in grads if g is not None]
        norms[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    total = sum(norms.values())
    return {k: v / total for k, v in norms.items()} if total > 0 else {}
