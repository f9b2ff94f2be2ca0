"""Variants from other sweeps paired with a sweep's methods under labels."""

from __future__ import annotations

import json
from pathlib import Path

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


def _write_run(runs: Path, method: str, seed: int, f1: float) -> None:
    folder = runs / f"{method}-s{seed}"
    folder.mkdir(parents=True)
    summary = {"method": method, "seed": seed, "tail": {"client_f1": f1}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_a_runs_folder_is_a_source_and_seeds_restrict_every_source(tmp_path):
    # Prepare: a sweep run in pieces; results.json holds only the last piece, while
    # every finished run keeps its summary; no-ccl's folders share mlecs's prefix
    runs = tmp_path / "runs"
    for seed in range(6):
        _write_run(runs, "mlecs", seed, 0.5 + 0.01 * seed)
        _write_run(runs, "standalone", seed, 0.5 if seed < 3 else 0.6)
        _write_run(runs, "no-ccl", seed, 0.9)
    (runs / "mlecs-s6").mkdir()  # a run still going: no summary yet
    (tmp_path / "results.json").write_text(json.dumps({"mlecs": _runs([0.1])}))
    # Execute
    every = compare.load([f"m={runs}:mlecs", f"s={runs}:standalone"])
    fresh = compare.load([f"m={runs}:mlecs", f"s={runs}:standalone"], seeds={3, 4, 5})
    # Assert: the folder gives each finished run once, in seed order, and the seed
    # filter leaves only the fresh seeds, where mlecs is 0.06 below on average
    assert [r["seed"] for r in every["m"]] == [0, 1, 2, 3, 4, 5]
    assert all(r["method"] == "mlecs" for r in every["m"])
    assert [r["seed"] for r in fresh["s"]] == [3, 4, 5]
    assert "| m - s | 3 | -0.060 [-0.085, -0.035] * |" in compare.markdown(fresh, ("client_f1",))


def test_seeds_parse_as_lists_and_ranges():
    assert compare.parse_seeds("0,1,5-7") == {0, 1, 5, 6, 7}
    assert compare.parse_seeds("10-12") == {10, 11, 12}
    for bad in ("a", "3-1", "1,,2"):
        with pytest.raises(ValueError, match="seeds"):
            compare.parse_seeds(bad)


def test_no_run_on_the_asked_seeds_is_named(tmp_path):
    _write_run(tmp_path / "runs", "mlecs", 0, 0.5)
    with pytest.raises(ValueError, match="no runs of method 'mlecs' on the seeds asked for"):
        compare.load([f"x={tmp_path / 'runs'}:mlecs"], seeds={1})


def test_the_command_line_writes_tables_and_plot(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        _write_run(runs, "mlecs", seed, 0.7)
        _write_run(runs, "fedit", seed, 0.6 + 0.01 * seed)
    compare.main(
        [f"a={runs}:mlecs", f"b={runs}:fedit", "--seeds", "0-2", "--out", str(tmp_path / "t.md")]
        + ["--plot", str(tmp_path / "d.png"), "--csv", str(tmp_path / "r.csv")]
    )
    assert "| a - b | 3 | +0.090" in (tmp_path / "t.md").read_text()
    csv_rows = (tmp_path / "r.csv").read_text().splitlines()
    assert len(csv_rows) == 7 and csv_rows[1].startswith("compare,a,0,")
    assert (tmp_path / "d.png").stat().st_size > 0


def test_the_command_line_names_a_bad_seed_list(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main([f"a={tmp_path}:mlecs", "--seeds", "9-3"])
    assert stop.value.code == 2
    assert "seeds: empty range '9-3'" in capsys.readouterr().err


def test_primary_comparisons_are_named_by_label(tmp_path):
    labels = ["mlecs", "fedit-ft", "fedit"]
    assert compare.parse_primary(["mlecs:fedit-ft"], labels) == (
        ("mlecs", "fedit-ft", "client_f1"),
    )
    with pytest.raises(ValueError, match="expected A:B"):
        compare.parse_primary(["mlecs-fedit-ft"], labels)
    with pytest.raises(ValueError, match=r"\['standalone'\] not among the labels"):
        compare.parse_primary(["mlecs:standalone"], labels)
    results = {"a": _runs([0.6, 0.7, 0.8]), "b": _runs([0.5, 0.6, 0.7])}
    text = compare.markdown(results, ("client_f1",), (("a", "b", "client_f1"),))
    assert "| a - b | 3 | **+0.100 [+0.100, +0.100] *** |" in text
