"""Copies of a module that share its frozen weights instead of duplicating them."""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    """Set ``requires_grad=False`` on every parameter of ``module``; return it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def frozen_copy(module: M) -> M:
    """A structural copy of ``module`` that shares its frozen tensors.

    Every parameter with ``requires_grad=False`` and every buffer of ``module`` is
    the same tensor object in the copy (``copy.deepcopy`` with a memo mapping them
    to themselves); everything else (trainable parameters, the module objects and
    their train/eval flags) is copied. Adapters injected into the copy afterwards
    (e.g. by peft) therefore stay independent, while the frozen weights exist once
    per process however many models use them.

    Parameters
    ----------
    module : torch.nn.Module
        The original; it is not modified.

    Returns
    -------
    torch.nn.Module
        The copy.
    """
    memo: dict[int, object] = {id(p): p for p in module.parameters() if not p.requires_grad}
    memo.update({id(b): b for b in module.buffers()})
    return copy.deepcopy(module, memo)
