"""Atomic writes: readers never see a half-written file or folder.

Every file or folder the project writes where another process may read it
(derived data caches, built backbones, device state, server checkpoints, run
records) goes through :func:`atomic_write`: the content is written under a
private temporary name in the same directory, then renamed into place.
Run records are private to their owner: :func:`private_dir` makes a 0700 folder
and ``mode=PRIVATE`` a 0600 file; a replaced file keeps the mode it had.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

PRIVATE = 0o600  # a file only its owner can read and write
PRIVATE_DIR = 0o700  # a folder only its owner can enter


def atomic_write(path: Path, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, then rename it to ``path``.

    Parameters
    ----------
    path : pathlib.Path
        The final file or folder; its parent is created if needed.
    write : callable
        Writes the content to the path it is given (a file or a folder). The
        temporary name keeps the suffix of ``path``, so writers that add a
        missing suffix (``np.savez``) do not rename it.
    mode : int, optional
        Permission bits of the file (e.g. :data:`PRIVATE`), set before it
        appears under its name. By default a file that is replaced keeps its
        mode, and a new one gets the process's default (umask).

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
    if mode is None and path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
    try:
        write(tmp)
        if mode is not None and tmp.is_file():
            os.chmod(tmp, mode)
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


def write_npz(
    path: Path,
    arrays: dict[str, np.ndarray],
    *,
    compressed: bool = False,
    mode: int | None = None,
) -> Path:
    """Write ``arrays`` to ``path`` (an ``.npz``) atomically (``mode``: see ``atomic_write``)."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(Path(path), lambda tmp: save(tmp, **arrays), mode)


def write_text(path: Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (``mode``: see :func:`atomic_write`)."""
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text), mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it a folder only its owner can enter.

    Parameters
    ----------
    path : pathlib.Path
        The folder. Missing parents get the default mode (umask), as other
        users may need to pass through them; ``path`` itself is set to
        :data:`PRIVATE_DIR` whether it is new or not.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, loaded into memory."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
