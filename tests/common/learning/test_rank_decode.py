"""Rank classification: each class name scored under the model, the likeliest taken."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from common.data.views import build_client_data, task_info
from common.learning.evaluation import evaluate, rank_predict
from common.model.factory import edge_model
from common.sections import EvalSettings
from common.settings import RunSettings


@pytest.fixture
def model_and_data(tiny_config):
    settings = RunSettings.from_run_config(tiny_config)
    task = task_info(settings)
    data = build_client_data(settings, 0, 2)
    return edge_model(settings, data.modalities, 0, task), data.test, task


def test_answer_log_likelihood_is_the_lm_loss_of_that_answer(model_and_data):
    # Prepare: one sample, every class name as its target in turn
    model, data, task = model_and_data
    batch = model.make_batch(data, np.arange(1))
    tok = model.tokenizer
    # Execute
    scores = model.answer_log_likelihoods(batch, task.class_names)
    # Assert: log p(answer + end) = -(mean token cross-entropy) x number of tokens
    _, z = model.represent(batch)
    for k, name in enumerate(task.class_names):
        ids = tok(" " + name + tok.eos_token, add_special_tokens=False).input_ids
        target = replace(batch, target_ids=torch.tensor([ids]))
        with torch.no_grad():
            expected = -model.lm_loss(target, z) * len(ids)
        assert float(scores[0, k]) == pytest.approx(float(expected), rel=1e-4, abs=1e-4)


def test_rank_predict_takes_the_likeliest_class_name(model_and_data):
    model, data, task = model_and_data
    preds = rank_predict(model, data, task.class_names, batch_size=3)
    batch = model.make_batch(data, np.arange(len(data)))
    best = model.answer_log_likelihoods(batch, task.class_names).argmax(1).tolist()
    assert preds == [task.class_names[k] for k in best]
    assert set(preds) <= set(task.class_names)


def test_decode_picks_what_every_metric_scores(model_and_data):
    model, data, task = model_and_data
    both = evaluate(model, data, task, EvalSettings(bertscore=False, decode="both"), 4, 3)
    rank = evaluate(model, data, task, EvalSettings(bertscore=False, decode="rank"), 4, 3)
    gen = evaluate(model, data, task, EvalSettings(bertscore=False), 4, 3)
    assert "rank_f1" not in gen
    assert both["f1"] == gen["f1"] and both["rouge_lsum"] == gen["rouge_lsum"]
    assert rank["f1"] == pytest.approx(both["rank_f1"])
    assert rank["rank_f1"] == pytest.approx(rank["f1"])
