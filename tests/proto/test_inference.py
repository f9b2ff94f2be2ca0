"""Cloud inference over gRPC: checkpoint loading, plain and TLS serving, request validation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from client_app.inference_client import CloudClient, device_representations, main, percentiles
from common.model.adapters import SHARED, adapter_state
from common.state import LORA, prefixed
from server_app.checkpoint import (
    Checkpoint,
    StrategySnapshot,
    load_checkpoint,
    save_checkpoint,
)
from server_app.inference_server import (
    MAX_NEW_TOKENS_CAP,
    MAX_PROMPT_CHARS,
    CloudGenerator,
    load_cloud_model,
    run_settings,
    serve,
)

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "model.tiny.hidden": 32,
    "model.tiny.heads": 2,
    "model.tiny.layers": 1,
    "model.tiny.pretrain-steps": 5,
    "data.max-public-train": 16,
    "data.max-public-test": 4,
    "eval.bertscore": False,
    "device": "cpu",
    "run-name": "inf",
}
ROUND = 3


@pytest.fixture(scope="module")
def cloud_run(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run dir with config.json and a checkpoint of an untrained tiny cloud model."""
    from common.settings import RunSettings
    from server_app.cloud import Cloud
    from server_app.recorder import Recorder

    out = tmp_path_factory.mktemp("runs")
    settings = RunSettings.from_run_config(
        {**TINY, "cache-dir": str(cache_dir), "output-dir": str(out)}
    )
    cloud = Cloud(settings)
    recorder = Recorder(settings)
    ids, z = cloud.representations()
    ckpt = Checkpoint(
        global_state=prefixed(adapter_state(cloud.model.lm, SHARED), LORA),
        cloud_state=cloud.state(),
        strategy=StrategySnapshot(server_round=ROUND, anchor_ids=ids, anchors=z),
    )
    save_checkpoint(recorder.dir, ckpt)
    return recorder.dir, cloud


@pytest.fixture(scope="module")
def generator(cloud_run) -> CloudGenerator:
    run_dir, _ = cloud_run
    return CloudGenerator(*load_cloud_model(run_dir))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def servers(generator, tls_files):
    """``(plain port, TLS port)`` of two servers sharing one model."""
    plain, plain_port = serve(generator)
    tls, tls_port = serve(generator, tls_cert=tls_files[0], tls_key=tls_files[1])
    yield plain_port, tls_port
    plain.stop(0).wait()
    tls.stop(0).wait()


def _z(cloud_run, row: int = 0) -> np.ndarray:
    anchors = load_checkpoint(cloud_run[0]).strategy.anchors
    return anchors[row]


def test_settings_come_from_the_run_dir(cloud_run):
    run_dir, cloud = cloud_run
    assert run_settings(run_dir) == cloud.settings
    assert json.loads((run_dir / "config.json").read_text())["run_config"]["run-name"] == "inf"


def test_checkpoint_is_loaded_into_the_model(cloud_run, generator):
    run_dir, cloud = cloud_run
    ckpt = load_checkpoint(run_dir)
    global_state, cloud_state = ckpt.global_state, ckpt.cloud_state
    model = generator.model
    for key, value in model.connector.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), cloud_state["conn/" + key])
    shared = prefixed(adapter_state(model.lm, SHARED), LORA)
    assert shared.keys() == global_state.keys()
    assert generator.info.round == ROUND
    assert generator.info.run_name == "inf"
    assert generator.info.fused_dim == cloud.settings.model.fused_dim


def test_generate_over_plaintext_matches_the_cloud_model(cloud_run, servers):
    _, cloud = cloud_run
    data = cloud.data.public_train
    z = _z(cloud_run, 0)
    expected = cloud.model.generate(cloud.model.make_batch(data, np.array([0])), 6)[0]
    with CloudClient(f"127.0.0.1:{servers[0]}") as client:
        reply = client.generate(z, max_new_tokens=6)
    assert isinstance(reply.text, str) and reply.text
    assert reply.text == expected
    assert (reply.model.run_name, reply.model.round) == ("inf", ROUND)


def test_generate_over_tls(cloud_run, servers, tls_files):
    root = tls_files[0].read_bytes()
    for host in ("127.0.0.1", "localhost"):
        with CloudClient(f"{host}:{servers[1]}", root_cert=root) as client:
            reply = client.generate(_z(cloud_run), prompt="Which activity is this?")
        assert reply.text
        assert reply.model.fused_dim == 256


