"""A node's warm worker: one long-lived process that serves its ClientApp messages.

In deployment, Flower 1.42 starts a fresh ClientApp process for every message,
which then spends seconds importing torch, transformers and peft and building its
device before a second of training. With the node config ``warm-worker=true``
(``deploy/start_supernode.sh`` sets it) the ClientApp process stays thin (Flower
and this module) and hands the message to a worker that the node's first message
starts and its later messages reuse: imports and the built device survive
between rounds; each message still restores the device from ``context.state``,
which travels with the request and back, so nothing changes in what is computed.

Lifetime: the worker belongs to one node and serves every run of that node, one
after another: a later run's messages reach the same worker (the state still
travels with each message), and it keeps only the device of the run it served
last, so a box's memory stays that of one run however many runs it serves. It
exits when the SuperExec that started it (the ClientApp's parent) is gone, after
``warm-worker-idle`` seconds (default 900) without a message, or on SIGTERM; it
stays in the SuperNode's process group, so stopping that group stops it too.
Access: a Unix socket in a directory only this user can enter
(``$XDG_RUNTIME_DIR/mlecs-worker-<uid>``, else the same name in the system temp
dir: a 0700 folder of this user, never a symlink), with an authentication key
(the HMAC challenge of ``multiprocessing.connection``) in a 0600 file; requests
are pickles, so nobody else may reach the socket. A worker that ends removes
its socket, key, PID, lock and log files.
Failure: when the worker cannot be started or reached, or dies during a message,
the ClientApp process handles the message itself (and logs why). An error inside
the worker's handler is raised in the ClientApp, as if it had happened there.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

log = logging.getLogger("mlecs.worker")

APP_DIR = Path(__file__).resolve().parents[1]
KINDS = ("train", "evaluate")
DEFAULT_IDLE = 900.0
START_TIMEOUT = 300.0


class WorkerError(RuntimeError):
    """The worker's handler raised; the message carries its traceback."""


def enabled(node_config: dict) -> bool:
    """Whether this node's messages go to a warm worker (node config ``warm-worker``)."""
    value = node_config.get("warm-worker", False)
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def handle(kind: str, content, context):
    """The reply content of ``kind`` for ``content``, computed by the node's worker.

    Updates ``context.state`` with the worker's. Returns None when the worker
    cannot be used (the caller handles the message itself).

    Raises
    ------
    WorkerError
        When the handler raised inside the worker.
    """
    request = {
        "kind": kind,
        "content": content,
        "run_id": context.run_id,
        "node_id": context.node_id,
        "node_config": dict(context.node_config),
        "run_config": dict(context.run_config),
        "state": context.state,
    }
    try:
        conn = _connect(context)
        with conn:
            conn.send(request)
            status, reply, state = conn.recv()
    except (OSError, EOFError, TimeoutError) as err:
        log.warning("warm worker unavailable (%r); handling the message in this process", err)
        return None
    if status != "ok":
        raise WorkerError(f"the warm worker failed on a {kind} message:\n{reply}")
    for name in list(context.state.keys()):
        del context.state[name]
    for name, record in state.items():
        context.state[name] = record
    return reply


def worker_dir() -> Path:
    """Where workers keep their sockets, keys, PID, lock and log files (one set per node).

    ``$XDG_RUNTIME_DIR/mlecs-worker-<uid>``, or without ``XDG_RUNTIME_DIR`` (a
    system service, cron) the same per-user name in the system temp dir.
    """
    root = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return root / f"mlecs-worker-{os.getuid()}"


def private_worker_dir() -> Path:
    """:func:`worker_dir`, created 0700; refused unless it is this user's private folder.

    Raises
    ------
    OSError
        When the path is a symlink or not a folder, belongs to another user or
        others may enter it (in a shared temp dir anyone may create the name
        first): the ClientApp then handles its messages itself.
    """
    folder = worker_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()  # not stat(): a symlink planted in /tmp is refused
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{folder} is not a folder private to this user")
    return folder


def _paths(context) -> tuple[Path, Path, Path, Path]:
    """Socket, key, lock and log file of this node's worker (the same for every run)."""
    folder = private_worker_dir()
    ident = repr((context.node_id, sorted(context.node_config.items())))
    key = hashlib.sha256(ident.encode()).hexdigest()[:20]
    return tuple(folder / f"{key}.{ext}" for ext in ("sock", "key", "lock", "log"))


