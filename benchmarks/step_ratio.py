"""One LoRA step of SmolLM2-135M inside the framework against a plain peft loop.

Usage::

    python -m benchmarks.step_ratio --out benchmarks/results/step_ratio.json \
        [--steps 10] [--repeats 3] [--method fedit] [--set key=value ...]

The framework step is :meth:`common.learning.loop.Trainer.run` on a device built
by the framework (encoders, fusion, soft prompt, SmolLM2-135M-shaped backbone with
LoRA r=8 on ``q_proj,v_proj``; ``benchmarks.smollm2``), batch size as configured.
The plain step is the loop everyone writes: ``get_peft_model`` on the same
architecture with the same LoRA, AdamW, forward/backward/step on token ids of
the same shape as the sequence the framework's backbone sees (captured from its
forward). Both are timed after warm-up steps, alternately, and the medians are
compared. Keys: ``framework_step``, ``plain_step`` (seconds), ``ratio``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from common.atomic import write_text
from common.run_config import parse_overrides


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
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--method", default="fedit", help="fedit: LM loss only; mlecs adds CCL")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[])
    return p


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from benchmarks.smollm2 import smollm2_dir
    from client_app.device import Device, DeviceIdentity
    from common.settings import RunSettings

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {
        "method": args.method,
        "lora.rank": 8,
        "lora.targets": "q_proj,v_proj",
        **parse_overrides(args.set),
    }
    settings = RunSettings.from_run_config(config)
    path = smollm2_dir(settings)
    settings = RunSettings.from_run_config({**config, "model.backbone": str(path)})
    device = Device(settings, DeviceIdentity(0, 10))
    model, trainer = device.model, device.trainer
    params = device.encoder_side + device.shared_params
    shapes: list[tuple[int, ...]] = []

    def capture(module, args_, kwargs):
        emb = kwargs.get("inputs_embeds")
        if emb is not None:
            shapes.append(tuple(emb.shape[:2]))

    handle = model.lm.register_forward_pre_hook(capture, with_kwargs=True)
    rng = np.random.default_rng(0)
    trainer.run(device.held, params, 2, settings.train.batch_size, rng)  # warm-up
    handle.remove()
    batch, length = max(shapes)

    plain = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    lora = [q for q in plain.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(lora, lr=1e-3)
    ids = torch.randint(0, 400, (batch, length))
    plain.train()

    def plain_steps(n: int) -> None:
        for _ in range(n):
            loss = plain(input_ids=ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    plain_steps(2)  # warm-up
    framework, reference = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        trainer.run(device.held, params, args.steps, settings.train.batch_size, rng)
        framework.append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        plain_steps(args.steps)
        reference.append((time.perf_counter() - start) / args.steps)
    result = {
        "backbone": "SmolLM2-135M architecture (random weights), LoRA r=8 on q_proj,v_proj",
        "method": args.method,
        "batch": batch,
        "sequence_length": length,
        "threads": torch.get_num_threads(),
        "framework_step": statistics.median(framework),
        "plain_step": statistics.median(reference),
        "framework_steps": framework,
        "plain_steps": reference,
    }
    result["ratio"] = result["framework_step"] / result["plain_step"]
    write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
