"""Variants from other sweeps paired with a sweep's methods under labels."""

from __future__ import annotations

import json

import pytest

from experiments import compare


def _runs(values: list[float]) -> list[dict]:
    return [{"seed": s, "tail": {"client_f1": v}} for s, v in enumerate(values)]


def test_variants_are_paired_per_seed_under_their_labels(tmp_path):
    # Prepare: a sweep with two methods and a variant sweep with the same method name
    (tmp_path / "a.json").write_text(
        json.dumps({"mlecs": _runs([0.5, 0.6, 0.7]), "standalone": _runs([0.4, 0.5, 0.6])})
    )
    (tmp_path / "b.json").write_text(json.dumps({"mlecs": _runs([0.7, 0.8, 0.9])}))
    # Execute
    results = compare.load(
        [
            f"mlecs={tmp_path / 'a.json'}:mlecs",
            f"standalone={tmp_path / 'a.json'}:standalone",
            f"mlecs r16={tmp_path / 'b.json'}:mlecs",
        ]
    )
    text = compare.markdown(results, ("client_f1",))
    # Assert: every pair, the variant's constant +0.2 over mlecs with a zero-width interval
    assert list(results) == ["mlecs", "standalone", "mlecs r16"]
    assert "| mlecs - standalone | 3 | +0.100 [+0.100, +0.100] * |" in text
    assert "| mlecs - mlecs r16 | 3 | -0.200 [-0.200, -0.200] * |" in text


@pytest.mark.parametrize("spec", ["mlecs", "mlecs=path", "=p.json:mlecs", "x=p.json:"])
def test_a_malformed_source_is_named(spec):
    with pytest.raises(ValueError, match="LABEL=PATH:METHOD"):
        compare.parse_source(spec)


def test_a_missing_method_is_named(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"fedit": _runs([0.5])}))
    with pytest.raises(ValueError, match="no runs of method 'mlecs'"):
        compare.load([f"x={tmp_path / 'a.json'}:mlecs"])
