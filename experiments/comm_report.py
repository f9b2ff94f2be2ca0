"""Communication accounting for an edge model, without training.

Builds the payloads one device exchanges per round, with the same records and
ledger the strategy uses (global state down, shared delta up, SE-CCL
representations both ways, metrics and the device's evaluation in the train reply;
a separate evaluation exchange too when ``strategy.evaluate-every`` > 0, counted as
if it ran every round), and prints the bytes and their ratio to the edge model's
parameter bytes.

Usage::

    python -m experiments.comm_report --backbone smollm2-135m --config conf/smollm2_comm.toml
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from common.exchange import DeviceUpdate
from common.run_config import ConfigError, parse_overrides, read_toml_config
from common.settings import RunSettings
from proto.messages import evaluate_reply, instruction, pack_global, train_reply
from server_app.ledger import Ledger

# Published SmolLM2-135M architecture (HuggingFaceTB/SmolLM2-135M config.json), so the
# report can be made with no weights and no download.
SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
)


def build_backbone(name: str):
    """An untrained causal LM: ``smollm2-135m`` or the config.json of a local directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if name == "smollm2-135m":
        return LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name, local_files_only=True))


def report(settings: RunSettings, backbone_name: str, public_share: int) -> dict:
    """Per-device bytes per round by kind, and the ratio to the edge model.

    Parameters
    ----------
    public_share : int
        Public samples per device (the number of representations each way).
    """
    from flwr.app import ConfigRecord

    from common.model.adapters import add_adapters
    from common.model.connector import Connector
    from common.model.state import shared_parts_state

    comps = settings.components
    if comps.share_encoders and settings.lora.encoder_rank:
        # Their size depends on the encoder families; a run's ledger counts them.
        raise ConfigError(
            "comm_report does not model encoder adapters (lora.encoder-rank > 0); "
            "a run's rounds.jsonl counts them (comm.bytes_encoder_up/down)"
        )
    lm = build_backbone(backbone_name)
    edge_params = sum(p.numel() for p in lm.parameters())
    model = add_adapters(lm, settings.lora)
    m = settings.model
    modalities = ("m0", "m1")  # a device holding two modalities (HAPT's acc and gyro)
    conn = Connector(
        modalities,
        m.encoder_dim,
        m.embed_dim,
        m.fused_dim,
        "mean",
        m.soft_tokens,
        lm.config.hidden_size,
        settings.lora.rank,
        settings.lora.alpha,
    )
    state = shared_parts_state(model, conn.to_prompt) if comps.federated else {}
    # Edge model = backbone + encoders + connector; the backbone dominates, and the
    # ratio uses the backbone alone so it does not depend on the encoder choice.
    dtype = settings.transport.dtype
    n = public_share if comps.seccl else 0
    ids, z = np.arange(n, dtype=np.int64), np.zeros((n, m.fused_dim), np.float32)
    packed = pack_global(state, dtype)
    scores = {"rouge_lsum": 0.0, "bertscore_f1": 0.0, "f1": 0.0, "num_examples": 1.0}
    config = ConfigRecord({"server-round": 1})
    update = DeviceUpdate(
        delta=state,
        rep_ids=ids,
        reps=z,
        num_examples=1,
        modalities=modalities,
        modality_counts={name: 1 for name in modalities},
        metrics={"shared_loss_lm": 0.0, "shared_loss_total": 0.0, "private_loss_lm": 0.0},
        partition_id=0,
        evaluation=scores,
    )
    ledger = Ledger()
    ledger.add_down(0, instruction(packed, config, (ids, z) if n else None, dtype))
    ledger.add_up(0, train_reply(update, dtype))
    if settings.strategy.evaluate_every:
        ledger.add_down(0, instruction(packed, config))
        ledger.add_up(0, evaluate_reply(scores, 1))
    out = ledger.summary(edge_params * 4)
    out.update(
        edge_model_params=edge_params,
        backbone=backbone_name,
        method=settings.method,
        transport_dtype=dtype,
        lora_targets=list(settings.lora.targets),
        lora_rank=settings.lora.rank,
        public_share=n,
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--backbone",
        default="smollm2-135m",
        help="smollm2-135m (built from its published config) or a local HF directory",
    )
    p.add_argument(
        "--public-share",
        type=int,
        default=58,
        help="public samples per device (default: the HAPT default share)",
    )
    p.add_argument("--config", help="a TOML override file, e.g. conf/smollm2_comm.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> None:
    """Print the communication report as JSON and one summary line."""
    args = build_parser().parse_args(argv)
    config = read_toml_config(args.config) if args.config else {}
    config.update(parse_overrides(args.set))
    settings = RunSettings.from_run_config(config)
    out = report(settings, args.backbone, args.public_share)
    print(json.dumps(out, indent=2))
    print(
        f"{out['backbone']}: {out['edge_model_params'] / 1e6:.1f}M params; per device per round "
        f"up {out['bytes_up_per_client_round'] / 1e6:.3f} MB, down "
        f"{out['bytes_down_per_client_round'] / 1e6:.3f} MB = {100 * out['ratio']:.3f}% of "
        f"the edge model's {out['edge_model_param_bytes'] / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
