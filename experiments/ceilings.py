"""Ceilings beside the federated results: what pooling every device's data would give.

* ``centralized``: the framework's own model (the cloud's: every modality, its
  encoders from ``server.encoders`` or else the first of each family, the same
  connector, backbone and adapters) trained on the pooled
  data of all devices (their private train splits, and their public shares when
  ``data.use-public-share`` is set, as the devices train on them) for the
  federation's whole device step budget (rounds x steps x devices), then scored
  on each device's test split with the device's modalities, like a device is.
* ``centralized_ft``: the same, with the devices' own architectures and AMT's
  personal stage: one model per device architecture (encoders and fusion, as
  ``edge_model`` gives them by partition) trained on the pooled data for the
  step budget of the devices that use it, less their personal stages; then
  each device fine-tunes a copy on its own private train split for AMT's
  private-stage steps (the same adapters a ``fedit-ft`` device tunes) and is
  scored on its test split. What pooling would give the devices' models under
  the same schedule as ``mlecs`` and ``fedit-ft``.
* ``forest``: a random forest on per-channel window statistics (mean, std, min,
  max of every present sensor modality), trained on the same pooled data, scored
  the same way (sensor datasets only).
* ``cloud_on_device``: a run's final cloud model scored on each device's test
  split with the device's modalities (evaluation only): what a device would
  reach if the cloud's knowledge transferred to it perfectly. Every run of
  ``experiments.run`` records it in its summary (``final`` and ``tail``).
* ``cloud_public`` and ``cloud_pooled``: the cloud's headroom. The cloud model
  trained alone as in a ``standalone`` run (the cloud's parameters, learning rate,
  batch size and steps per round, for every round) on the public train split, and
  on the public train split with every device's training data pooled into it;
  both scored on the public test split, as the cloud is in a run. Their gap is
  what the devices' data could be worth to the cloud at its own step budget.
* ``forest_own`` (not a ceiling: the forest's ``standalone``): the same forest
  trained by each device on its own data only; its gap to ``forest`` is what
  pooling is worth to a classifier that learns well from few samples.

Usage::

    python -m experiments.ceilings --seeds 0,1,2,3,4 --num-nodes 10 \
        --out outputs/ceilings [--config FILE] [--set key=value ...]

Writes ``<out>/ceilings.json`` (per seed, per ceiling: macro-F1 and ROUGE-Lsum,
means over the devices' tests, or on the public test for ``cloud_*``) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from common.atomic import write_text
from common.data.samples import SampleSet
from common.data.views import build_client_data, task_info, training_data
from common.learning.evaluation import evaluate
from common.learning.loop import Trainer
from common.learning.metrics import macro_f1
from common.model.adapters import SHARED, adapter_parameters
from common.model.encoders import encoder_kind
from common.model.factory import cloud_model, edge_model, encoder_choices
from common.model.multimodal import MultimodalLM
from common.model.pretrained_encoders import trainable_parameters
from common.reproducibility import pin
from common.run_config import parse_overrides, read_toml_config
from common.settings import RunSettings
from server_app.cloud import Cloud


def pooled(settings: RunSettings, num_nodes: int) -> tuple[SampleSet, list[SampleSet]]:
    """Every device's training data pooled (public ids once), and their tests.

    A device's training data is its train split, and its public share when
    ``data.use-public-share`` is set (as the devices train on it).
    """
    devices = [build_client_data(settings, p, num_nodes) for p in range(num_nodes)]
    parts, seen = [], set()
    for d in devices:
        parts.append(d.train.subset(np.arange(len(d.train))))
        if not settings.data.use_public_share:
            continue
        fresh = [i for i, sid in enumerate(d.public.ids) if int(sid) not in seen]
        seen.update(int(d.public.ids[i]) for i in fresh)
        parts.append(d.public.subset(np.array(fresh, np.int64)))
    return concat(parts), [d.test for d in devices]


def concat(parts: list[SampleSet]) -> SampleSet:
    """The samples of ``parts`` in order, renumbered ``0..N-1``."""
    return SampleSet(
        specs=parts[0].specs,
        inputs={k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs},
        mask=np.concatenate([p.mask for p in parts]),
        targets=[t for p in parts for t in p.targets],
        labels=np.concatenate([p.labels for p in parts]),
        ids=np.arange(sum(len(p) for p in parts), dtype=np.int64),
    )


def centralized(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """Train the framework's model on pooled data; mean scores over the devices' tests."""
    train, tests = pooled(settings, num_nodes)
    task = task_info(settings)
    model = cloud_model(settings, task)
    t = settings.train
    _train(
        settings,
        model,
        train,
        settings.num_server_rounds * t.steps * num_nodes,
        [settings.seed, 77],
    )
    scores = [
        evaluate(model, test, task, settings.eval, t.eval_batch_size, t.max_new_tokens)
        for test in tests
    ]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("f1", "rouge_lsum")}


def cloud_on_device(settings: RunSettings, model: MultimodalLM, num_nodes: int) -> dict[str, float]:
    """Mean scores of ``model`` (the cloud's) over the devices' test splits.

    Each test split holds only its device's modalities (the others are absent in
    the mask and zero in the inputs), so the cloud sees what the device sees.
    """
    task, t = task_info(settings), settings.train
    scores = [
        evaluate(
            model,
            build_client_data(settings, p, num_nodes).test,
            task,
            settings.eval,
            t.eval_batch_size,
            t.max_new_tokens,
        )
        for p in range(num_nodes)
    ]
    keys = [k for k in ("f1", "rouge_lsum", "rank_f1") if k in scores[0]]
    return {k: float(np.mean([s[k] for s in scores])) for k in keys}


def cloud_public(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """The cloud trained alone on the public train split; its scores on the public test."""
    return _cloud_alone(settings, None)


def cloud_pooled(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """The cloud trained alone on public train plus every device's training data."""
    return _cloud_alone(settings, pooled(settings, num_nodes)[0])


