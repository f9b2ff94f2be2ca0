"""Atomic writes: readers never see a half-written file or folder.

Every file or folder the project writes where another process may read it
(derived data caches, built backbones, device state, server checkpoints, run
records) goes through :func:`atomic_write`: the content is written under a
private temporary name in the same directory, then renamed into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, then rename it to ``path``.

    Parameters
    ----------
    path : pathlib.Path
        The final file or folder; its parent is created if needed.
    write : callable
        Writes the content to the path it is given (a file or a folder). The
        temporary name keeps the suffix of ``path``, so writers that add a
        missing suffix (``np.savez``) do not rename it.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    A folder that already exists is left in place (another process built the
    same content first); a file is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        if tmp.is_dir():
            try:
                tmp.rename(path)
            except OSError:  # another process won the race; its copy is equivalent
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> Path:
    """Write ``arrays`` to ``path`` (an ``.npz``) atomically."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(Path(path), lambda tmp: save(tmp, **arrays))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, loaded into memory."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
