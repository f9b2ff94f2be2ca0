"""The sections of the run settings: one typed, strict model per dotted key prefix.

``common.settings.RunSettings`` assembles them; each field's default equals the
value under ``[tool.flwr.app.config]`` in ``pyproject.toml`` (a test guards the
drift). Keys are kebab-case (``lora.private-rank``); a section rejects unknown
keys and impossible values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SENSOR_ENCODERS = ("mlp", "cnn1d", "gru")
IMAGE_ENCODERS = ("cnn", "mlp", "effnet-lite0")
TEXT_ENCODERS = ("bow", "gru", "minilm", "minilm-lora")
# Modality kind -> the encoders a device (or the cloud) may use for it.
ENCODER_FAMILIES = {"sensor": SENSOR_ENCODERS, "image": IMAGE_ENCODERS, "text": TEXT_ENCODERS}
FUSIONS = ("mean", "attention", "gated")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    """Frozen, strict section: kebab-case aliases, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=_kebab, populate_by_name=True
    )


def _csv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


class HaptSettings(Section):
    """UCI HAPT windowing and the natural per-user split."""

    window: int = Field(128, ge=8, le=1024)  # 2.56 s at 50 Hz, as in UCI HAR
    stride: int = Field(64, ge=1)
    public_users: int = Field(6, ge=1, le=28)
    include_transitions: bool = False


class EasyVqaSettings(Section):
    """easy-VQA sampling and the Dirichlet client split."""

    dirichlet_alpha: float = Field(0.5, gt=0)
    pool_size: int = Field(6000, ge=100)  # questions drawn from the train set
    public_fraction: float = Field(0.2, gt=0, lt=1)


class JsonlSettings(Section):
    """A user's own data: a JSONL file read through ``datasets``."""

    path: str = ""
    dirichlet_alpha: float = Field(0.5, gt=0)
    public_fraction: float = Field(0.2, gt=0, lt=1)
    prompt: str = "Describe the input."


class DataSettings(Section):
    """Sizes and splits shared by every dataset."""

    test_fraction: float = Field(0.25, gt=0, lt=1)
    label_skew: float = Field(0.0, ge=0)  # Dirichlet alpha over labels per device; 0 = off
    max_train_per_client: int = Field(192, ge=4)
    max_test_per_client: int = Field(48, ge=2)
    public_share_fraction: float = Field(0.15, gt=0, le=1)
    use_public_share: bool = True  # devices train on their public share (every method alike)
    max_public_train: int = Field(384, ge=4)
    max_public_test: int = Field(96, ge=2)
    hapt: HaptSettings = HaptSettings()
    easyvqa: EasyVqaSettings = EasyVqaSettings()
    jsonl: JsonlSettings = JsonlSettings()


class ModalitySettings(Section):
    """Which modalities each client holds, and per-sample dropout."""

    scenario: Literal["full", "mixed"] = "mixed"
    unimodal_fraction: float = Field(0.5, ge=0, le=1)
    missing_rate: float = Field(0.1, ge=0, lt=1)


class TinyBackboneSettings(Section):
    """A Llama-style causal LM built from a config (no download)."""

    hidden: int = Field(96, ge=16)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    vocab: int = Field(384, ge=64)
    pretrain_steps: int = Field(50, ge=0)


class ModelSettings(Section):
    """Encoders, connector and backbone of the edge model."""

    sensor_encoders: tuple[str, ...] = ("mlp", "cnn1d", "gru")
    image_encoders: tuple[str, ...] = ("cnn",)
    text_encoders: tuple[str, ...] = ("bow", "gru")
    fusions: tuple[str, ...] = ("mean", "attention", "gated")
    encoder_dim: int = Field(64, ge=4)
    embed_dim: int = Field(64, ge=4)
    fused_dim: int = Field(256, ge=4)
    soft_tokens: int = Field(4, ge=1, le=64)
    backbone: str = "tiny"  # "tiny", "smollm2-135m", "gemma3-270m" or a local HF directory
    tiny: TinyBackboneSettings = TinyBackboneSettings()

    _csv_fields = field_validator(
        "sensor_encoders", "image_encoders", "text_encoders", "fusions", mode="before"
    )(_csv)

    @field_validator("sensor_encoders", "image_encoders", "text_encoders", "fusions")
    @classmethod
    def _known(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        kind = info.field_name.removesuffix("_encoders")
        allowed = FUSIONS if info.field_name == "fusions" else ENCODER_FAMILIES[kind]
        if not value:
            raise ValueError("needs at least one entry")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"unknown {bad}, expected some of {list(allowed)}")
        return value


