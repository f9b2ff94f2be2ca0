"""Smoke test: `flwr run .` in simulation mode, isolated FLWR_HOME and ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config_arg(config: dict) -> str:
    parts = []
    for k, v in config.items():
        if isinstance(v, bool):
            parts.append(f"{k}={str(v).lower()}")
        elif isinstance(v, str):
            parts.append(f'{k}="{v}"')
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


@pytest.fixture
def local_superlink(tmp_path: Path):
    """A simulation SuperLink we start (and stop, by PID) ourselves.

    `flwr run` reuses a healthy SuperLink on FLWR_LOCAL_SUPERLINK_HTTP_API_PORT
    instead of spawning a detached one we could not stop reliably.
    """
    home = tmp_path / "flwr-home"
    (home / "local-superlink").mkdir(parents=True)
    port, control = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (home / "local-superlink" / "superlink.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--control-api-address",
            f"127.0.0.1:{control}",
            "--database",
            str(home / "local-superlink" / "state.db"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_healthy(port, proc)
        yield env
    finally:
        # The SuperLink's process group holds its superexec and the Ray workers.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SuperLink exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("SuperLink did not become healthy")


def run_status(env: dict, run_id: str, prefix: tuple[str, ...] = ()) -> dict:
    """The run's entry of ``flwr ls`` (``prefix``: e.g. ``nsenter`` into a namespace)."""
    out = subprocess.run(
        [*prefix, str(BIN / "flwr"), "ls", "--run-id", run_id, "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)["runs"][0]


@pytest.mark.slow
def test_flwr_run_simulation_completes(local_superlink: dict, tmp_path: Path, cache_dir: Path):
    # Prepare
    out_dir = tmp_path / "outputs"
    config = {
        **TINY,
        "method": "mlecs",
        "cache-dir": str(cache_dir),
        "output-dir": str(out_dir),
        "run-name": "smoke",
        "eval.bertscore": True,
    }
    # Execute: submit the run, then poll its status (--stream exits 0 on failure)
    submit = subprocess.run(
        [
            str(BIN / "flwr"),
            "run",
            ".",
            "--format",
            "json",
            "--federation-config",
            "num-supernodes=3 client-resources-num-cpus=1",
            "--run-config",
            run_config_arg(config),
        ],
        cwd=ROOT,
        env=local_superlink,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    run_id = str(json.loads(submit.stdout)["run-id"])
    deadline = time.time() + 420
    status = run_status(local_superlink, run_id)
    while not status["status"].startswith("finished") and time.time() < deadline:
        time.sleep(3)
        status = run_status(local_superlink, run_id)
    # Assert
    assert status["status"] == "finished:completed", status
    summary = json.loads((out_dir / "smoke" / "summary.json").read_text())
    assert summary["method"] == "mlecs" and summary["dataset"] == "hapt"
    assert set(summary["final"]) >= {
        "client_rouge_lsum",
        "server_rouge_lsum",
        "client_bertscore_f1",
        "server_bertscore_f1",
        "client_f1",
        "server_f1",
    }
    rounds = (out_dir / "smoke" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rounds] == [1, 2]
    assert (out_dir / "smoke" / "metrics.png").stat().st_size > 0
