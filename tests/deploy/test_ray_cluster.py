"""`flwr run` simulation on a two-node Ray cluster (docs/ray-cluster.md), on loopback.

A Ray head and a second Ray node run as separate processes (`ray start`), and a
simulation SuperLink whose Ray driver joins that cluster through ``RAY_ADDRESS``,
as the guide says. Ray replaces 127.0.0.1 with the machine's own address, so the
whole cluster runs in a network namespace of its own holding only a loopback
interface (``unshare -n``; every process enters it with ``nsenter``): no traffic
leaves loopback. The run must finish with ClientApp actors on both Ray nodes,
seen as children of each node's raylet while the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.deploy.test_simulation import run_config_arg, run_status

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY_PORT, LINK_PORT, CONTROL_PORT = 6379, 9091, 9093  # free: the namespace is ours alone

pytestmark = pytest.mark.slow


def can_make_namespace() -> bool:
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def namespace():
    """A network namespace with only loopback up; yields a command prefix entering it."""
    if not can_make_namespace():
        if os.environ.get("CI"):
            pytest.fail("cannot make a network namespace (unshare -n, nsenter, ip)")
        pytest.skip("needs unshare -n, nsenter and ip (root or user namespaces)")
    holder = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 3600"],
        start_new_session=True,
    )
    time.sleep(0.5)
    yield ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
    holder.kill()
    holder.wait()


def children_of(ppid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``ppid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            out.append((int(entry.name), cmd))
    return out


def raylets(temp_dir: Path) -> dict[int, str]:
    """raylet pid -> its socket name (``raylet`` for the head, ``raylet.1`` for node 2)."""
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet") and str(temp_dir).encode() in b" ".join(args):
            name = next(a for a in args if a.startswith(b"--raylet_socket_name="))
            out[int(entry.name)] = Path(name.decode().split("=", 1)[1]).name
    return out


def stop_tree(temp_dir: Path, leaders: list[int]) -> None:
    """End what `ray start` and the SuperLink started, by PID: their process groups.

    `ray start` leaves its daemons in process groups of their own; every process
    whose command line names this test's Ray folder is found that way. A process
    still in this test's own group is signalled alone, never the group.
    """
    own = os.getpgrp()
    pids, groups = [], {g for g in leaders if g != own}
    for entry in Path("/proc").iterdir():
        try:
            if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                pid = int(entry.name)
                if os.getpgid(pid) == own:
                    pids.append(pid)
                else:
                    groups.add(os.getpgid(pid))
        except (OSError, ValueError):
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(2)


def test_a_run_places_devices_on_both_ray_nodes(namespace, tmp_path: Path, cache_dir: Path):
    # Prepare: the cluster (head and second node) and a SuperLink joining it
    temp_dir = Path(tempfile.mkdtemp(prefix="mlecs-ray-"))  # Ray's socket paths cap at 107 bytes
    home = tmp_path / "flwr-home"
    (home / "local-superlink").mkdir(parents=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(LINK_PORT),
        "FLWR_LOCAL_CONTROL_API_PORT": str(CONTROL_PORT),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    ns = namespace
    common = ["--num-cpus", "1", "--object-store-memory", "200000000", "--disable-usage-stats"]
    leaders: list[int] = []
    head = [str(BIN / "ray"), "start", "--head", "--port", str(RAY_PORT)]
    head += ["--include-dashboard=false", "--temp-dir", str(temp_dir)]
    node = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{RAY_PORT}"]
    try:
        for cmd in (head + common, node + common):
            done = subprocess.run(ns + cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        # `ray status` reports the autoscaler's view, which lags a node's join by a
        # few seconds on a loaded machine: ask again until both nodes show, or give up.
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run(
                ns + [str(BIN / "ray"), "status", "--address", f"127.0.0.1:{RAY_PORT}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            active = status.stdout.split("Active:")[1].split("Pending:")[0]
            if active.count("node_") == 2 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert active.count("node_") == 2, status.stdout
        link_log = (tmp_path / "superlink.log").open("w")
        link = subprocess.Popen(
            ns
            + [str(BIN / "flower-superlink"), "--insecure", "--simulation"]
            + ["--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(LINK_PORT)]
            + ["--control-api-address", f"127.0.0.1:{CONTROL_PORT}"]
            + ["--database", str(home / "local-superlink" / "state.db")],
            cwd=tmp_path,
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{RAY_PORT}"},
            stdout=link_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        leaders.append(link.pid)
        time.sleep(5)

        # Execute: four virtual devices of one CPU each on two one-CPU nodes
        out_dir = tmp_path / "outputs"
        config = {**TINY, "cache-dir": str(cache_dir)}
        config.update({"output-dir": str(out_dir), "run-name": "cluster"})
        flwr = ns + [str(BIN / "flwr")]
        submit = subprocess.run(
            flwr
            + ["run", ".", "--format", "json", "--federation-config"]
            + ["num-supernodes=4 client-resources-num-cpus=1", "--run-config"]
            + [run_config_arg(config)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        run_id = str(json.loads(submit.stdout)["run-id"])
        seen: set[str] = set()
        status, deadline = "", time.time() + 480
        while not status.startswith("finished") and time.time() < deadline:
            for pid, socket_name in raylets(temp_dir).items():
                if any("ClientAppActor" in cmd for _, cmd in children_of(pid)):
                    seen.add(socket_name)
            status = run_status(env, run_id, tuple(ns))["status"]
            time.sleep(1)

        # Assert
        assert status == "finished:completed", (tmp_path / "superlink.log").read_text()[-3000:]
        assert seen == {"raylet", "raylet.1"}, f"ClientApp actors seen under {seen}"
        rounds = (out_dir / "cluster" / "rounds.jsonl").read_text().splitlines()
        assert [json.loads(r)["round"] for r in rounds] == [1, 2]
    finally:
        stop_tree(temp_dir, leaders)
        shutil.rmtree(temp_dir, ignore_errors=True)
