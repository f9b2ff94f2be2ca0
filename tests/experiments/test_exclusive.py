"""One sweep per output folder; sweep workers end with their sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.exclusive import LOCK_NAME, SweepBusy, exclusive
from experiments.run import main

ROOT = Path(__file__).resolve().parents[2]

_HOLD = """
import sys, time
from pathlib import Path
from experiments.exclusive import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""

# A parent that starts a pool worker the way the sweep does, prints the worker's
# pid and then waits to be killed.
_POOL = """
import os, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from experiments.exclusive import die_with_parent

if __name__ == "__main__":
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        time.sleep(60)
"""


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_second_sweep_into_a_live_sweeps_folder_is_refused_and_the_lock_dies_with_it(
    tmp_path: Path,
):
    holder = _start(_HOLD, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepBusy, match=rf"pid {holder.pid}\b.*{tmp_path.name}"):
            with exclusive(tmp_path):
                pass
        # the command line names it too, before any run starts
        with pytest.raises(SystemExit, match=f"another sweep \\(pid {holder.pid}\\)"):
            main(["--methods", "standalone", "--seeds", "0", "--out", str(tmp_path)])
        assert not any(p.name != LOCK_NAME for p in tmp_path.iterdir())
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path):  # a killed holder leaves no stale lock
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_pool_workers_end_when_the_sweep_is_killed():
    parent = _start(_POOL)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the pool worker outlived its killed sweep"
    finally:
        parent.kill()
