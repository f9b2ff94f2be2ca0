r"""MMA time at SmolLM2-135M adapter size for 10, 100 and 1000 devices.

Usage::

    python -m benchmarks.aggregation --out benchmarks/results/aggregation.json \
        [--counts 10,100,1000]

Each device contributes a shared delta the size of SmolLM2-135M's shared adapters
in the configuration of ``conf/smollm2_comm.toml`` (LoRA r=8 on q_proj and v_proj
of its 30 layers, plus the prompt adapter: 481,280 values) and representations of
58 public samples. Timed: MMA weights, the robust shared-delta aggregation (norm
clipping, disagreement damping) and the bounded representation consensus. Keys:
``"10"``, ``"100"``, ``"1000"`` (seconds, the median of three aggregations).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common.atomic import write_text
from server_app.aggregation import (
    aggregate_representations,
    aggregate_shared,
    bound_representations,
    mma_weights,
)
from server_app.contribution import Contribution

HIDDEN, KV, LAYERS, RANK, FUSED, SOFT = 576, 192, 30, 8, 256, 4


def smollm2_shapes() -> dict[str, tuple[int, int]]:
    """Shapes of the shared adapters of SmolLM2-135M (q/v LoRA r=8, prompt adapter)."""
    shapes = {}
    for layer in range(LAYERS):
        for proj, out in (("q_proj", HIDDEN), ("v_proj", KV)):
            key = f"lora/base_model.model.model.layers.{layer}.self_attn.{proj}"
            shapes[f"{key}.lora_A.weight"] = (RANK, HIDDEN)
            shapes[f"{key}.lora_B.weight"] = (out, RANK)
    shapes["prompt/lora_A"] = (RANK, FUSED)
    shapes["prompt/lora_B"] = (SOFT * HIDDEN, RANK)
    return shapes


def contributions(n: int, rng: np.random.Generator) -> list[Contribution]:
    """``n`` devices' contributions of SmolLM2 size, random values."""
    shapes = smollm2_shapes()
    public = np.arange(384)
    out = []
    for node in range(n):
        delta = {k: rng.normal(size=s).astype(np.float32) * 1e-3 for k, s in shapes.items()}
        ids = np.sort(rng.choice(public, 58, replace=False))
        reps = rng.normal(size=(58, FUSED)).astype(np.float32)
        out.append(
            Contribution(node, delta, 200, ("acc", "gyro"), {"acc": 190, "gyro": 190}, ids, reps)
        )
    return out


def time_mma(n: int, rng: np.random.Generator, repeats: int = 3) -> float:
    """Median seconds of one MMA aggregation of ``n`` contributions over ``repeats`` runs."""
    contribs = contributions(n, rng)
    ref_ids = np.arange(384)
    ref = rng.normal(size=(384, FUSED)).astype(np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        weights = mma_weights(contribs, 2, 1.0, 2.0)
        aggregate_shared(contribs, weights, 2.0, 1.0)
        reps, mult, _ = bound_representations(contribs, ref_ids, ref, 2.0, 1.0)
        aggregate_representations(contribs, weights * mult, reps)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--counts", default="10,100,1000")
    return p


def main(argv: list[str] | None = None) -> None:
    """Time MMA for each count and write the JSON."""
    args = build_parser().parse_args(argv)
    rng = np.random.default_rng(0)
    params = sum(a * b for a, b in smollm2_shapes().values())
    result: dict[str, object] = {"shared_values_per_device": params}
    for n in (int(c) for c in args.counts.split(",")):
        result[str(n)] = round(time_mma(n, rng), 3)
        print(f"{n} devices: {result[str(n)]} s", flush=True)
    write_text(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
