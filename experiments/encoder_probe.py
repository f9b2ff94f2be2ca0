"""What each encoder can learn from one device's data, without the language model.

A diagnostic, not part of the framework: for every device and every encoder of
the configured family, the device's encoders (one per modality, all of that kind)
and a linear classifier over their mask-aware mean are trained with cross-entropy
on the device's own training data (its train split, and its public share when
``data.use-public-share`` is set) and scored by macro-F1 on its test split. It
separates what an encoder can extract from few windows from what the answer
generation adds or loses.

Usage::

    python -m experiments.encoder_probe --config conf/regimes/hapt_scarce_skew.toml \
        --seeds 0,1,2 --num-nodes 10 [--steps 400] [--out probe.json]

Prints one line per seed (each encoder's mean macro-F1 over the devices) and the
mean over seeds; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import write_text
from common.data.samples import SampleSet
from common.data.views import build_client_data, task_info, training_data
from common.learning.metrics import macro_f1
from common.model.connector import masked_mean
from common.model.encoders import build_encoder
from common.run_config import parse_overrides, read_toml_config
from common.settings import RunSettings


class Probe(nn.Module):
    """One encoder of ``kind`` per modality and a linear classifier on their masked mean."""

    def __init__(self, data: SampleSet, kind: str, dim: int, classes: int) -> None:
        super().__init__()
        self.names = [s.name for s in data.specs]
        self.encoders = nn.ModuleList([build_encoder(s, kind, dim) for s in data.specs])
        self.head = nn.Linear(dim, classes)

    def forward(self, data: SampleSet, idx: np.ndarray) -> torch.Tensor:
        """Logits ``(len(idx), classes)`` for the samples ``idx`` of ``data``."""
        feats = torch.stack(
            [
                enc(torch.as_tensor(np.asarray(data.inputs[name][idx]), dtype=torch.float32))
                for enc, name in zip(self.encoders, self.names)
            ],
            1,
        )  # (B, M, dim)
        return self.head(masked_mean(feats, torch.as_tensor(data.mask[idx]).bool()))


def probe_device(
    train: SampleSet,
    test: SampleSet,
    kind: str,
    settings: RunSettings,
    steps: int,
    seed: int,
    names: list[str] | None = None,
) -> float:
    """Train a :class:`Probe` on ``train`` for ``steps`` steps; macro-F1 on ``test``.

    ``names`` are the class names (default: the task's, looked up here).
    """
    names = names or task_info(settings).class_names
    model = Probe(train, kind, settings.model.encoder_dim, len(names))
    t = settings.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(train.labels)
    for _ in range(steps):
        idx = rng.choice(len(train), min(t.batch_size, len(train)), replace=False)
        loss = nn.functional.cross_entropy(model(train, idx), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(test, np.arange(len(test))).argmax(1).numpy()
    return macro_f1([names[p] for p in pred], test.labels, names)


def probe(settings: RunSettings, num_nodes: int, kinds: list[str], steps: int) -> dict[str, float]:
    """Each encoder kind's mean macro-F1 over the devices of one seed."""
    scores: dict[str, list[float]] = {k: [] for k in kinds}
    names = task_info(settings).class_names
    for p in range(num_nodes):
        d = build_client_data(settings, p, num_nodes)
        own = training_data(settings, d)
        for kind in kinds:
            torch.manual_seed(settings.seed * 100 + p)
            f1 = probe_device(own, d.test, kind, settings, steps, settings.seed, names)
            scores[kind].append(f1)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--num-nodes", type=int, default=10)
    p.add_argument("--steps", type=int, default=400, help="optimiser steps per device")
    p.add_argument("--kinds", default="", help="encoders to probe (default: the sensor family)")
    p.add_argument("--config", help="a TOML override file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="write the scores as JSON here")
    return p


def main(argv: list[str] | None = None) -> None:
    """Probe every encoder of the family for each seed; print and optionally write JSON."""
    args = build_parser().parse_args(argv)
    base = read_toml_config(args.config) if args.config else {}
    base.update(parse_overrides(args.set))
    out: dict[str, dict[str, float]] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest and reproducible
    try:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            settings = RunSettings.from_run_config({**base, "seed": seed})
            kinds = [k for k in args.kinds.split(",") if k] or list(settings.model.sensor_encoders)
            out[str(seed)] = probe(settings, args.num_nodes, kinds, args.steps)
            scores = ", ".join(f"{k} {v:.3f}" for k, v in out[str(seed)].items())
            print(f"seed {seed}: {scores}", flush=True)
    finally:
        torch.set_num_threads(before)  # the caller's setting (a test suite runs on after it)
    kinds = list(next(iter(out.values())))
    means = {k: float(np.mean([row[k] for row in out.values()])) for k in kinds}
    print("mean: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if args.out:
        write_text(args.out, json.dumps({"seeds": out, "mean": means}, indent=2))


if __name__ == "__main__":
    main()