class LoraSettings(Section):
    """Shared (federated) and private (on-device) LoRA adapters."""

    # The federation's rank of the shared adapters (backbone LoRA, prompt map); a
    # device profile may lower its own, unless lora.profile-ranks is false.
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    profile_ranks: bool = True
    # How devices of different ranks meet (common.lora_ranks): FlexLoRA's SVD of the
    # mean of the devices' full products (not with central DP or FedSA; chosen on
    # tuning seeds), zero-padded FedAvg (HetLoRA's padding), or each rank component as
    # the mean of the devices holding it; "auto": svd where it can run, else zero-pad.
    # "svd-update": the SVD of the global product plus the mean change of the devices'
    # products (a small device leaves the components it does not hold as they were).
    # All are FedAvg of the factors when every device holds the run's rank.
    rank_aggregation: Literal["auto", "svd", "svd-update", "zero-pad", "holders"] = "auto"
    # A device whose profile lowers its rank still holds the federation's other
    # components, frozen: it computes the federation's adapter and trains and uploads
    # its first ones (its profile's rank becomes its trained_rank; it downloads all).
    hold_rest: bool = False
    # How many of the shared adapters' first components a device trains and uploads;
    # the others it holds frozen. 0: all of them.
    trained_rank: int = Field(0, ge=0)
    private_rank: int = Field(8, ge=1)
    private_alpha: float = Field(16.0, gt=0)
    # Encoders' low-rank adapters, shared by devices with the same encoder kind
    # (ML-ECS methods only); 0 = encoders share nothing.
    encoder_rank: int = Field(0, ge=0)
    encoder_alpha: float = Field(8.0, gt=0)
    # false: each device keeps its encoder adapters (a control: adapters, no sharing)
    encoder_share: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "down_proj")

    _csv_targets = field_validator("targets", mode="before")(_csv)


class TrainSettings(Section):
    """Local optimisation and generation on a device."""

    batch_size: int = Field(32, ge=1)
    steps: int = Field(16, ge=1)  # per device per round, the same for every method
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(6, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    autocast: bool = True  # bf16 autocast on CUDA, training and generation


class AmtSettings(Section):
    """Adaptive multimodal tuning: how a device splits its step budget, and what it tunes.

    ``off`` (the default since 2026-12-07, by a declared tuning rule: removing the
    private stage did not lower the devices' score): ``mlecs`` and its ablations
    spend every step in one stage whose result is uploaded; the controls
    ``fedit-ft`` and ``standalone-ft`` keep their two stages (``schedule``).
    ``schedule``: the budget is split; the private stage goes on tuning the
    device's copy of the shared adapters (a personal copy, replaced by the next
    global state). ``gate``: the paper's design, a private LoRA beside the shared
    one, both active and mixed by a learned gate; the private stage tunes the
    private LoRA and the gate, which stay on the device from round to round.
    """

    shared_fraction: float = Field(0.5, gt=0, lt=1)  # of train.steps, in the shared stage
    variant: Literal["off", "schedule", "gate"] = "off"

    def split(self, steps: int) -> tuple[int, int]:
        """``steps`` split into (shared-stage steps, private-stage steps), each at least 1."""
        shared = min(steps - 1, max(1, round(steps * self.shared_fraction)))
        return shared, steps - shared


class StrategySettings(Section):
    """Sampling and robustness of the server strategy."""

    fraction_train: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, ge=0, le=1)
    # Devices evaluate their personal model in every train reply; a separate
    # evaluation of the aggregated global state runs every N rounds (0 = never).
    evaluate_every: int = Field(0, ge=0)
    min_nodes: int = Field(2, ge=1)
    round_timeout: float = Field(3600.0, gt=0)


class EvalSettings(Section):
    """Metrics computed every round."""

    bertscore: bool = True
    bertscore_model: str = ""  # empty = the packaged all-MiniLM-L6-v2
    tail_rounds: int = Field(5, ge=1)  # summary "tail": mean of the last rounds
    # How labelled tasks are predicted: greedy generation, rank classification
    # (the likeliest class name), or generation scored with rank's macro-F1 beside.
    decode: Literal["generate", "rank", "both"] = "generate"


class LogSettings(Section):
    """Where progress goes besides the round line and rounds.jsonl."""

    tensorboard: bool = False  # event files in <run dir>/tensorboard


