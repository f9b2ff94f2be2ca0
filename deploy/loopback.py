"""A whole deployment on loopback: certificates, SuperLink, Fleet proxy, SuperNodes.

Used by the deployment tests and by ``benchmarks.deploy_round``. Everything is
started through the ``deploy/`` scripts, like on real hosts, on free loopback
ports, with its own ``FLWR_HOME``; every process runs in its own session and is
stopped by its process group (:meth:`Processes.stop_all`): the SuperNodes first,
then the Fleet proxy, then the SuperLink.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TERMINAL = ("finished:completed", "finished:failed", "finished:stopped")
# Stopped last, in this order: SuperNodes sign off with the SuperLink through the
# proxy when they stop; a SuperLink stopped first keeps listing them online.
STOP_LAST = ("fleet-proxy", "superlink")


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

    def stop_all(self, last: tuple[str, ...] = STOP_LAST) -> None:
        """Stop every process group: all but ``last`` first, then each of ``last`` in turn.

        Each wave gets SIGTERM and up to 20 s to exit before the next one is
        stopped; whatever is left at the end gets SIGKILL. By default the
        SuperNodes (and anything else) go first, then the Fleet proxy, then the
        SuperLink, so the SuperNodes can sign off.
        """
        first = [name for name in self.procs if name not in last]
        for wave in [first, *([name] for name in last if name in self.procs)]:
            self._terminate([self.procs[name] for name in wave], timeout=20)
        for proc in self.procs.values():
            signal_group(proc.pid, signal.SIGKILL)  # stragglers (and orphaned children)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _terminate(procs: list[subprocess.Popen], timeout: float) -> None:
        """SIGTERM the process groups of ``procs``; wait up to ``timeout`` s for them."""
        for proc in procs:
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def run_flwr(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a ``flwr`` CLI command; return the completed process, whatever its status."""
    return subprocess.run(
        ["flwr", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def flwr(env: dict, *args: str, timeout: float = 60) -> str:
    """Run a ``flwr`` CLI command; return stdout (raise on a non-zero exit)."""
    out = run_flwr(env, *args, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"flwr {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    """Call ``check()`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def json_of(text: str) -> dict:
    """The JSON object in a CLI's output (which may have log lines before it)."""
    return json.loads(text[text.index("{") :])


def script(name: str, *args: object) -> list[str]:
    """Command line of a deploy script."""
    return ["bash", str(DEPLOY / name), *map(str, args)]


def run_script(env: dict, name: str, *args: object) -> None:
    """Run a deploy script to completion; raise with its output on error."""
    out = subprocess.run(
        script(name, *args), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stdout}\n{out.stderr}")


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


def loopback_env(tmp: Path) -> tuple[dict, dict]:
    """Environments for the operator's commands and for SuperNodes (own ``FLWR_HOME``).

    Several SuperNodes and the SuperLink share this host's cores: one torch thread
    per ClientApp process avoids oversubscription (on a 2-core box rounds took
    60-75 s instead of 42-50 s without it).
    """
    venv_bin = str(Path(sys.executable).parent)
    runtime = tmp / "xdg-runtime"  # the SuperNodes' warm workers keep their sockets here
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLECS_VENV"},
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "FLWR_HOME": str(tmp / "flwr"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "XDG_RUNTIME_DIR": str(runtime),
    }
    return env, {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_federation(
    procs: Processes,
    tmp: Path,
    num_nodes: int,
    node_env: dict,
    connection: str = "mlecs-loopback",
    edge_connection: str = "mlecs-edge",
    profiles: dict[int, str] | None = None,
) -> dict:
    """Certificates, SuperLink (TLS + node auth), Fleet proxy, keys, ``num_nodes`` SuperNodes.

    ``profiles`` gives SuperNode ``i`` the device profile ``profiles[i]`` (``--profile``).

    Returns the addresses and paths the caller needs: ``ca``, ``certs``,
    ``address`` (the SuperLink, operator only), ``edge`` (the proxy, for edge
    boxes), ``connection`` / ``edge_connection`` (``flwr`` CLI connections) and
    ``spare_port`` (a free port for one more SuperNode). Raises when a part does
    not come up; the caller stops ``procs`` in any case.
    """
    env = procs.env
    certs, ca = tmp / "certs", tmp / "certs" / "ca.crt"
    link_port, proxy_port, *node_ports = free_ports(3 + num_nodes)
    address, edge = f"127.0.0.1:{link_port}", f"127.0.0.1:{proxy_port}"
    # (a) CA, SuperLink certificate, node keys; the CLI connections
    run_script(env, "gen_certs.sh", certs, num_nodes)
    run_script(env, "write_connection.sh", connection, address, ca)
    run_script(env, "write_connection.sh", edge_connection, edge, ca)
    # (b) SuperLink (the script execs it, so its PID is the script's), then the proxy
    pid_file = tmp / "superlink.pid"
    link = procs.start(
        "superlink",
        script(
            "start_superlink.sh",
            *("--certs", certs, "--host", "127.0.0.1", "--port", link_port),
            *("--database", tmp / "superlink" / "state.db", "--pid-file", pid_file),
        ),
    )
    proxy = procs.start(
        "fleet-proxy",
        script(
            "start_fleet_proxy.sh",
            *("--certs", certs, "--host", "127.0.0.1", "--port", proxy_port),
            *("--upstream", address, "--pid-file", tmp / "proxy.pid"),
        ),
    )

    def superlink_up() -> bool:
        if link.poll() is not None:
            raise RuntimeError(f"SuperLink exited:\n{tail(procs.log('superlink'))}")
        out = run_flwr(env, "supernode", "list", connection, "--format", "json", timeout=30)
        return '"success": true' in out.stdout

    def proxy_up() -> bool:
        if proxy.poll() is not None:
            raise RuntimeError(f"proxy exited:\n{tail(procs.log('fleet-proxy'))}")
        return https_status(edge, "GET", "/health", ca) == 200

    wait_for("the SuperLink", superlink_up, timeout=60)
    wait_for("the Fleet proxy", proxy_up, timeout=60)
    if pid_file.read_text().strip() != str(link.pid):
        raise RuntimeError("start_superlink.sh wrote a PID that is not the SuperLink's")
    # (c) register the keys (operator port), start the SuperNodes (edge address)
    run_script(env, "register_nodes.sh", "--connection", connection, certs / "keys")
    for i in range(num_nodes):
        procs.start(
            f"supernode-{i}",
            script(
                "start_supernode.sh",
                *("--superlink", edge, "--ca", ca, "--key", certs / "keys" / f"supernode-{i}"),
                *("--port", node_ports[i], "--partition-id", i, "--num-partitions", num_nodes),
                *("--pid-file", tmp / f"supernode-{i}.pid"),
                *(("--profile", profiles[i]) if i in (profiles or {}) else ()),
            ),
            env=node_env,
        )

    def nodes_online() -> bool:
        for name, proc in procs.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{tail(procs.log(name))}")
        nodes = json_of(flwr(env, "supernode", "list", connection, "--format", "json"))["nodes"]
        return sum(n["status"] == "online" for n in nodes) == num_nodes

    wait_for(f"{num_nodes} SuperNodes online", nodes_online, timeout=90, interval=2)
    return {
        "ca": ca,
        "certs": certs,
        "address": address,
        "edge": edge,
        "connection": connection,
        "edge_connection": edge_connection,
        "spare_port": node_ports[-1],
    }


def run_id_of(env: dict, connection: str, stream_log: str) -> str:
    """The run id in ``flwr run`` output, else the only run on the SuperLink."""
    match = re.search(r"run[_ ]id\D{0,4}(\d{5,})", stream_log, re.IGNORECASE)
    if match:
        return match.group(1)
    runs = json_of(flwr(env, "ls", connection, "--format", "json"))["runs"]
    if len(runs) != 1:
        raise RuntimeError(f"cannot tell the run id: {runs}")
    return str(runs[0]["run-id"])


def final_status(env: dict, connection: str, run_id: str, timeout: float = 120) -> dict:
    """The run's status once it is terminal (``flwr run --stream`` exits 0 on a failed run)."""

    def terminal() -> dict | None:
        info = json_of(flwr(env, "ls", connection, "--run-id", run_id, "--format", "json"))
        status = info["runs"][0]
        return status if status["status"] in TERMINAL else None

    return wait_for(f"run {run_id} to finish", terminal, timeout=timeout, interval=2)


def submit_run(
    procs: Processes, connection: str, name: str, config: str, timeout: float, app: Path = REPO
) -> tuple[float, str]:
    """``flwr run APP CONNECTION --run-config CONFIG --stream`` to its end, like an operator.

    Returns
    -------
    seconds : float
        From submission to the end of the stream.
    log : str
        What ``flwr run`` printed.

    Raises
    ------
    RuntimeError
        When the run does not end within ``timeout`` or ends other than completed
        (``--stream`` exits 0 on a failed run, so the SuperLink is asked).
    """
    started = time.monotonic()
    cmd = ["flwr", "run", str(app), connection, "--run-config", config, "--stream"]
    run = procs.start(name, cmd, cwd=REPO)
    try:
        run.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log = tail(procs.log(name), 80)
        raise RuntimeError(f"{name} did not end within {timeout:.0f} s:\n{log}") from None
    seconds = time.monotonic() - started
    text = procs.log(name).read_text(errors="replace")
    status = final_status(procs.env, connection, run_id_of(procs.env, connection, text))
    if status["status"] != "finished:completed":
        raise RuntimeError(f"{name} ended {status['status']}:\n{text[-5000:]}")
    return seconds, text
