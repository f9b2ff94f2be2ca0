"""Where derived data are cached, and the guard that keeps them out of the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import cache
from common.cache import cache_root
from common.settings import ConfigError, RunSettings


def test_cache_root_precedence_and_app_dir_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLECS_CACHE_DIR", raising=False)

    # Execute / Assert
    default = cache_root(RunSettings())
    assert default == tmp_path / "home" / ".cache" / "mlecs-flower" and default.is_dir()
    monkeypatch.setenv("MLECS_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(RunSettings()) == tmp_path / "env"
    assert cache_root(RunSettings(cache_dir=str(tmp_path / "set"))) == tmp_path / "set"
    inside = Path(cache.__file__).resolve().parents[1] / ".cache"
    with pytest.raises(ConfigError, match="inside the app directory"):
        cache_root(RunSettings(cache_dir=str(inside)))
