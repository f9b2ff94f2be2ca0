"""The project's metrics as ``evaluate`` modules give exactly the framework's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from common.learning import metrics
from experiments.score import score

CLASSES = ["walking", "walking upstairs", "sitting", "laying"]
PREDS = ["walking", "walking upstairs now", "sitting", "", "laying down", "jumping"]
REFS = ["walking", "walking upstairs", "laying", "sitting", "laying", "walking"]


@pytest.mark.parametrize("bertscore", [False, True])
def test_both_routes_agree(bertscore: bool):
    labels = np.array([CLASSES.index(r) for r in REFS])
    direct = metrics.score(PREDS, REFS, labels, CLASSES, bertscore=bertscore)
    through = score(PREDS, REFS, CLASSES, bertscore=bertscore)
    assert through["rouge_lsum"] == pytest.approx(direct["rouge_lsum"], abs=1e-12)
    assert through["f1"] == pytest.approx(direct["f1"], abs=1e-12)
    if bertscore:
        assert through["bertscore_f1"] == pytest.approx(direct["bertscore_f1"], abs=1e-6)
    assert 0 < direct["f1"] < 1 and 0 < direct["rouge_lsum"] < 1
