"""Offline metrics: ROUGE-Lsum, BERTScore with the packaged MiniLM, macro-F1."""

from __future__ import annotations

import numpy as np
import pytest

from common.learning.metrics import bertscore_f1, macro_f1, rouge_lsum, text_to_label

NAMES = ["walking", "walking upstairs", "sitting"]


def test_rouge_lsum_exact_partial_and_sentences():
    assert rouge_lsum(["walking"], ["walking"]) == pytest.approx(1.0)
    assert rouge_lsum(["walking"], ["walking upstairs"]) == pytest.approx(2 / 3)
    assert rouge_lsum(["sitting"], ["walking"]) == 0.0
    two = rouge_lsum(["The cat sat. Dr. Smith came."], ["The cat sat. Dr. Smith went."])
    assert 0.5 < two < 1.0


def test_text_to_label_prefers_exact_then_longest():
    assert text_to_label("Walking", NAMES) == 0
    assert text_to_label("walking upstairs now", NAMES) == 1
    assert text_to_label("flying", NAMES) == -1


def test_macro_f1_counts_unmatched_as_wrong():
    labels = np.array([0, 1, 2, 2])
    assert macro_f1(["walking", "walking upstairs", "sitting", "sitting"], labels, NAMES) == 1.0
    assert macro_f1(["x", "walking upstairs", "sitting", "sitting"], labels, NAMES) < 1.0


def test_bertscore_identical_is_near_one_and_empty_is_zero():
    same = bertscore_f1(["walking upstairs"], ["walking upstairs"])
    assert same == pytest.approx(1.0, abs=1e-4)
    assert bertscore_f1(["", "walking"], ["sitting", "walking"]) == pytest.approx(0.5, abs=1e-3)


def test_repeated_pairs_score_as_when_each_is_scored_alone():
    preds = ["walking", "sitting", "walking", "walking upstairs", "walking", ""]
    refs = ["walking", "walking", "walking", "walking", "walking", "sitting"]
    alone = [bertscore_f1([p], [r]) for p, r in zip(preds, refs)]
    assert bertscore_f1(preds, refs) == pytest.approx(np.mean(alone), abs=1e-5)
    rouge_alone = [rouge_lsum([p], [r]) for p, r in zip(preds, refs)]
    assert rouge_lsum(preds, refs) == pytest.approx(np.mean(rouge_alone), abs=1e-12)
