"""The deploy scripts in daemon mode, as the "try it" guide runs them (real Flower processes).

``docs/deployment.md`` and ``deploy/README.md`` start the SuperLink, the Fleet proxy
and the SuperNodes with ``--daemon --log-file --pid-file``, register the keys with
``register_nodes.sh --address --ca`` (which writes the CLI connection) and stop
everything with ``deploy/stop.sh``. ``test_deployment.py`` runs the same scripts in
the foreground under its own process manager; this test runs the documented mode:
each script returns once its process is healthy, the node comes online, and
``stop.sh`` leaves nothing behind. About 30 s on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.loopback import flwr, free_ports, json_of, loopback_env, run_script, wait_for

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_daemons_start_register_come_online_and_stop(tmp_path):
    env, node_env = loopback_env(tmp_path)
    demo = tmp_path / "mlecs-demo"
    certs, logs, run = demo / "certs", demo / "logs", demo / "run"
    ca = certs / "ca.crt"
    link_port, proxy_port, node_port = free_ports(3)
    link, edge = f"127.0.0.1:{link_port}", f"127.0.0.1:{proxy_port}"
    run_script(env, "gen_certs.sh", certs, 1)
    try:
        run_script(
            env,
            "start_superlink.sh",
            *("--certs", certs, "--host", "127.0.0.1", "--port", link_port),
            *("--database", demo / "superlink.db"),
            *("--daemon", "--log-file", logs / "superlink.log"),
            *("--pid-file", run / "superlink.pid"),
        )
        run_script(
            env,
            "start_fleet_proxy.sh",
            *("--certs", certs, "--host", "127.0.0.1", "--port", proxy_port, "--upstream", link),
            *("--daemon", "--log-file", logs / "proxy.log", "--pid-file", run / "proxy.pid"),
        )
        # --address writes the connection "mlecs" that the later flwr commands use.
        run_script(env, "register_nodes.sh", "--address", link, "--ca", ca, certs / "keys")
        run_script(
            node_env,
            "start_supernode.sh",
            *("--superlink", edge, "--ca", ca, "--key", certs / "keys" / "supernode-0"),
            *("--partition-id", 0, "--num-partitions", 1, "--port", node_port),
            *("--modalities", "acc,gyro", "--state-dir", demo / "state"),
            *("--daemon", "--log-file", logs / "supernode-0.log"),
            *("--pid-file", run / "supernode-0.pid"),
        )

        def online() -> bool:
            nodes = json_of(flwr(env, "supernode", "list", "mlecs", "--format", "json"))["nodes"]
            return [n["status"] for n in nodes] == ["online"]

        wait_for("the SuperNode online", online, timeout=90, interval=2)
        pids = {f.stem: int(f.read_text()) for f in run.glob("*.pid")}
        assert sorted(pids) == ["proxy", "superlink", "supernode-0"]
        assert all(map(alive, pids.values())), pids
        # Each daemon leads its own process group (stop.sh stops the group).
        assert all(os.getpgid(pid) == pid for pid in pids.values())
        for name in pids:
            assert (logs / f"{name}.log").stat().st_size > 0
    finally:
        files = sorted(run.glob("*.pid")) if run.exists() else []
        if files:
            run_script(env, "stop.sh", "--wait", 20, *files)
    assert not any(map(alive, pids.values())), pids
    assert list(run.glob("*.pid")) == []
