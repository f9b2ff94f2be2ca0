"""Typed run settings: the one place that reads Flower's flat run config.

Every default here equals the value under ``[tool.flwr.app.config]`` in
``pyproject.toml`` (a test guards the drift). Keys are kebab-case with dotted
sections, e.g. ``lora.rank``; unknown keys and impossible values are rejected
before any work starts, with a message naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from common.lora_ranks import SVD_AGGREGATIONS
from common.methods import METHODS, Components, amt_variant
from common.run_config import ConfigError, describe
from common.sections import (
    AmtSettings,
    CclSettings,
    DataSettings,
    DpSettings,
    EvalSettings,
    FedproxSettings,
    LogSettings,
    LoraSettings,
    MmaSettings,
    ModalitySettings,
    ModelSettings,
    SecclSettings,
    Section,
    ServerSettings,
    StrategySettings,
    TrainSettings,
    TransportSettings,
)

DATASETS = ("hapt", "easyvqa", "jsonl")


class RunSettings(Section):
    """Everything a run is configured by."""

    method: Literal[METHODS] = "mlecs"  # type: ignore[valid-type]
    dataset: Literal[DATASETS] = "hapt"  # type: ignore[valid-type]
    num_server_rounds: int = Field(20, ge=1)
    seed: int = 0
    output_dir: str = "outputs"
    run_name: str = ""
    resume: bool = False  # continue <output-dir>/<run-name>/ from its checkpoint
    cache_dir: str = ""  # empty = $MLECS_CACHE_DIR or ~/.cache/mlecs-flower
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0)  # torch intra-op threads per process; 0 = torch's default
    # Device profiles by partition id in a simulation, e.g. "sbc-2gb:2,jetson-orin:1"
    # (conf/profiles/); empty: every device runs the run's keys. A SuperNode takes
    # one with its node config "profile" instead.
    profile_mix: str = ""
    data: DataSettings = DataSettings()
    modality: ModalitySettings = ModalitySettings()
    model: ModelSettings = ModelSettings()
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    amt: AmtSettings = AmtSettings()
    strategy: StrategySettings = StrategySettings()
    eval: EvalSettings = EvalSettings()
    log: LogSettings = LogSettings()
    server: ServerSettings = ServerSettings()
    ccl: CclSettings = CclSettings()
    seccl: SecclSettings = SecclSettings()
    mma: MmaSettings = MmaSettings()
    transport: TransportSettings = TransportSettings()
    dp: DpSettings = DpSettings()
    fedprox: FedproxSettings = FedproxSettings()

    @model_validator(mode="after")
    def _known_profiles(self) -> RunSettings:
        from common.profiles import parse_mix

        # A bad entry, name or LoRA rank fails before any work starts.
        parse_mix(self.profile_mix, run_rank=self.lora.rank if self.lora.profile_ranks else None)
        return self

    @model_validator(mode="after")
    def _resume_needs_name(self) -> RunSettings:
        if self.resume and not self.run_name:
            raise ValueError("resume=true needs a run-name (the run directory to resume)")
        return self

    @model_validator(mode="after")
    def _dp_without_encoder_groups(self) -> RunSettings:
        # Central DP bounds one delta per device over keys every device sends;
        # encoder adapters reach only their group, which that accounting does not cover.
        if (
            self.dp.noise_multiplier > 0
            and self.components.share_encoders
            and self.lora.encoder_rank
            and self.lora.encoder_share
        ):
            raise ValueError(
                "dp.noise-multiplier > 0 needs lora.encoder-rank = 0 or lora.encoder-share = "
                "false for this method: central DP does not cover encoder adapters shared by group"
            )
        return self

    @model_validator(mode="after")
    def _svd_needs_both_factors(self) -> RunSettings:
        # FlexLoRA averages each device's full product B A: it needs every device's
        # own factors, which neither a DP release (a noisy mean) nor FedSA (A only) holds.
        how = self.lora.rank_aggregation
        if how in SVD_AGGREGATIONS and self.dp.noise_multiplier > 0:
            raise ValueError(
                f'lora.rank-aggregation = "{how}" cannot run with dp.noise-multiplier > 0'
            )
        if how in SVD_AGGREGATIONS and not self.components.share_b:
            raise ValueError(
                f'lora.rank-aggregation = "{how}" needs both LoRA factors; method {self.method!r} '
                "shares only A"
            )
        return self

    @model_validator(mode="after")
    def _held_components(self) -> RunSettings:
        lora = self.lora
        if lora.trained_rank > lora.rank:
            raise ValueError(
                f"lora.trained-rank = {lora.trained_rank} is above lora.rank = {lora.rank}: "
                "a device trains at most the components it holds"
            )
        if self.holds_rest and self.train.weight_decay > 0:
            # AdamW's decoupled decay would shrink the components held frozen.
            raise ValueError(
                "lora.hold-rest / lora.trained-rank need train.weight-decay = 0: the decay "
                "would move the components a device holds frozen"
            )
        if self.holds_rest and lora.rank_aggregation == "svd":
            # FlexLoRA's mean of products would count the held components as absent.
            raise ValueError(
                "lora.hold-rest / lora.trained-rank need lora.rank-aggregation = "
                '"svd-update", "zero-pad", "holders" or "auto": "svd" averages products a '
                "held component is missing from"
            )
        return self

    @property
    def rank_aggregation(self) -> str:
        """``lora.rank-aggregation`` in force: ``"auto"`` is an SVD kind where it can run.

        The SVD kind is ``"svd"``, or ``"svd-update"`` when devices hold the rest
        (:attr:`holds_rest`: a device's product includes the components it holds frozen).
        """
        how = self.lora.rank_aggregation
        if how != "auto":
            return how
        if self.dp.noise_multiplier == 0 and self.components.share_b:
            return "svd-update" if self.holds_rest else "svd"
        return "zero-pad"

    @property
    def holds_rest(self) -> bool:
        """Devices hold every component of the shared adapters and may train only the first.

        Under ``lora.hold-rest`` (a profile's lower rank) or ``lora.trained-rank``:
        the server sends every device the run's rank, whatever rank it uploads.
        """
        return self.lora.hold_rest or self.lora.trained_rank > 0

    @property
    def components(self) -> Components:
        """Which ML-ECS components and exchanges the method switches on.

        ``amt.variant = "off"`` takes AMT out of ``mlecs`` and its ablations; the
        controls (``fedit-ft``, ``standalone-ft``) are defined by AMT's two stages
        and keep them.
        """
        comps = Components.for_method(self.method)
        if comps.amt and amt_variant(self.method, self.amt.variant) is None:
            comps = comps.model_copy(update={"amt": False})
        return comps

    @property
    def exchange_representations(self) -> bool:
        """Whether devices send fused representations of their public share."""
        return self.components.seccl or self.components.rep_exchange

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunSettings:
        """Parse Flower's flat, dotted run config.

        Raises
        ------
        ConfigError
            On an unknown key or an impossible value; the message names it.
        """
        nested: dict[str, Any] = {}
        for key, value in dict(run_config).items():
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"config key '{key}' clashes with a scalar")
            node[leaf] = value
        try:
            return cls.model_validate(nested)
        except ValidationError as err:
            raise ConfigError(describe(err)) from None
