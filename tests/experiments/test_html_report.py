"""The HTML report of a run or a sweep (experiments.report, experiments.html_report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common.data.views import held_modalities
from common.settings import RunSettings
from experiments.html_report import markdown_html, render
from experiments.report import main, write_outputs
from experiments.report_sources import read_source
from tests.experiments.sweep_files import hapt_config, write_run

NODES = 6


def score(base: float, seed: int):
    """Device p scores base + 0.01 * seed + p / 100 in every round."""
    return lambda rnd, p: base + 0.01 * seed + p / 100


@pytest.fixture
def sweep(tmp_path: Path, cache_dir: Path) -> Path:
    runs = tmp_path / "sweep" / "runs"
    for seed in (1, 0):  # written out of order: the report sorts seeds
        config = hapt_config(cache_dir, seed, **{"modality.missing-rate": 0.0})
        for method, base in (("fedit", 0.5), ("mlecs", 0.6)):
            write_run(runs, method, seed, config, NODES, 6, score(base, seed))
    (runs / "mlecs-s2").mkdir()  # a run still going: no summary yet
    return tmp_path / "sweep"


def cells(html: str, first: str, nth: int = 0) -> list[str]:
    """The other cells of the ``nth`` table row whose first cell is ``first``."""
    rows = re.findall(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", html)
    assert rows, f"no row {first!r}"
    return re.findall(r"<td[^>]*>(.*?)</td>", rows[nth])


def test_runs_are_read_from_their_files_with_mlecs_first(sweep: Path):
    groups = read_source(sweep)
    assert list(groups) == ["default"]
    by_method = groups["default"]
    assert list(by_method) == ["mlecs", "fedit"]
    assert [r.seed for r in by_method["mlecs"]] == [0, 1]  # the unfinished seed 2 is left out


def test_the_report_shows_scores_devices_coverage_and_ledger(sweep: Path, cache_dir: Path):
    html = render(read_source(sweep), sweep)
    # paired differences: mlecs is exactly 0.1 above fedit on every seed
    assert "<td>mlecs - fedit</td><td>2</td><td>+0.100 [+0.100, +0.100]" in html
    # each device's tail score and its modality set, as the run's config drew them
    settings = RunSettings.from_run_config(hapt_config(cache_dir, 0))
    held = {p: held_modalities(settings, p, NODES) for p in range(NODES)}
    row = cells(html, "3")
    assert row[0] == "+".join(held[3])
    assert row[1].startswith("sensor:")
    assert row[2:4] == ["0.630", "0.530"]
    # coverage: a held modality with missing-rate 0 is never missing; the others are "—"
    names = ("acc", "gyro")
    for p in range(NODES):
        coverage = re.findall(
            rf"<tr><td>{p}</td>((?:<td[^>]*>[^<]*</td>){{{len(names)}}})</tr>", html
        )[0]
        for name, cell in zip(names, re.findall(r"<td[^>]*>([^<]*)</td>", coverage)):
            assert cell == ("held, 0% missing" if name in held[p] else "—")
    holding = cells(html, "devices holding it")
    assert holding == [f"{sum(n in held[p] for p in held)} of {NODES}" for n in names]
    # the ledger by payload kind, in kB per device and round
    ledger = cells(html, "mlecs", nth=-1)  # the last table: the ledger
    assert ledger[-9:] == ["2.0", "0.5", "0.0", "1.5", "2.0", "0.5", "0.0", "3.0", "2.00%"]
    assert html.count('src="data:image/svg+xml;base64,') == 3 + 1 + 1  # curves, diffs, ledger
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched


def test_one_run_folder_is_a_report_of_its_own(sweep: Path, tmp_path: Path, capsys):
    main([str(sweep / "runs" / "fedit-s1"), "--out", str(tmp_path / "one")])
    assert "report.html" in capsys.readouterr().out
    html = (tmp_path / "one" / "report.html").read_text()
    assert "One method: no paired differences." in html
    assert cells(html, "fedit")[:3] == ["1", "6", str(NODES)]  # seeds, rounds, devices


def test_a_folder_without_runs_is_refused_by_name(tmp_path: Path):
    with pytest.raises(SystemExit, match="no finished run below"):
        main([str(tmp_path), "--out", str(tmp_path / "r")])


def test_a_broken_run_file_is_named(sweep: Path, tmp_path: Path):
    (sweep / "runs" / "fedit-s0" / "rounds.jsonl").write_text("{not json\n")
    with pytest.raises(SystemExit, match="fedit-s0: unreadable run files"):
        main([str(sweep), "--out", str(tmp_path / "r")])


def test_a_sweep_writes_its_report_from_the_files(sweep: Path):
    out = sweep
    results = {
        "default": {
            m: [
                json.loads((out / "runs" / f"{m}-s{s}" / "summary.json").read_text())
                for s in (0, 1)
            ]
            for m in ("mlecs", "fedit")
        }
    }
    write_outputs(results, out, lambda group, summary: [])
    html = (out / "report.html").read_text()
    assert "2 runs" not in html and "4 runs, read from their" in html


def test_markdown_tables_become_html():
    md = "| a - b | x |\n|---|---|\n| m - n | **+0.1 [0, 0.2] *** |\n\n`*`: a note"
    assert markdown_html(md) == (
        "<table><tr><th>a - b</th><th>x</th></tr>\n"
        "<tr><td>m - n</td><td><strong>+0.1 [0, 0.2] *</strong></td></tr>\n"
        '</table>\n<p class="note"><code>*</code>: a note</p>'
    )


def test_a_grids_groups_are_reported_apart(tmp_path: Path, cache_dir: Path):
    runs = tmp_path / "grid" / "runs" / "hapt"
    for setting, base in (("easy", 0.7), ("hard", 0.4)):
        config = hapt_config(cache_dir, 0)
        write_run(runs / setting, "mlecs", 0, config, NODES, 6, score(base, 0))
    groups = read_source(tmp_path / "grid")
    assert list(groups) == ["hapt/easy", "hapt/hard"]
    html = render(groups, tmp_path / "grid")
    assert "<h2>hapt/easy</h2>" in html and "<h2>hapt/hard</h2>" in html
    # each group's scores are its own: device 0 scores base + 0 in every round
    assert cells(html, "0", nth=0)[2] == "0.700"
