"""Central differential privacy of the shared update, with Flower's DP tools.

Flower's ``DifferentialPrivacyServerSideFixedClipping`` wrapper and its client
mods assume replies that carry full model weights (they clip ``reply - current``);
this app's replies carry deltas of the shared adapters next to fused
representations, so the wrapper cannot be put around :class:`MlEcsStrategy`.
The same mechanism is applied here instead, with Flower's own primitives
(``flwr.supercore.differential_privacy``): every device's shared delta is
clipped to ``dp.clipping-norm``, the clipped deltas are averaged with equal
weights, and Gaussian noise of standard deviation
``dp.noise-multiplier x dp.clipping-norm / n`` is added to the average (fixed
clipping, Andrew et al. / McMahan et al. 2018). The cumulative epsilon at
``dp.delta`` is tracked with Flower's RDP accountant
(``flwr.supercore.privacy_accounting``) when its backend, Google's
``dp-accounting`` package, is installed (``pip install -e ".[privacy]"``).

What is protected: the shared adapters' updates (device-level, add-or-remove-one,
every sampled device counted as participating: no amplification by sampling).
Not covered: the fused representations of public samples sent for SE-CCL, the
evaluation metrics, and the manifests (see the README's privacy section).
"""

from __future__ import annotations

import numpy as np
from flwr.supercore.differential_privacy import (
    add_gaussian_noise_inplace,
    clip_inputs_inplace,
    compute_stdv,
    get_norm,
)

from common.sections import DpSettings
from common.state import State


class CentralDp:
    """Clip, average and noise the shared deltas of one round; account the privacy spent.

    Parameters
    ----------
    cfg : DpSettings
        ``noise_multiplier`` (> 0), ``clipping_norm`` and ``delta``.
    population : int
        Number of devices in the federation (for the accountant).
    """

    def __init__(self, cfg: DpSettings, population: int, releases: list[int] | None = None) -> None:
        self.cfg = cfg
        self.population = max([1, population, *(releases or [])])
        self._accountant = None
        self.releases: list[int] = []
        try:
            from flwr.supercore.privacy_accounting import (
                NeighboringRelation,
                PrivacyConfig,
                SamplingMethod,
            )
            from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

            config = PrivacyConfig(
                target_delta=cfg.delta,
                population_size=self.population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
            self._accountant = RdpAccountant(config)
        except ImportError:  # dp-accounting not installed: the mechanism still applies
            self._accountant = None
        for n in releases or []:  # a resumed run: replay the releases made so far
            self._account(n)

    def aggregate(
        self, deltas: list[State], rng: np.random.Generator | None = None
    ) -> tuple[State, dict[str, float]]:
        """Equal-weight mean of the clipped deltas plus Gaussian noise.

        Parameters
        ----------
        deltas : list of State
            One shared delta per accepted device (same keys).
        rng : numpy.random.Generator, optional
            Seeds numpy's global generator, which Flower's noise helper uses.

        Returns
        -------
        delta : State
            The private aggregate.
        info : dict
            ``dp_clipped`` (devices whose delta was clipped), ``dp_noise_std``,
            ``dp_epsilon`` (cumulative, when the accountant is available).
        """
        keys = sorted(deltas[0])
        n = len(deltas)
        clipped = 0
        total = [np.zeros_like(np.asarray(deltas[0][k], np.float64)) for k in keys]
        for d in deltas:
            arrays = [np.asarray(d[k], np.float64).copy() for k in keys]
            if get_norm(arrays) > self.cfg.clipping_norm:  # (Flower's helper fails at norm 0)
                clipped += 1
                clip_inputs_inplace(arrays, self.cfg.clipping_norm)
            for acc, a in zip(total, arrays):
                acc += a
        mean = [acc / n for acc in total]
        std = compute_stdv(self.cfg.noise_multiplier, self.cfg.clipping_norm, n)
        if rng is not None:
            np.random.seed(int(rng.integers(2**32)))
        add_gaussian_noise_inplace(mean, std)
        info = {"dp_clipped": float(clipped), "dp_noise_std": std}
        info.update(self._account(n))
        return {k: m.astype(np.float32) for k, m in zip(keys, mean)}, info

    def _account(self, n: int) -> dict[str, float]:
        self.releases.append(n)
        if self._accountant is None:
            return {}
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        event = GaussianPrivacyEvent(
            noise_multiplier=self.cfg.noise_multiplier,
            sample_size=min(n, self.population),
            population_size=self.population,
        )
        self._accountant.compose(event)
        return {"dp_epsilon": float(self._accountant.get_epsilon(self.cfg.delta))}
