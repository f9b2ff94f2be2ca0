"""The deploy scripts' own behaviour, with stand-ins for Flower's commands (seconds).

* stopping: SuperNodes first, then the Fleet proxy, then the SuperLink, each stage
  waited for (``deploy/stop.sh`` and ``deploy.loopback.Processes.stop_all``);
* the SuperLink's and SuperNodes' files are private to their user (umask 077).

The real processes are in ``test_deployment.py``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.loopback import DEPLOY, Processes

# A stand-in daemon: logs "<name> term" on SIGTERM, takes a moment to sign off,
# then logs "<name> done". Its command line holds its file name, as Flower's do.
DAEMON = """#!/usr/bin/env bash
trap 'echo "$NAME term" >>"$ORDER"; sleep 0.4; echo "$NAME done" >>"$ORDER"; exit 0' TERM
while :; do sleep 0.05; done
"""
# A stand-in for flower-superlink / flower-supernode in the foreground: records the
# umask it runs under and creates its --database like SQLite (mode 0666 & ~umask).
RECORDER = """#!/usr/bin/env python3
import os, sys
mask = os.umask(0); os.umask(mask)
open(os.environ["UMASK_FILE"], "w").write(oct(mask))
if "--database" in sys.argv:
    db = sys.argv[sys.argv.index("--database") + 1]
    os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o666))
