r"""Edge client of ``CloudInference``: send fused representations, get the cloud's text.

From a saved ``z`` (``(F,)`` or ``(N, F)`` ``.npy``)::

    python -m client_app.inference_client --target host:50061 --z-file z.npy

Or computed here from the device's own data, which never leaves it::

    python -m client_app.inference_client --target host:50061 --from-device 0 \
        --config outputs/<run>/config.json --device-state <state-dir>/<run-name>/partition-0.npz

Only the fused representation crosses the network. A device's ``z`` means
something to the cloud model only after SE-CCL has aligned the two fused spaces
(methods ``mlecs``, ``no-amt``, ``no-ccl``, ``no-mma``), and only with the
device's trained encoders and connector (its ``partition-<id>.npz`` state file, written when
the SuperNode's node config names a ``state-dir``); otherwise the text is noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from common.settings import RunSettings
from proto import inference

SECCL_METHODS = ("mlecs", "no-amt", "no-ccl", "no-mma")


class CloudClient:
    """A channel to a ``CloudInference`` server (TLS when ``root_cert`` is given).

    Parameters
    ----------
    target : str
        ``host:port``.
    root_cert : bytes, optional
        PEM certificate(s) the server's certificate must chain to.
    server_name : str, optional
        Name to verify the certificate against, when it differs from the target host.
    timeout : float
        Deadline of each call, seconds.
    """

    def __init__(
        self,
        target: str,
        root_cert: bytes | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        if root_cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_cert)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = inference.CloudInferenceStub(self.channel)
        self.timeout = timeout

    def info(self) -> inference.ModelInfo:
        """Ask the server what it serves (``fused_dim``, limits, run and round)."""
        return self.stub.GetModelInfo(inference.ModelInfoRequest(), timeout=self.timeout)

    def generate(
        self, z: np.ndarray, prompt: str = "", max_new_tokens: int = 0
    ) -> inference.GenerateResponse:
        """Text for one ``(F,)`` fused representation.

        Raises
        ------
        grpc.RpcError
            INVALID_ARGUMENT for a bad request (the details name the problem),
            RESOURCE_EXHAUSTED for one over the server's size limit.
        """
        request = inference.generate_request(z, prompt, max_new_tokens)
        return self.stub.Generate(request, timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def device_representations(
    settings: RunSettings,
    partition_id: int,
    num_partitions: int,
    *,
    modalities: tuple[str, ...] | None = None,
    state_file: Path | None = None,
    samples: int = 8,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fused ``z`` of the first ``samples`` private test samples of one device.

    Builds the device's data and model exactly as its ClientApp does, restores
    its saved local state (encoders, connector, personal adapters) when
    ``state_file`` is given, and runs the encoders and connector locally.

    Parameters
    ----------
    settings : RunSettings
        The run's settings (the same the device trained with).
    partition_id, num_partitions : int
        The device and the number of devices.
    modalities : tuple of str, optional
        The device's modality set, as in its node config.
    state_file : Path, optional
        The device's state file (``<state-dir>/<run-name>/partition-<id>.npz``);
        without it the model is untrained.
    samples : int
        How many test samples to represent.

    Returns
    -------
    ids : numpy.ndarray
        ``(N,)`` int64 sample ids.
    z : numpy.ndarray
        ``(N, fused_dim)`` float32.
    targets : list of str
        The reference texts, for comparison (they stay on the device).
    """
    # Imported here: a client sending a saved z needs neither torch nor the data.
    from client_app.device import Device, DeviceIdentity
    from common.exchange import GlobalPayload
    from common.learning.evaluation import fused_representations
    from common.model.state import load_state

    device = Device(settings, DeviceIdentity(partition_id, num_partitions, modalities))
    local = load_state(state_file) if state_file is not None else None
    device.restore(local, GlobalPayload())
    test = device.data.test.subset(np.arange(min(samples, len(device.data.test))))
    ids, z = fused_representations(device.model, test)
    return ids, z, list(test.targets)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """``p50``, ``p95`` and ``mean`` of latencies, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
    }


def _settings(config: Path, overrides: dict[str, object]) -> RunSettings:
    raw = json.loads(config.read_text())
    flat = raw.get("run_config", raw)  # a run dir's config.json, or a flat run config
    return RunSettings.from_run_config({**flat, **overrides})


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.z_file is not None:
        z, targets = np.atleast_2d(np.load(args.z_file).astype(np.float32)), []
    else:
        if args.config is None:
            parser.error("--from-device needs --config")
        z, targets = _from_device(args)
    times = _ask(args, z, targets)
    if times is None:
        return 1
    stats = percentiles(times)
    print(
        f"{len(times)} requests: p50 {stats['p50']:.1f} ms, p95 {stats['p95']:.1f} ms, "
        f"mean {stats['mean']:.1f} ms"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the inference server")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--z-file", type=Path, help=".npy of shape (F,) or (N, F)")
    src.add_argument(
        "--from-device",
        type=int,
        metavar="PARTITION_ID",
        help="compute z here from this device's own test data",
    )
    p.add_argument("--config", type=Path, help="run config JSON (a run dir's config.json)")
    p.add_argument("--num-partitions", type=int, default=2)
    p.add_argument("--modalities", help="the device's modality set, e.g. acc,gyro")
    p.add_argument(
        "--device-state",
        type=Path,
        help="the device's state file, <state-dir>/<run-name>/partition-<id>.npz",
    )
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--cache-dir", help="override the run's cache-dir")
    p.add_argument("--prompt", default="", help="text after the soft tokens (default: task)")
    p.add_argument("--max-new-tokens", type=int, default=0, help="0: the run's default")
    p.add_argument("--root-cert", type=Path, help="PEM CA certificate: use TLS")
    p.add_argument("--server-name", help="certificate name to expect, if not the target host")
    p.add_argument("--repeat", type=int, default=1, help="requests to send, for latency")
    p.add_argument("--timeout", type=float, default=30.0)
    return p


def _from_device(args: argparse.Namespace) -> tuple[np.ndarray, list[str]]:
    """``z`` and reference texts of ``--from-device``'s test samples (warnings on stderr)."""
    overrides = {"cache-dir": args.cache_dir} if args.cache_dir else {}
    settings = _settings(args.config, overrides)
    if settings.method not in SECCL_METHODS:
        print(
            f"warning: method '{settings.method}' does not align edge and cloud z "
            "(no SE-CCL): expect meaningless text",
            file=sys.stderr,
        )
    if args.device_state is None:
        print("warning: no --device-state: z comes from an untrained edge model", file=sys.stderr)
    mods = tuple(args.modalities.split(",")) if args.modalities else None
    _, z, targets = device_representations(
        settings,
        args.from_device,
        args.num_partitions,
        modalities=mods,
        state_file=args.device_state,
        samples=args.samples,
    )
    return z, targets


def _ask(args: argparse.Namespace, z: np.ndarray, targets: list[str]) -> list[float] | None:
    """Send each row of ``z`` (``--repeat`` requests at least); print the answers.

    Returns each request's seconds, or None (the error printed) when a call fails.
    """
    root = args.root_cert.read_bytes() if args.root_cert else None
    with CloudClient(args.target, root, args.server_name, args.timeout) as client:
        times: list[float] = []
        try:
            info = client.info()
            print(
                f"server: run {info.run_name} round {info.round} ({info.method} on "
                f"{info.dataset}), fused_dim {info.fused_dim}"
            )
            for k in range(max(args.repeat, len(z))):
                row = k % len(z)
                start = time.perf_counter()
                reply = client.generate(z[row], args.prompt, args.max_new_tokens)
                times.append(time.perf_counter() - start)
                if k < len(z):
                    ref = f"  (reference: {targets[row]})" if targets else ""
                    print(f"[{row}] {reply.text}{ref}")
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return None
    return times


if __name__ == "__main__":
    sys.exit(main())
