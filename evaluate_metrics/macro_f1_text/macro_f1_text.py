"""Macro-F1 over labels read from generated text, as the ML-ECS framework reports it."""

import datasets
import evaluate
import numpy as np

from common.learning.metrics import macro_f1, text_to_label

_DESCRIPTION = (
    "Macro-F1 (sklearn) over the classes present in the references; a generated text maps "
    "to a class by exact name, else the longest class name it contains, else it is wrong."
)


class MacroF1Text(evaluate.Metric):
    """Macro-F1 of generated label texts against reference label texts."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="the ML-ECS on Flower project",
            inputs_description="predictions, references: lists of str; class_names: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, class_names):
        names = list(class_names)
        labels = np.array([text_to_label(r, names) for r in references])
        return {"f1": macro_f1(list(predictions), labels, names)}