class ServerSettings(Section):
    """The cloud model trained by the ServerApp on the public data."""

    backbone: str = "edge"  # "edge" (same as the devices), or as model.backbone
    # The cloud's encoder per modality kind, e.g. "sensor:cnn1d"; a kind not named
    # takes the first of the devices' family (model.<kind>-encoders).
    encoders: tuple[str, ...] = ()
    steps: int = Field(12, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)

    _csv_encoders = field_validator("encoders", mode="before")(_csv)

    @field_validator("encoders")
    @classmethod
    def _pairs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = ENCODER_FAMILIES
        kinds: set[str] = set()
        for item in value:
            kind, sep, name = item.partition(":")
            if not sep or kind not in allowed:
                expected = list(allowed)
                raise ValueError(f"'{item}': expected <kind>:<encoder>, kind one of {expected}")
            if name not in allowed[kind]:
                names = list(allowed[kind])
                raise ValueError(f"no {kind} encoder '{name}', expected one of {names}")
            if kind in kinds:
                raise ValueError(f"{kind} named twice")
            kinds.add(kind)
        return value

    def encoder_choices(self) -> dict[str, tuple[str]]:
        """Modality kind -> the cloud's encoder, for the kinds ``encoders`` names."""
        return {k: (n,) for k, _, n in (e.partition(":") for e in self.encoders)}


class CclSettings(Section):
    """Cross-modal contrastive learning (GRAM volume InfoNCE)."""

    temperature: float = Field(0.07, gt=0)  # GRAM's default
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # GRAM's default
    # 0 (the default since 2026-12-05, by the declared tuning rule): CCL is off.
    weight: float = Field(0.0, ge=0)
    # Where CCL acts besides the devices' shared stage: the cloud's training on the
    # public data, and the devices' private (AMT) stage.
    cloud: bool = True
    private_stage: bool = True
    # Cap on CCL's share of the encoder-side gradient norm, measured at each
    # stage's first step (1 = no cap): as the LM loss falls on a device's few
    # samples, CCL's share otherwise grows past the LM's.
    max_share: float = Field(1.0, gt=0, le=1)


class SecclSettings(Section):
    """SLM-enhanced CCL: the cloud-edge terms through the fused space."""

    weight: float = Field(0.1, ge=0)  # device term, server z^s as anchor
    server_weight: float = Field(0.1, ge=0)  # cloud term, edge consensus as anchor
    # Without data.use-public-share the public share is not in the training batches;
    # true: its inputs (never its labels) are still pulled to their anchors.
    unlabelled_public: bool = True
    # Class prototypes of the cloud's fused space (its labelled public data): each
    # labelled device sample is pulled toward its class's prototype; 0 = off.
    # 0.5 since 2026-12-07 (declared tuning on seeds 100-102; 1 before, 2 lower)
    prototype_weight: float = Field(0.5, ge=0)
    prototype_temperature: float = Field(0.1, gt=0)
    # true: also pull each multimodal sample's single-modality views (its z with the
    # other modalities masked out) toward its class's prototype, same weight.
    prototype_views: bool = False
    # true: the cloud also sends the prototypes of each proper subset of the
    # modalities (its z with the others masked out); a sample that holds only such a
    # subset is pulled toward that subset's prototypes instead of the full ones.
    modality_prototypes: bool = False


class MmaSettings(Section):
    """Modality-aware aggregation and its robust damping.

    Off by default since 2026-12-07 (all three at 0: FedAvg weights by example counts,
    what ``no-mma`` computes): on tuning seeds removing it did not lower the devices'
    score (declared rule). :data:`PAPER_MMA` turns the paper's MMA back on.
    """

    beta: float = Field(0.0, ge=0)  # w_i ~ n_i * (|M_i| / |M|) ** beta
    clip_factor: float = Field(0.0, ge=0)  # clip update norms at factor x median; 0 = off
    disagreement: float = Field(0.0, ge=0)  # down-weight updates against consensus; 0 = off
    max_update_bytes: int = Field(64 * 2**20, ge=1)


# The paper's MMA as run-config overrides: modality weighting and the damping that
# bounds a scaled or sign-flipped update (where devices are not all trusted).
PAPER_MMA = {"mma.beta": 1.0, "mma.clip-factor": 2.0, "mma.disagreement": 1.0}


class FedproxSettings(Section):
    """FedProx: the proximal term's weight."""

    mu: float = Field(0.01, ge=0)  # loss + mu / 2 * ||w - w_global||^2 over the shared adapters


class DpSettings(Section):
    """Central differential privacy of the shared update (fixed clipping, Gaussian noise)."""

    noise_multiplier: float = Field(0.0, ge=0)  # 0 = off
    clipping_norm: float = Field(1.0, gt=0)  # bound of each device's shared delta (L2)
    delta: float = Field(1e-5, gt=0, lt=1)  # the delta epsilon is reported at


class TransportSettings(Section):
    """How tensors travel: fp16 halves the bytes (the server aggregates in fp64)."""

    dtype: Literal["float32", "float16", "int8"] = "float32"
