"""Run settings: defaults match pyproject, bad input fails early and names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from common.methods import BASELINES
from common.run_config import flat_toml, flatten, read_toml_config
from common.settings import ConfigError, RunSettings

ROOT = Path(__file__).resolve().parents[2]


def pyproject_config() -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return flat_toml(data["tool"]["flwr"]["app"]["config"])


def test_pyproject_defaults_equal_model_defaults():
    assert pyproject_config() == flatten(RunSettings())


def test_pyproject_has_no_federations_section():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "federations" not in data["tool"]["flwr"]


def test_flat_run_config_parses_nested_and_lists():
    s = RunSettings.from_run_config({"lora.rank": 4, "model.fusions": "gated,mean"})
    assert s.lora.rank == 4 and s.model.fusions == ("gated", "mean")


def test_server_encoders_name_the_cloud_encoder_per_kind():
    s = RunSettings.from_run_config({"server.encoders": "sensor:cnn1d, text:gru"})
    assert s.server.encoder_choices() == {"sensor": ("cnn1d",), "text": ("gru",)}
    assert flatten(s)["server.encoders"] == "sensor:cnn1d,text:gru"
    assert RunSettings.from_run_config({}).server.encoder_choices() == {}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"lora.rnak": 4}, "lora.rnak"),
        ({"lora.rank": 0}, "lora.rank"),
        ({"dataset": "mnist"}, "dataset"),
        ({"method": "fedavg2"}, "method"),
        ({"model.sensor-encoders": "mlp,lstm"}, "lstm"),
        ({"modality.scenario": "half"}, "modality.scenario"),
        ({"data.test-fraction": 1.5}, "data.test-fraction"),
        ({"server.encoders": "sensor:lstm"}, "server.encoders"),
        ({"server.encoders": "cnn1d"}, "server.encoders"),
        ({"server.encoders": "sensor:gru,sensor:mlp"}, "server.encoders"),
        ({"lora.encoder-rank": -1}, "lora.encoder-rank"),
        ({"amt.variant": "mixture"}, "amt.variant"),
        ({"eval.decode": "beam"}, "eval.decode"),
        ({"seccl.prototype-temperature": 0}, "seccl.prototype-temperature"),
        ({"dp.noise-multiplier": 1.0, "lora.encoder-rank": 4}, "lora.encoder-rank"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(config: dict, named: str):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        RunSettings.from_run_config(config)


def test_method_components():
    assert RunSettings(method="mlecs").components.seccl
    assert not RunSettings(method="no-seccl").components.seccl
    assert RunSettings(method="no-amt").components.ccl
    assert not RunSettings(method="standalone").components.federated
    fedit = RunSettings(method="fedit").components
    assert fedit.federated and not (fedit.ccl or fedit.amt or fedit.mma or fedit.seccl)
    # Encoder adapters by kind are ML-ECS's: its ablations keep them, baselines have none
    assert all(RunSettings(method=m).components.share_encoders for m in ("mlecs", "no-ccl"))
    assert not any(RunSettings(method=m).components.share_encoders for m in BASELINES)
    # The controls: AMT's schedule and nothing else of ML-ECS
    for method, federated in (("fedit-ft", True), ("standalone-ft", False)):
        c = RunSettings(method=method).components
        assert c.amt and c.federated == federated
        assert not (c.ccl or c.mma or c.seccl or c.share_encoders or c.rep_exchange)

    # AMT's stages: off in mlecs by default, on with a variant; the controls keep theirs
    def amt(method: str, variant: str) -> bool:
        return RunSettings.from_run_config(
            {"method": method, "amt.variant": variant}
        ).components.amt

    assert not amt("mlecs", "off") and amt("mlecs", "schedule") and amt("mlecs", "gate")
    assert not RunSettings(method="mlecs").components.amt and not amt("no-amt", "schedule")
    assert amt("fedit-ft", "off") and amt("standalone-ft", "off") and not amt("fedit", "gate")
    # Central DP with a method that cannot share them is fine
    RunSettings.from_run_config(
        {"method": "fedit", "dp.noise-multiplier": 1.0, "lora.encoder-rank": 4}
    )


def test_every_conf_file_validates():
    # conf/grids/ holds sweep grids, checked by tests/experiments/test_grid.py;
    # conf/profiles/ device profiles, checked by tests/common/test_profiles.py.
    for path in sorted((ROOT / "conf").rglob("*.toml")):
        if "grids" in path.parts or "profiles" in path.parts:
            continue
        RunSettings.from_run_config(read_toml_config(str(path)))
