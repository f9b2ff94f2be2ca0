"""One sweep per output folder, and no sweep worker outliving its sweep.

Two failure modes cost whole sweeps before these guards existed: a second sweep
started into the folder of a live one, and the pool workers of a killed sweep
(spawned processes, which ``pkill -f experiments.run`` does not match) went on
writing into the run folders of the sweep started after it.

* :func:`exclusive` takes an advisory ``flock`` on ``<out>/.sweep.lock`` for the
  sweep's lifetime; the kernel releases it when the process ends, however it ends,
  so a stale lock never blocks a later sweep.
* :func:`die_with_parent` (a pool initializer) asks Linux to send the worker
  SIGTERM when the process that started it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".sweep.lock"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class SweepBusy(RuntimeError):
    """Another live sweep writes to the same output folder."""


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``out``'s sweep lock while the block runs.

    Raises
    ------
    SweepBusy
        If another process holds it, naming that process.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise SweepBusy(
                f"another sweep (pid {holder}) is writing to {out}; "
                "wait for it, stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when its parent dies (Linux; a no-op elsewhere).

    ``parent_pid`` closes the race where the parent died before the request was made.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
