"""ROUGE-Lsum as the ML-ECS framework reports it (offline sentence splitting)."""

import datasets
import evaluate

from common.learning.metrics import rouge_lsum

_DESCRIPTION = (
    "Mean ROUGE-Lsum F-measure (rouge_score, stemming on); sentences are split by an "
    "untrained Punkt model, which needs no downloaded data."
)


class RougeLsum(evaluate.Metric):
    """Mean ROUGE-Lsum F-measure of predictions against references."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE (2004); the ML-ECS on Flower project",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {"rouge_lsum": rouge_lsum(list(predictions), list(references))}