def _connect(context) -> Connection:
    """A connection to this node's worker, starting the worker if needed."""
    sock, keyfile, lockfile, logfile = _paths(context)
    with _locked(lockfile):  # one starter at a time per worker
        try:
            return Client(str(sock), family="AF_UNIX", authkey=keyfile.read_bytes())
        except (OSError, EOFError):
            pass
        sock.unlink(missing_ok=True)
        key = secrets.token_bytes(32)
        keyfile.write_bytes(b"")
        keyfile.chmod(0o600)  # before the key is in it
        keyfile.write_bytes(key)
        idle = float(context.node_config.get("warm-worker-idle", DEFAULT_IDLE))
        cmd = [sys.executable, "-m", "client_app.worker", "--socket", str(sock)]
        cmd += ["--key-file", str(keyfile), "--parent-pid", str(os.getppid()), "--idle", str(idle)]
        paths = [str(APP_DIR), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=APP_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise OSError(f"the warm worker exited with {proc.returncode}; see {logfile}")
            if sock.exists():
                try:
                    return Client(str(sock), family="AF_UNIX", authkey=key)
                except (OSError, EOFError):
                    pass
            time.sleep(0.1)
        proc.kill()
        raise TimeoutError(f"the warm worker did not start within {START_TIMEOUT:.0f} s")


@contextmanager
def _locked(lockfile: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``lockfile``, the file that is at that path now.

    A worker that ends removes its lock file (:func:`_remove_files`), so a lock
    taken on a file that was removed meanwhile is dropped and taken again.
    """
    while True:
        with open(lockfile, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(lockfile).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return


def _remove_files(sock: Path) -> None:
    """Remove a worker's socket, key and PID file, and its lock and log file when free.

    The lock and log go only while nobody holds the lock: a ClientApp holding it
    may be starting the next worker, which writes to that log.
    """
    for path in (sock, sock.with_suffix(".pid"), sock.with_suffix(".key")):
        path.unlink(missing_ok=True)
    lockfile, logfile = sock.with_suffix(".lock"), sock.with_suffix(".log")
    try:
        lock = open(lockfile)
    except FileNotFoundError:  # started without a ClientApp (by hand)
        logfile.unlink(missing_ok=True)
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        lockfile.unlink(missing_ok=True)
        logfile.unlink(missing_ok=True)


def serve(sock: Path, key: bytes, parent_pid: int, idle: float) -> None:
    """Answer requests on ``sock`` until the parent is gone or ``idle`` seconds pass."""
    from client_app import handlers  # the heavy imports, once

    handlers.keep_devices(1)  # one node, one device: the current run's
    run = {"train": handlers.run_train, "evaluate": handlers.run_evaluate}
    last = [time.monotonic()]
    busy = threading.Lock()
    pid_file = sock.with_suffix(".pid")

    def leave(*_) -> None:
        _remove_files(sock)
        os._exit(0)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            with busy:
                if not _alive(parent_pid) or time.monotonic() - last[0] > idle:
                    leave()

    signal.signal(signal.SIGTERM, leave)
    listener = Listener(str(sock), family="AF_UNIX", authkey=key)
    pid_file.write_text(str(os.getpid()))
    threading.Thread(target=watchdog, daemon=True).start()
    log.info("warm worker ready on %s (parent %d)", sock, parent_pid)
    while True:
        try:
            conn = listener.accept()
        except Exception as err:  # a failed handshake (wrong key): refuse, keep serving
            log.warning("refused a connection: %r", err)
            continue
        with conn, busy:
            _answer(conn, run)
            last[0] = time.monotonic()


def _answer(conn: Connection, run: dict[str, Callable]) -> None:
    """Answer one request on ``conn``: ``run[kind]``'s reply and state, or the error."""
    from flwr.app import Context

    try:
        req = conn.recv()
        if req.get("kind") not in KINDS:
            raise ValueError(f"unknown message kind {req.get('kind')!r}")
        context = Context(
            run_id=req["run_id"],
            node_id=req["node_id"],
            node_config=req["node_config"],
            state=req["state"],
            run_config=req["run_config"],
        )
        reply = run[req["kind"]](req["content"], context)
        conn.send(("ok", reply, context.state))
    except (EOFError, OSError):
        pass  # the ClientApp went away; it handles the message itself
    except Exception:
        conn.send(("error", traceback.format_exc(), None))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, owned by someone else
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--key-file", type=Path, required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--idle", type=float, default=DEFAULT_IDLE)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of the worker process (started by :func:`handle`, not by hand)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(args.socket, args.key_file.read_bytes(), args.parent_pid, args.idle)


if __name__ == "__main__":
    main()
