"""Paired per-seed differences with 95% t intervals (experiments.stats)."""

from __future__ import annotations

import math

import pytest

from experiments.stats import (
    diff_table,
    holm,
    mean_interval,
    paired,
    summary_table,
    t95,
    t_test_p,
)


def _runs(values: dict[int, float]) -> list[dict]:
    return [{"seed": s, "tail": {"client_f1": v}} for s, v in values.items()]


def test_t95_matches_student_quantiles():
    assert t95(1) == pytest.approx(12.706)
    assert t95(4) == pytest.approx(2.776)
    assert t95(9) == pytest.approx(2.262)
    assert t95(500) == pytest.approx(1.96)
    assert math.isnan(t95(0))


def test_mean_interval_by_hand():
    # mean 2, sample std 1, n 3: half width t95(2) * 1 / sqrt(3).
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    mean, low, high = mean_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


def test_paired_uses_only_common_seeds_and_pairs_them():
    a = _runs({0: 0.80, 1: 0.70, 2: 0.75, 3: 0.90})
    b = _runs({0: 0.70, 1: 0.61, 2: 0.64, 9: 0.10})
    d = paired("a", "b", a, b, "client_f1")
    assert d.n == 3
    assert d.mean == pytest.approx((0.10 + 0.09 + 0.11) / 3)
    assert d.low == pytest.approx(0.10 - 4.303 * 0.01 / math.sqrt(3))
    assert d.significant
    # Unpaired, these seeds' spread would swamp the difference; paired it does not.
    noisy_a = _runs({0: 0.50, 1: 0.90, 2: 0.70})
    noisy_b = _runs({0: 0.49, 1: 0.89, 2: 0.69})
    assert paired("a", "b", noisy_a, noisy_b, "client_f1").significant
    assert paired("a", "b", a, _runs({7: 0.5}), "client_f1") is None


def test_tables_show_seed_counts_and_mark_significance():
    results = {
        "a": _runs({0: 0.80, 1: 0.70, 2: 0.75}),
        "b": _runs({0: 0.70, 1: 0.61, 2: 0.64}),
        "c": _runs({0: 0.90, 1: 0.60, 2: 0.75}),
    }
    summary = summary_table(results, "tail")
    assert "| a | 3 | 0.750 ± 0.050 |" in summary
    lines = {x.split(" | ")[0]: x for x in diff_table(results, ("client_f1",)).splitlines()}
    assert lines["| a - b"].startswith("| a - b | 3 | +0.100 [") and lines["| a - b"].endswith(
        "] * |"
    )
    assert lines["| a - c"].startswith("| a - c | 3 | +0.000 [") and "*" not in lines["| a - c"]


def test_holm_steps_down_and_stops_at_the_first_failure():
    # m = 4: 0.005 <= 0.05/4 and 0.01 <= 0.05/3 are rejected; 0.03 > 0.05/2 stops it,
    # so 0.04 is kept too although 0.04 <= 0.05/1.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.04, math.nan]) == [True, False]  # a NaN neither counts nor is rejected
    assert holm([]) == []


def test_t_test_p_matches_scipy():
    from scipy.stats import ttest_1samp

    values = [0.02, -0.01, 0.03, 0.015, 0.0]
    assert t_test_p(values) == pytest.approx(ttest_1samp(values, 0.0).pvalue)
    assert t_test_p([0.1, 0.1]) == 0.0 and t_test_p([0.0, 0.0]) == 1.0
    assert math.isnan(t_test_p([0.1]))


def test_primary_cells_stand_alone_and_secondary_stars_must_survive_holm():
    # a - b: diffs 0.06, 0.01, 0.04, 0.07, 0.02 (p ~ 0.03): significant alone, but among
    # the many secondary cells below Holm asks for p <= 0.05 / m of it.
    base = {s: 0.5 + 0.01 * s for s in range(5)}
    results = {
        "a": _runs({s: v + d for (s, v), d in zip(base.items(), (0.06, 0.01, 0.04, 0.07, 0.02))}),
        "b": _runs(base),
        **{
            f"x{i}": _runs({s: v + 0.001 * i * (-1) ** s for s, v in base.items()})
            for i in range(5)
        },
    }
    raw = paired("a", "b", results["a"], results["b"], "client_f1")
    assert raw.significant and 0.005 < raw.p < 0.05
    lines = {x.split(" | ")[0]: x for x in diff_table(results, ("client_f1",)).splitlines()}
    assert lines["| a - b"].endswith("(*) |")  # secondary: the correction removes the star
    table = diff_table(results, ("client_f1",), primary=(("b", "a", "client_f1"),))
    lines = {x.split(" | ")[0]: x for x in table.splitlines()}
    assert lines["| a - b"].endswith(" *** |")  # primary (either order): bold, starred
    assert "Bold: a primary comparison" in table
