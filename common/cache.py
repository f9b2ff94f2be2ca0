"""Where derived data, tokenizers and built backbones are cached."""

from __future__ import annotations

import os
from pathlib import Path

from common.settings import ConfigError, RunSettings

APP_DIR = Path(__file__).resolve().parents[1]


def cache_root(settings: RunSettings) -> Path:
    """Return the directory for derived data, creating it if needed.

    ``settings.cache_dir``, else ``$MLECS_CACHE_DIR``, else
    ``~/.cache/mlecs-flower``. It must lie outside the app directory, which
    Flower packages and ships to every node.
    """
    raw = settings.cache_dir or os.environ.get("MLECS_CACHE_DIR", "")
    path = Path(raw or "~/.cache/mlecs-flower").expanduser().resolve()
    if path == APP_DIR or APP_DIR in path.parents:
        raise ConfigError(
            f"cache directory '{path}' (config key 'cache-dir' or $MLECS_CACHE_DIR) "
            f"lies inside the app directory {APP_DIR}; choose one outside it"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
