"""The one place that pins what makes two runs of the same seed give the same numbers.

Every random draw of the project is seeded from the run seed and a purpose (data
splits, model initialisation, batch order; see ``common.data.partition.rng``,
``common.model.factory`` and ``client_app.device``), and the server aggregates in
partition order, whatever order replies arrive in. What is left is the process:
the number of intra-op threads (floating-point sums are split by thread), pinned
here by the ServerApp, the ClientApp and the experiment runner. (On CPU, torch's
kernels are deterministic for a fixed thread count; on CUDA some are not.)
"""

from __future__ import annotations

import torch

from common.settings import RunSettings


def pin(settings: RunSettings) -> None:
    """Pin torch's intra-op threads to ``threads`` (0 = leave torch's default)."""
    if settings.threads and torch.get_num_threads() != settings.threads:
        torch.set_num_threads(settings.threads)
