"""benchmarks.scale: partial participation and the server's own cost per round."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.scale import SERVER_PARTS, main
from tests.conftest import TINY


def test_a_fraction_of_the_devices_trains_and_the_server_parts_are_timed(
    tmp_path: Path, cache_dir: Path
):
    overrides = {**TINY, "cache-dir": str(cache_dir), "output-dir": str(tmp_path / "runs")}
    overrides.pop("num-server-rounds")
    sets = [
        f"--set={k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()
    ]
    out = tmp_path / "scale.json"
    main(["--out", str(out), "--num-nodes", "20", "--rounds", "2", "--fraction", "0.1", *sets])
    result = json.loads(out.read_text())
    assert result["devices_per_round"] == 2  # 10% of 20 devices, every round
    assert set(result["server"]) == set(SERVER_PARTS)
    for part in ("accept", "aggregation", "consensus", "cloud_step", "checkpoint"):
        assert result["server"][part] > 0, part
    assert 0 < result["seconds_per_round"] * result["rounds"] <= result["seconds"]
    assert result["peak_rss_gib"] > 0 and 0 <= result["final"]["client_f1"] <= 1