def test_tls_server_refuses_a_plaintext_client(cloud_run, servers):
    with CloudClient(f"127.0.0.1:{servers[1]}", timeout=5) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.generate(_z(cloud_run))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("z", "kwargs", "code", "details"),
    [
        (np.zeros(10), {}, grpc.StatusCode.INVALID_ARGUMENT, "expected fused_dim 256"),
        (np.zeros(0), {}, grpc.StatusCode.INVALID_ARGUMENT, "expected fused_dim 256"),
        (np.r_[np.nan, np.zeros(255)], {}, grpc.StatusCode.INVALID_ARGUMENT, "1 non-finite"),
        (
            np.r_[np.inf, -np.inf, np.zeros(254)],
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "2 non-finite",
        ),
        (
            np.zeros(256),
            {"max_new_tokens": MAX_NEW_TOKENS_CAP + 1},
            grpc.StatusCode.INVALID_ARGUMENT,
            f"exceeds the cap {MAX_NEW_TOKENS_CAP}",
        ),
        (
            np.zeros(256),
            {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            f"at most {MAX_PROMPT_CHARS}",
        ),
        (
            np.zeros(256),
            {"prompt": "x" * 300},
            grpc.StatusCode.INVALID_ARGUMENT,
            "exceed the model's context",
        ),
        (np.zeros(300_000), {}, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
    ids=[
        "short-z",
        "empty-z",
        "nan",
        "inf",
        "max-new-tokens",
        "prompt-chars",
        "context",
        "oversized",
    ],
)
def test_invalid_requests_get_clear_status_codes(servers, z, kwargs, code, details):
    with CloudClient(f"127.0.0.1:{servers[0]}") as client:
        with pytest.raises(grpc.RpcError) as err:
            client.generate(z, **kwargs)
    assert err.value.code() == code
    assert details in (err.value.details() or "")


def test_latency(cloud_run, servers):
    z = load_checkpoint(cloud_run[0]).strategy.anchors
    times = []
    with CloudClient(f"127.0.0.1:{servers[0]}") as client:
        client.generate(z[0])
        for k in range(50):
            start = time.perf_counter()
            client.generate(z[k % len(z)])
            times.append(time.perf_counter() - start)
    stats = percentiles(times)
    print(f"\ntiny cloud model, 50 requests: p50 {stats['p50']:.1f} ms, p95 {stats['p95']:.1f} ms")
    assert 0 < stats["p50"] <= stats["p95"]


def test_concurrent_requests(cloud_run, servers):
    z = load_checkpoint(cloud_run[0]).strategy.anchors
    prompts = ["", "Which activity is this?", "What is the person doing?"]

    def call(k: int) -> str:
        with CloudClient(f"127.0.0.1:{servers[0]}") as client:
            return client.generate(z[k % 4], prompt=prompts[k % 3], max_new_tokens=3).text

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(call, range(24)))
    assert len(texts) == 24 and all(isinstance(t, str) for t in texts)
    # Greedy decoding: the same request gives the same text under load.
    assert texts[0] == texts[12]


def test_client_command_with_a_z_file(cloud_run, servers, tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, load_checkpoint(cloud_run[0]).strategy.anchors[:3])
    assert (
        main(["--target", f"127.0.0.1:{servers[0]}", "--z-file", str(path), "--repeat", "5"]) == 0
    )
    out = capsys.readouterr().out
    assert "run inf round 3" in out
    assert re.search(r"^\[2\] ", out, re.M)
    assert "5 requests: p50" in out


def test_client_command_reports_a_rejection(servers, tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, np.zeros((1, 7), np.float32))
    assert main(["--target", f"127.0.0.1:{servers[0]}", "--z-file", str(path)]) == 1
    assert "INVALID_ARGUMENT: z has 7 values, expected fused_dim 256" in capsys.readouterr().err


def test_device_representations_are_accepted(cloud_run, servers, capsys):
    run_dir, cloud = cloud_run
    ids, z, targets = device_representations(cloud.settings, 0, 2, samples=3)
    assert z.shape == (3, 256) and ids.shape == (3,) and len(targets) == 3
    assert (
        main(
            [
                "--target",
                f"127.0.0.1:{servers[0]}",
                "--from-device",
                "1",
                "--config",
                str(run_dir / "config.json"),
                "--samples",
                "2",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "(reference: " in captured.out
    assert "no --device-state" in captured.err  # the edge model here is untrained


@pytest.mark.slow
def test_server_command_over_tls(cloud_run, tls_files, cache_dir, capsys):
    # docs/deployment.md's two commands, with the flags it shows (a free port here).
    run_dir, _ = cloud_run
    cmd = [
        sys.executable,
        "-m",
        "server_app.inference_server",
        "--run-dir",
        str(run_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--tls-cert",
        str(tls_files[0]),
        "--tls-key",
        str(tls_files[1]),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 120
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}")
            match = re.search(r"serving inf round 3 .* on 127\.0\.0\.1:(\d+) \(TLS\)", line)
            port = int(match.group(1)) if match else None
        assert port, "server did not report its port"
        root = tls_files[0].read_bytes()
        with CloudClient(f"localhost:{port}", root_cert=root) as client:
            assert client.generate(_z(cloud_run)).text
        config = str(run_dir / "config.json")
        args = ["--target", f"localhost:{port}", "--from-device", "0", "--config", config]
        assert main([*args, "--root-cert", str(tls_files[0]), "--repeat", "6"]) == 0
        assert "6 requests: p50" in capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