"""


def stand_in(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def terminations(order: Path) -> list[str]:
    return order.read_text().split("\n")[:-1] if order.exists() else []


def assert_stopped_in_order(lines: list[str]) -> None:
    """Every SuperNode is done before the proxy is asked, the proxy before the SuperLink."""
    assert sorted(lines) == sorted(
        f"{n} {e}" for n in ("node-0", "node-1", "proxy", "link") for e in ("term", "done")
    ), lines
    at = {line: i for i, line in enumerate(lines)}
    assert max(at["node-0 done"], at["node-1 done"]) < at["proxy term"], lines
    assert at["proxy done"] < at["link term"], lines


@pytest.fixture
def daemons(tmp_path: Path):
    """Stand-ins for a SuperLink, a proxy and two SuperNodes, started in that order."""
    bin_dir, order = tmp_path / "bin", tmp_path / "order.txt"
    roles = {
        "link": "flower-superlink",
        "proxy": "fleet_proxy.py",
        "node-0": "flower-supernode",
        "node-1": "flower-supernode",
    }
    procs = {}
    for name, command in roles.items():
        exe = stand_in(bin_dir, command, DAEMON)
        env = {**os.environ, "NAME": name, "ORDER": str(order)}
        procs[name] = subprocess.Popen([str(exe)], env=env, start_new_session=True)
    time.sleep(0.3)  # traps installed
    yield procs, order
    for proc in procs.values():
        proc.kill()
        proc.wait()


def test_stop_sh_stops_the_supernodes_first_and_the_superlink_last(tmp_path: Path, daemons):
    procs, order = daemons
    run = tmp_path / "run"
    run.mkdir()
    files = {
        "link": "superlink",
        "proxy": "proxy",
        "node-0": "supernode-0",
        "node-1": "supernode-1",
    }
    for name, file in files.items():
        (run / f"{file}.pid").write_text(f"{procs[name].pid}\n")
    bystander = subprocess.Popen(["sleep", "30"])  # a stale PID file's reused PID
    (run / "stale.pid").write_text(str(bystander.pid))
    (run / "gone.pid").write_text("999999999")
    try:
        # The documented loop's glob gives proxy, superlink, supernode-*: the wrong order.
        pid_files = sorted(str(p) for p in run.glob("*.pid"))
        out = subprocess.run(
            ["bash", str(DEPLOY / "stop.sh"), "--wait", "10", *pid_files],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert_stopped_in_order(terminations(order))
        assert all(p.wait(timeout=5) == 0 for p in procs.values())
        assert bystander.poll() is None, "a process that is no daemon of ours was stopped"
        assert sorted(p.name for p in run.iterdir()) == ["stale.pid"]
    finally:
        bystander.kill()
        bystander.wait()


def test_loopback_stop_all_stops_the_supernodes_first_and_the_superlink_last(tmp_path: Path):
    bin_dir, order = tmp_path / "bin", tmp_path / "order.txt"
    (tmp_path / "logs").mkdir()
    procs = Processes(dict(os.environ), tmp_path, tmp_path / "logs")
    names = {"superlink": "link", "fleet-proxy": "proxy", "supernode-0": "node-0"}
    names["supernode-1"] = "node-1"
    for name, label in names.items():
        exe = stand_in(bin_dir, f"{name}-daemon", DAEMON)
        procs.start(name, [str(exe)], env={**os.environ, "NAME": label, "ORDER": str(order)})
    time.sleep(0.3)
    procs.stop_all()
    assert_stopped_in_order(terminations(order))


@pytest.mark.parametrize("role", ["superlink", "supernode"])
def test_the_daemons_write_private_files(tmp_path: Path, role: str):
    certs, bin_dir = tmp_path / "certs", tmp_path / "bin"
    (certs / "keys").mkdir(parents=True)
    for name in ("ca.crt", "server.pem", "server.key", "keys/supernode-0"):
        (certs / name).write_text("stand-in")
    stand_in(bin_dir, f"flower-{role}", RECORDER.replace("python3", Path(sys.executable).name))
    stale_db = tmp_path / "old" / "state.db"
    stale_db.parent.mkdir()
    stale_db.write_text("")
    stale_db.chmod(0o644)  # written before, under umask 022
    path = [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
    env = {**os.environ, "PATH": os.pathsep.join(path), "UMASK_FILE": str(tmp_path / "umask")}
    env.pop("MLECS_VENV", None)
    if role == "superlink":
        db = tmp_path / "new" / "superlink" / "state.db"
        args = [["--certs", certs, "--database", db], ["--certs", certs, "--database", stale_db]]
    else:
        db = None
        args = [["--ca", certs / "ca.crt", "--partition-id", 0, "--num-partitions", 1]]
        args[0] += ["--state-dir", tmp_path / "state"]
    old = os.umask(0o022)
    try:
        for extra in args:
            out = subprocess.run(
                ["bash", str(DEPLOY / f"start_{role}.sh"), *map(str, extra)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            assert (tmp_path / "umask").read_text() == "0o77"
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    if role == "superlink":
        assert mode(db) == 0o600 and mode(db.parent) == 0o700
        assert mode(stale_db) == 0o600
    else:
        assert mode(tmp_path / "state") == 0o700


def test_a_supernode_takes_a_device_profile_and_refuses_an_unknown_one(tmp_path: Path):
    certs, bin_dir, argv_file = tmp_path / "certs", tmp_path / "bin", tmp_path / "argv"
    (certs / "keys").mkdir(parents=True)
    for name in ("ca.crt", "keys/supernode-0"):
        (certs / name).write_text("stand-in")
    stand_in(
        bin_dir, "flower-supernode", f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {argv_file}\n'
    )
    path = [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    env.pop("MLECS_VENV", None)
    base = ["bash", str(DEPLOY / "start_supernode.sh"), "--ca", str(certs / "ca.crt")]
    base += ["--partition-id", "0", "--num-partitions", "2", "--profile"]

    ok = subprocess.run([*base, "sbc-2gb"], env=env, capture_output=True, text=True, timeout=60)
    bad = subprocess.run([*base, "nope"], env=env, capture_output=True, text=True, timeout=60)

    assert ok.returncode == 0, ok.stdout + ok.stderr
    args = argv_file.read_text().splitlines()
    assert 'profile="sbc-2gb"' in args[args.index("--node-config") + 1]
    assert bad.returncode != 0
    assert "unknown --profile 'nope' (known: jetson-orin phone sbc-2gb sbc-8gb" in bad.stderr
