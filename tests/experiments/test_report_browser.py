"""The HTML report of a 12-method sweep, opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments.report import main
from tests.experiments.chromium import Browser, find_chromium
from tests.experiments.sweep_files import hapt_config, write_run

METHODS = [
    "mlecs", "fedit", "fedit-ft", "standalone", "standalone-ft", "no-ccl",
    "no-mma", "no-seccl", "no-amt", "fedprox", "fedsa", "creamfl",
]  # fmt: skip
SEEDS, ROUNDS, NODES = (0, 1, 2), 25, 10


@pytest.fixture
def browser(tmp_path: Path):
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    b = Browser(binary, tmp_path / "profile")
    yield b
    b.close()


def test_a_sweep_report_renders_in_chromium_quickly_and_whole(tmp_path, cache_dir, browser):
    runs = tmp_path / "sweep" / "runs"
    for seed in SEEDS:
        config = hapt_config(cache_dir, seed, **{"modality.missing-rate": 0.3})
        for i, method in enumerate(METHODS):
            rising = lambda rnd, p, i=i, s=seed: min(1.0, 0.3 + 0.02 * rnd + 0.01 * (i + s + p))  # noqa: E731
            write_run(runs, method, seed, config, NODES, ROUNDS, rising)
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")])
    page = tmp_path / "report" / "report.html"
    size_mb = page.stat().st_size / 1e6

    seconds = browser.open(page.as_uri())
    images = browser.evaluate("document.images.length")
    loaded = browser.evaluate(
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    tables = browser.evaluate("document.querySelectorAll('table').length")
    text = browser.evaluate("document.body.innerText")
    artifacts = Path(os.environ.get("MLECS_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    browser.screenshot(artifacts / "sweep-report.png")
    (artifacts / "sweep-report.json").write_text(
        json.dumps({"open_seconds": round(seconds, 3), "size_mb": round(size_mb, 3)})
    )

    assert browser.errors == []
    assert images == loaded == 3 + 1 + 1  # curves (3 metrics), paired differences, ledger
    # runs, scores, pairs, device profiles + 3 seeds, coverage x 3 seeds, ledger + 12 methods
    assert tables == 1 + 1 + 1 + (1 + 3) + 3 + (1 + 12)
    for heading in ("Paired differences", "Devices", "Modality coverage", "Communication"):
        assert heading in text
    assert "mlecs - creamfl" in text
    assert (artifacts / "sweep-report.png").stat().st_size > 10_000
    assert seconds < 2.0, f"the report took {seconds:.2f} s to open"
    assert size_mb < 5.0