def _cloud_alone(settings: RunSettings, extra: SampleSet | None) -> dict[str, float]:
    """Train a cloud as a ``standalone`` run does, on public train (and ``extra``); score it.

    ``extra`` samples keep their own modality masks; the cloud holds every modality.
    """
    alone = settings.model_copy(update={"method": "standalone"})
    cloud = Cloud(alone)
    if extra is not None:
        cloud.data.public_train = concat([cloud.data.public_train, extra])
    none_ids, none_z = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    for server_round in range(1, alone.num_server_rounds + 1):
        cloud.step(none_ids, none_z, server_round)
    scores = cloud.evaluate()
    return {k: float(scores[k]) for k in ("f1", "rouge_lsum")}


def centralized_ft(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """Pooled training per device architecture, then each device's personal stage.

    Returns
    -------
    dict of str to float
        Mean ``f1`` and ``rouge_lsum`` over the devices' test splits.
    """
    train, _ = pooled(settings, num_nodes)
    task, t = task_info(settings), settings.train
    names = tuple(s.name for s in task.specs)
    personal = settings.amt.split(t.steps)[1]
    by_arch: dict[tuple, list[int]] = {}
    for p in range(num_nodes):
        by_arch.setdefault(architecture(settings, names, p), []).append(p)
    scores = []
    for slots in by_arch.values():
        model = edge_model(settings, names, slots[0], task)
        budget = len(slots) * (settings.num_server_rounds * t.steps - personal)
        _train(settings, model, train, budget, [settings.seed, 78, slots[0]])
        for p in slots:
            device = build_client_data(settings, p, num_nodes)
            own = copy.deepcopy(model)
            _train(settings, own, device.train, personal, [settings.seed, 79, p])
            scores.append(
                evaluate(own, device.test, task, settings.eval, t.eval_batch_size, t.max_new_tokens)
            )
    return {k: float(np.mean([s[k] for s in scores])) for k in ("f1", "rouge_lsum")}


def architecture(settings: RunSettings, names: tuple[str, ...], slot: int) -> tuple:
    """The encoder kind of every modality and the fusion of the device in ``slot``."""
    task = task_info(settings)
    choices = encoder_choices(settings.model)
    kinds = tuple(encoder_kind(s, choices, slot) for s in task.specs if s.name in names)
    return (*kinds, settings.model.fusions[slot % len(settings.model.fusions)])


def _train(
    settings: RunSettings, model: MultimodalLM, data: SampleSet, steps: int, seed: list[int]
) -> None:
    """Train ``model``'s encoder side and shared adapters (what a device trains) on ``data``."""
    params = [
        *trainable_parameters(model.encoders),
        *model.connector.private_parameters(),
        *model.connector.shared_parameters(),
        *adapter_parameters(model.lm, SHARED),
    ]
    t = settings.train
    trainer = Trainer(model, params, lr=t.lr, weight_decay=t.weight_decay)
    trainer.run(data, params, steps, t.batch_size, np.random.default_rng(seed))


def window_features(data: SampleSet) -> np.ndarray:
    """Per-channel mean, std, min, max of every sensor modality (zeros where absent)."""
    feats = []
    for col, spec in enumerate(data.specs):
        if spec.kind != "sensor":
            continue
        x = np.asarray(data.inputs[spec.name], np.float32)  # (N, T, C)
        present = data.mask[:, col].astype(np.float32)[:, None]
        stats = np.concatenate([x.mean(1), x.std(1), x.min(1), x.max(1)], axis=1)
        feats.extend([stats * present, present])
    if not feats:
        raise ValueError("the forest ceiling needs a sensor dataset")
    return np.concatenate(feats, axis=1)


def _forest_f1(settings: RunSettings, train: SampleSet, tests: list[SampleSet]) -> list[float]:
    from sklearn.ensemble import RandomForestClassifier

    names = task_info(settings).class_names
    clf = RandomForestClassifier(n_estimators=300, random_state=settings.seed, n_jobs=1)
    clf.fit(window_features(train), train.labels)
    return [
        macro_f1([names[p] for p in clf.predict(window_features(t))], t.labels, names)
        for t in tests
    ]


def forest(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """A random forest on window statistics; mean macro-F1 over the devices' tests."""
    train, tests = pooled(settings, num_nodes)
    return {"f1": float(np.mean(_forest_f1(settings, train, tests)))}


def forest_own(settings: RunSettings, num_nodes: int) -> dict[str, float]:
    """The same forest trained by each device on its own data only (no pooling).

    A device's own data is what ``standalone`` trains on: its train split, and its
    public share when ``data.use-public-share`` is set. Its gap to :func:`forest` is
    what pooling the data is worth to a classifier that learns well from few samples.
    """
    f1s = []
    for p in range(num_nodes):
        d = build_client_data(settings, p, num_nodes)
        f1s.extend(_forest_f1(settings, training_data(settings, d), [d.test]))
    return {"f1": float(np.mean(f1s))}


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--num-nodes", type=int, default=10)
    p.add_argument("--out", default="outputs/ceilings")
    p.add_argument("--config", help="a TOML override file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--skip-centralized", action="store_true", help="only the forests")
    p.add_argument(
        "--ceilings",
        default=",".join(CEILINGS),
        help=f"which ceilings, comma-separated, among {','.join(CEILINGS)}",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the chosen ceilings for every seed; write ``ceilings.json`` and print a table."""
    p = build_parser()
    args = p.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    base = read_toml_config(args.config) if args.config else {}
    base.update(parse_overrides(args.set))
    wanted = [c for c in args.ceilings.split(",") if c]
    unknown = [c for c in wanted if c not in CEILINGS]
    if unknown:
        p.error(f"unknown ceilings {unknown}, expected some of {list(CEILINGS)}")
    if args.skip_centralized:
        wanted = [c for c in wanted if not c.startswith("centralized")]
    out: dict[str, dict] = {}
    for seed in (int(s) for s in args.seeds.split(",") if s):
        settings = RunSettings.from_run_config({**base, "seed": seed})
        # `threads` matters here as in a run: two ceilings at once on 2 cores with
        # torch's default threads each took 1452 s per seed, against 145 s alone.
        pin(settings)
        start = time.time()
        row = {}
        run = {
            "forest": forest,
            "forest_own": forest_own,
            "centralized": centralized,
            "centralized_ft": centralized_ft,
            "cloud_public": cloud_public,
            "cloud_pooled": cloud_pooled,
        }
        for name in wanted:
            if name.startswith("forest") and settings.dataset == "easyvqa":
                continue  # the forest needs sensor windows
            row[name] = run[name](settings, args.num_nodes)
        row["seconds"] = round(time.time() - start, 1)
        out[str(seed)] = row
        print(f"seed {seed}: {row}", flush=True)
    path = Path(args.out)
    write_text(path / "ceilings.json", json.dumps(out, indent=2))
    print(table(out))


CEILINGS = ("forest", "forest_own", "centralized", "centralized_ft", "cloud_public", "cloud_pooled")


def table(out: dict[str, dict]) -> str:
    """Markdown: each ceiling's macro-F1 (and ROUGE-Lsum), mean ± std over seeds.

    The ``cloud_*`` ceilings score the public test split; the others the mean over
    the devices' test splits.
    """
    lines = ["| ceiling | seeds | f1 | rouge_lsum |", "|---|---|---|---|"]
    for name in CEILINGS:
        rows = [r[name] for r in out.values() if name in r]
        if not rows:
            continue
        cells = []
        for key in ("f1", "rouge_lsum"):
            vals = [r[key] for r in rows if key in r]
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            cells.append(f"{np.mean(vals):.3f} ± {sd:.3f}" if vals else "n/a")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
