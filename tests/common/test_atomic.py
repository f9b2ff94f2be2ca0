"""Atomic writes keep private files private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from common.atomic import PRIVATE, private_dir, write_npz, write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_write_is_0600_and_a_rewrite_keeps_the_mode(tmp_path: Path):
    old = os.umask(0o022)
    try:
        text, arrays = tmp_path / "a.json", tmp_path / "b.npz"
        write_text(text, "{}", PRIVATE)
        write_npz(arrays, {"x": [1, 2]}, mode=PRIVATE)
        assert mode(text) == 0o600 and mode(arrays) == 0o600
        write_text(text, '{"again": 1}')  # e.g. a summary rewritten by the experiment runner
        assert mode(text) == 0o600 and text.read_text() == '{"again": 1}'
        write_text(tmp_path / "public.txt", "x")  # no mode asked: the umask's default
        assert mode(tmp_path / "public.txt") == 0o644
    finally:
        os.umask(old)


def test_a_private_dir_is_0700_new_or_not(tmp_path: Path):
    old = os.umask(0o022)
    try:
        fresh = private_dir(tmp_path / "parent" / "run")
        existing = tmp_path / "existing"
        existing.mkdir(mode=0o755)
        private_dir(existing)
    finally:
        os.umask(old)
    assert mode(fresh) == 0o700 and mode(existing) == 0o700
    assert mode(tmp_path / "parent") == 0o755  # parents others may need to pass through
