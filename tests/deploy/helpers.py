"""Helpers of the loopback deployment tests: ports, processes, the ``flwr`` CLI, scripts."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (bind port 0, hold all, release)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, n: int = 60) -> str:
    """The last ``n`` lines of a log file (a placeholder when it is missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; ignore one that is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Processes:
    """Background processes, each in its own session, stopped by process group."""

    def __init__(self, env: dict, cwd: Path, log_dir: Path) -> None:
        self.env, self.cwd, self.log_dir = env, cwd, log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(
        self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        """Start ``cmd`` with its output in ``<log_dir>/<name>.log``."""
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd,
            cwd=cwd or self.cwd,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # pgid == pid: killpg also stops flower-superexec and apps
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        """The log file of process ``name``."""
        return self.log_dir / f"{name}.log"

    def stop_all(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left."""
        for proc in self.procs.values():
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            signal_group(proc.pid, signal.SIGKILL)  # stragglers (and orphaned children)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def run_flwr(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a ``flwr`` CLI command; return the completed process, whatever its status."""
    return subprocess.run(
        ["flwr", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def flwr(env: dict, *args: str, timeout: float = 60) -> str:
    """Run a ``flwr`` CLI command; return stdout (fails the test on a non-zero exit)."""
    out = run_flwr(env, *args, timeout=timeout)
    assert out.returncode == 0, f"flwr {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    """Call ``check()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def json_of(text: str) -> dict:
    """The JSON object in a CLI's output (which may have log lines before it)."""
    return json.loads(text[text.index("{") :])


def script(name: str, *args: object) -> list[str]:
    """Command line of a deploy script."""
    return ["bash", str(DEPLOY / name), *map(str, args)]


def run_script(env: dict, name: str, *args: object) -> None:
    """Run a deploy script to completion; fail with its output on error."""
    out = subprocess.run(
        script(name, *args), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"


def https_status(address: str, method: str, path: str, ca: Path, body: bytes = b"") -> int:
    """HTTP status of one HTTPS request to ``address`` (server checked against ``ca``)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    headers = {"content-type": "application/protobuf"} if method == "POST" else {}
    request = urllib.request.Request(
        f"https://{address}{path}",
        data=body if method == "POST" else None,
        headers=headers,
        method=method,
    )
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0
