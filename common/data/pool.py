"""The dataset pool: every sample of the configured dataset, loaded once per process."""

from __future__ import annotations

import functools
from pathlib import Path

from common.cache import cache_root
from common.data.easyvqa import load_easyvqa
from common.data.hapt import load_hapt_pool
from common.data.jsonl import load_jsonl
from common.data.samples import DataPool
from common.settings import ConfigError, RunSettings


def load_pool(settings: RunSettings) -> DataPool:
    """The pool of the configured dataset (cached per process and on disk).

    Raises
    ------
    ConfigError
        For ``dataset="jsonl"`` without an existing ``data.jsonl.path``.
    """
    root = str(cache_root(settings))
    if settings.dataset == "hapt":
        h = settings.data.hapt
        return _load_pool("hapt", root, (h.window, h.stride, h.include_transitions))
    if settings.dataset == "easyvqa":
        params = (settings.data.easyvqa.pool_size, settings.seed)
        return _load_pool("easyvqa", root, params)
    path = settings.data.jsonl.path
    if not path:
        raise ConfigError("dataset 'jsonl' needs config key 'data.jsonl.path'")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(f"config key 'data.jsonl.path': no file at '{resolved}'")
    # The modification time in the key makes an edited file reload.
    return _load_pool("jsonl", root, (str(resolved), resolved.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_pool(dataset: str, root: str, params: tuple) -> DataPool:
    """Load a dataset once per process; many virtual clients share it."""
    if dataset == "hapt":
        return load_hapt_pool(Path(root), *params)
    if dataset == "easyvqa":
        return load_easyvqa(Path(root), *params)
    return load_jsonl(Path(params[0]), Path(root))
