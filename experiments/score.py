"""Score a file of predictions with the project's metrics, loaded as ``evaluate`` modules.

Usage::

    python -m experiments.score --predictions preds.jsonl [--classes "walking,sitting,..."]
        [--no-bertscore]

``preds.jsonl`` holds one ``{"prediction": str, "reference": str}`` per line. The
three metrics are the local modules under ``evaluate_metrics/``, loaded by path
(``evaluate.load("<path>")`` fetches nothing), so the numbers are exactly the
ones the framework reports every round.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODULES = Path(__file__).resolve().parents[1] / "evaluate_metrics"


def load_metric(name: str):
    """One of the project's metrics as an ``evaluate`` module (``rouge_lsum``, ...)."""
    import evaluate

    return evaluate.load(str(MODULES / name))


def score(
    predictions: list[str],
    references: list[str],
    class_names: list[str] | None = None,
    bertscore: bool = True,
) -> dict[str, float]:
    """ROUGE-Lsum, BERTScore F1 and (with ``class_names``) macro-F1 through ``evaluate``."""
    out = load_metric("rouge_lsum").compute(predictions=predictions, references=references)
    if bertscore:
        bert = load_metric("bertscore_minilm")
        out.update(bert.compute(predictions=predictions, references=references))
    if class_names:
        f1 = load_metric("macro_f1_text")
        out.update(
            f1.compute(predictions=predictions, references=references, class_names=class_names)
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictions", type=Path, required=True)
    p.add_argument("--classes", default="", help="comma-separated class names, for macro-F1")
    p.add_argument("--no-bertscore", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    """Print the scores of a predictions file as JSON."""
    args = build_parser().parse_args(argv)
    lines = [json.loads(x) for x in args.predictions.read_text().splitlines() if x.strip()]
    preds = [str(x["prediction"]) for x in lines]
    refs = [str(x["reference"]) for x in lines]
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    print(json.dumps(score(preds, refs, classes, not args.no_bertscore), indent=2))


if __name__ == "__main__":
    main()
