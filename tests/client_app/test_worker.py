"""The warm worker (client_app.worker): same results as in-process, access, lifetime, fallback."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from client_app import worker
from client_app.app import app as client_app
from experiments.local_grid import InProcessGrid
from server_app.run import ServerRun
from tests.server_app.test_resume import assert_same_states, metrics

NODES = 2


@pytest.fixture
def worker_home(tmp_path: Path, monkeypatch):
    """Workers' files under this test's folder; every worker started is stopped after."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    yield worker.worker_dir()
    for pid_file in worker.worker_dir().glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def run(config: dict, warm: bool) -> dict:
    from common.settings import RunSettings

    # Long enough that a loaded CI box cannot idle a worker out between two of its
    # messages (60 s did once, under a full suite beside two training runs); the
    # fixture kills the workers at the end.
    extra = {"warm-worker": True, "warm-worker-idle": 600} if warm else {}
    nodes = [{"partition-id": i, "num-partitions": NODES, **extra} for i in range(NODES)]
    server = ServerRun(RunSettings.from_run_config(config))
    return server.run(InProcessGrid(client_app, config, NODES, node_configs=nodes))


def test_a_warm_worker_computes_what_the_clientapp_process_computes(tiny_config, worker_home):
    out = Path(tiny_config["output-dir"])
    here = run({**tiny_config, "run-name": "here"}, warm=False)
    warm = run({**tiny_config, "run-name": "warm"}, warm=True)
    assert metrics(out / "warm") == metrics(out / "here")
    assert warm["final"] == here["final"]
    assert_same_states(out / "warm", out / "here")
    # one worker per node served every message, and is still up for the next round
    pids = [int(p.read_text()) for p in worker_home.glob("*.pid")]
    assert len(pids) == NODES
    for pid in pids:
        os.kill(pid, 0)
    assert (worker_home.stat().st_mode & 0o777) == 0o700


def test_a_later_run_reuses_the_nodes_workers(tiny_config, worker_home):
    # Back-to-back runs on the same nodes: no worker piles up, the same ones serve both
    out = Path(tiny_config["output-dir"])
    run({**tiny_config, "run-name": "first"}, warm=True)
    first = sorted(int(p.read_text()) for p in worker_home.glob("*.pid"))
    second = run({**tiny_config, "run-name": "second", "seed": 1}, warm=True)
    assert sorted(int(p.read_text()) for p in worker_home.glob("*.pid")) == first
    assert len(first) == NODES
    here = run({**tiny_config, "run-name": "here", "seed": 1}, warm=False)
    assert second["final"] == here["final"]  # the reused worker computes the same
    assert metrics(out / "second") == metrics(out / "here")


def test_the_worker_refuses_a_client_without_its_key(tiny_config, worker_home):
    run({**tiny_config, "num-server-rounds": 1, "run-name": "w"}, warm=True)
    sock = next(worker_home.glob("*.sock"))
    with pytest.raises((AuthenticationError, EOFError, OSError)):
        Client(str(sock), family="AF_UNIX", authkey=b"not the key")
    # ... and keeps serving the node
    assert Client(str(sock), family="AF_UNIX", authkey=sock.with_suffix(".key").read_bytes())


def test_the_worker_exits_with_its_parent(tmp_path: Path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    sock, key = tmp_path / "w.sock", tmp_path / "w.key"
    key.write_bytes(b"k" * 32)
    lock, log = tmp_path / "w.lock", tmp_path / "w.log"  # as a ClientApp leaves them
    lock.touch()
    log.write_text("warm worker log\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "client_app.worker", "--socket", sock, "--key-file", key]
        + ["--parent-pid", str(parent.pid), "--idle", "600"],
        cwd=worker.APP_DIR,
    )
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        parent.kill()
        parent.wait()
        assert proc.wait(timeout=15) == 0
        assert not sock.exists() and not sock.with_suffix(".pid").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # key, lock and log too
    finally:
        parent.kill()
        proc.kill()


def test_without_a_worker_the_clientapp_handles_the_message(tiny_config, worker_home, monkeypatch):
    def unreachable(context):
        raise OSError("no worker here")

    monkeypatch.setattr(worker, "_connect", unreachable)
    out = Path(tiny_config["output-dir"])
    run({**tiny_config, "num-server-rounds": 1, "run-name": "fallback"}, warm=True)
    rounds = metrics(out / "fallback")
    assert len(rounds) == 1 and not list(worker_home.glob("*.pid"))


@pytest.mark.parametrize(
    ("value", "on"), [(True, True), ("true", True), (False, False), ("no", False), (None, False)]
)
def test_the_node_config_switches_the_worker_on(value, on):
    config = {} if value is None else {"warm-worker": value}
    assert worker.enabled(config) is on


def test_lock_and_log_stay_while_a_clientapp_holds_the_lock(tmp_path: Path):
    sock = tmp_path / "w.sock"
    for ext in ("sock", "key", "pid", "lock", "log"):
        sock.with_suffix(f".{ext}").write_text(ext)
    with open(sock.with_suffix(".lock")) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a ClientApp starting the next worker
        worker._remove_files(sock)
        assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock", ".log"]
    worker._remove_files(sock)
    assert not list(tmp_path.iterdir())


def test_without_xdg_runtime_dir_the_folder_is_private_in_the_temp_dir(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = os.umask(0o022)
    try:
        folder = worker.private_worker_dir()
    finally:
        os.umask(old)
    assert folder == tmp_path / f"mlecs-worker-{os.getuid()}"
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700
    folder.chmod(0o755)  # e.g. made by someone else's umask: not trusted
    with pytest.raises(OSError, match="private"):
        worker.private_worker_dir()
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)  # planted in a shared /tmp
    with pytest.raises(OSError, match="private"):
        worker.private_worker_dir()


def test_the_start_lock_is_taken_again_when_its_file_was_removed(tmp_path: Path):
    import threading

    lockfile, locked = tmp_path / "w.lock", []

    def starter() -> None:  # a ClientApp waiting to start the next worker
        with worker._locked(lockfile):
            locked.append(lockfile.exists())

    with open(lockfile, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=starter)
        thread.start()
        time.sleep(0.3)
        lockfile.unlink()  # the worker that ended removed its lock file
    thread.join(10)
    assert locked == [True]  # it locked the file now at that path, not the removed one
