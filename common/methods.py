"""What each method does: the switches every part of the framework reads.

One place decides which ML-ECS components and which exchanges a ``method`` turns
on; the device, the strategy and the cloud read these switches and nothing else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ABLATIONS = ("no-ccl", "no-amt", "no-mma", "no-seccl")
BASELINES = ("fedit", "standalone", "fedprox", "fedsa", "creamfl", "fedcollm")
# Controls: a baseline ending each round with AMT's personal stage (same schedule and
# budget as ``mlecs``), so a comparison with ``mlecs`` isolates CCL, SE-CCL and MMA.
CONTROLS = ("fedit-ft", "standalone-ft")
METHODS = ("mlecs", *ABLATIONS, *BASELINES, *CONTROLS)


def amt_variant(method: str, variant: str) -> str | None:
    """The AMT variant ``method`` runs under ``amt.variant = variant``, or None without AMT.

    ``"off"`` takes AMT out of ``mlecs`` and its ablations; the controls are defined
    by AMT's two stages, so for them ``"off"`` is ``"schedule"``.
    """
    if not Components.for_method(method).amt:
        return None
    if variant == "off":
        return "schedule" if method in CONTROLS else None
    return variant


class Components(BaseModel):
    """Switches derived from ``method``.

    Attributes
    ----------
    federated : bool
        The shared adapters are uploaded and aggregated.
    ccl, amt, mma, seccl : bool
        The four ML-ECS components.
    prox : bool
        FedProx: a proximal term keeps local training near the global state.
    share_b : bool
        Whether the LoRA B matrices are shared too (FedSA-LoRA shares A only).
    rep_exchange : bool
        CreamFL: devices exchange public-data representations through the server,
        which sends back their consensus as the regulariser's anchors.
    distill : bool
        FedCoLLM: the server distils between the aggregated edge model and the
        cloud model on public data, both ways.
    share_encoders : bool
        ML-ECS: devices with the same encoder kind share low-rank adapters of it
        (when ``lora.encoder-rank > 0``).
    """

    model_config = ConfigDict(frozen=True)

    federated: bool
    ccl: bool = False
    amt: bool = False
    mma: bool = False
    seccl: bool = False
    prox: bool = False
    share_b: bool = True
    rep_exchange: bool = False
    distill: bool = False
    share_encoders: bool = False

    @classmethod
    def for_method(cls, method: str) -> Components:
        """The switches of ``method`` (one of :data:`METHODS`)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}, expected one of {list(METHODS)}")
        if method == "standalone":
            return cls(federated=False)
        if method == "standalone-ft":
            return cls(federated=False, amt=True)
        if method == "fedit":
            return cls(federated=True)
        if method == "fedit-ft":
            return cls(federated=True, amt=True)
        if method == "fedprox":
            return cls(federated=True, prox=True)
        if method == "fedsa":
            return cls(federated=True, share_b=False)
        if method == "creamfl":
            return cls(federated=False, rep_exchange=True)
        if method == "fedcollm":
            return cls(federated=True, distill=True)
        full = {"ccl": True, "amt": True, "mma": True, "seccl": True}
        if method.startswith("no-"):
            full[method[3:]] = False
        return cls(federated=True, share_encoders=True, **full)
