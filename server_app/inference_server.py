"""gRPC ``CloudInference`` server: the cloud model of a run's latest checkpoint, fed by z.

Run ``python -m server_app.inference_server --run-dir outputs/<run-name> --port 50061``
(add ``--tls-cert cert.pem --tls-key key.pem`` to serve over TLS). A device sends
its fused representation ``z``; the cloud model turns it into a soft prompt,
appends the task (or a custom) prompt and decodes greedily.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import torch

from common.model.factory import cloud_model
from common.model.multimodal import MultimodalLM
from common.model.state import load_cloud_state, load_shared_state
from common.settings import RunSettings
from proto import inference
from server_app.checkpoint import load_checkpoint

MAX_MESSAGE_BYTES = 1 << 20  # z is ~1 kB; anything near this is not a request
MAX_NEW_TOKENS_CAP = 64
MAX_PROMPT_CHARS = 512

log = logging.getLogger("mlecs.inference")


def run_settings(run_dir: Path, overrides: dict[str, object] | None = None) -> RunSettings:
    """Rebuild a run's settings from ``<run_dir>/config.json`` (plus ``overrides``)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())["run_config"]
    return RunSettings.from_run_config({**config, **(overrides or {})})


def load_cloud_model(
    run_dir: Path, overrides: dict[str, object] | None = None
) -> tuple[MultimodalLM, RunSettings, inference.ModelInfo]:
    """Build the cloud model of a run and load its latest checkpoint; no data split is built.

    Mirrors ``Cloud.load_state`` and ``Cloud.load_global`` without loading the
    public data (``task_info`` still reads the dataset's modality specs and the
    tokenizer corpus, which the backbone needs).

    Parameters
    ----------
    run_dir : Path
        ``<output-dir>/<run-name>`` holding ``config.json`` and ``checkpoint.npz``.
    overrides : dict, optional
        Flat run-config keys to replace, e.g. ``{"device": "cpu", "cache-dir": ...}``.

    Returns
    -------
    model : MultimodalLM
        In eval mode.
    settings : RunSettings
    info : ModelInfo
        Provenance and limits reported to clients.
    """
    run_dir = Path(run_dir)
    settings = run_settings(run_dir, overrides)
    ckpt = load_checkpoint(run_dir)
    model = cloud_model(settings)
    load_cloud_state(model, ckpt.cloud_state)
    shares_lora = settings.server.backbone == "edge" and settings.components.federated
    if shares_lora and ckpt.global_state:
        load_shared_state(model, ckpt.global_state)
    model.eval()
    info = inference.ModelInfo(
        run_name=run_dir.name,
        round=ckpt.server_round,
        method=settings.method,
        dataset=settings.dataset,
        fused_dim=settings.model.fused_dim,
        max_new_tokens_cap=MAX_NEW_TOKENS_CAP,
        max_prompt_chars=MAX_PROMPT_CHARS,
    )
    return model, settings, info


class RequestError(ValueError):
    """A request the model cannot serve; the message names what is wrong."""


@dataclass
class Generation:
    """A validated request: ``z`` ``(F,)`` float32, prompt token ids, token budget."""

    z: np.ndarray
    prompt_ids: torch.Tensor
    max_new_tokens: int


class CloudGenerator:
    """Greedy generation from a fused representation; one request at a time."""

    def __init__(self, model: MultimodalLM, settings: RunSettings, info: inference.ModelInfo):
        self.model, self.settings, self.info = model, settings, info
        self.context = getattr(model.lm.config, "max_position_embeddings", None)
        # One request at a time: torch already uses every core, and the tokenizer
        # must not be shared by threads.
        self._lock = threading.Lock()

    def check(self, request: inference.GenerateRequest) -> Generation:
        """Validate ``request`` completely before any model work.

        Raises
        ------
        RequestError
            Wrong dimension, non-finite values, too many tokens or too long a prompt.
        """
        dim = self.info.fused_dim
        z = np.asarray(request.z, np.float32)
        if z.shape != (dim,):
            raise RequestError(f"z has {z.size} values, expected fused_dim {dim}")
        bad = int((~np.isfinite(z)).sum())
        if bad:
            raise RequestError(f"z has {bad} non-finite values")
        new = request.max_new_tokens or self.settings.train.max_new_tokens
        if new > MAX_NEW_TOKENS_CAP:
            raise RequestError(f"max_new_tokens {new} exceeds the cap {MAX_NEW_TOKENS_CAP}")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise RequestError(
                f"prompt has {len(request.prompt)} characters, at most {MAX_PROMPT_CHARS}"
            )
        m = self.model
        if request.prompt:
            tok = m.tokenizer
            with self._lock:  # a fast tokenizer raises "Already borrowed" when shared by threads
                ids = tok(tok.bos_token + request.prompt, add_special_tokens=False).input_ids
            prompt_ids = torch.tensor(ids, device=m.device)
        else:
            prompt_ids = m.prompt_ids
        total = m.connector.soft_tokens + len(prompt_ids) + new
        if self.context is not None and total > self.context:
            raise RequestError(
                f"soft tokens + prompt + max_new_tokens = {total} tokens exceed the "
                f"model's context of {self.context}"
            )
        return Generation(z, prompt_ids, int(new))

    def warm_up(self) -> None:
        """Run one tiny generation, so the first client does not pay for lazy initialisation."""
        dim = self.info.fused_dim
        self.generate(Generation(np.zeros(dim, np.float32), self.model.prompt_ids, 1))

    @torch.no_grad()
    def generate(self, g: Generation) -> str:
        """Text for one validated request (as ``MultimodalLM.generate`` decodes it)."""
        m, tok = self.model, self.model.tokenizer
        with self._lock:
            z = torch.as_tensor(g.z, device=m.device).unsqueeze(0)
            prompt = m.lm.get_input_embeddings()(g.prompt_ids).unsqueeze(0)
            prefix = torch.cat([m.connector.prompt(z).to(prompt.dtype), prompt], 1)
            attn = torch.ones(prefix.shape[:2], dtype=torch.long, device=m.device)
            with m.precision():  # bf16 autocast on CUDA (train.autocast)
                out = m.lm.generate(
                    inputs_embeds=prefix,
                    attention_mask=attn,
                    max_new_tokens=g.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            return tok.decode(out[0], skip_special_tokens=True).strip()


class InferenceService(inference.CloudInferenceServicer):
    """The gRPC face of a :class:`CloudGenerator`: validation errors become INVALID_ARGUMENT."""

    def __init__(self, generator: CloudGenerator) -> None:
        self.generator = generator

    def Generate(self, request, context):  # gRPC names methods in CamelCase
        try:
            g = self.generator.check(request)
        except RequestError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        try:
            text = self.generator.generate(g)
        except Exception:  # a server fault: log it, tell the client only that it failed
            log.exception("generation failed")
            context.abort(grpc.StatusCode.INTERNAL, "generation failed on the server")
        return inference.GenerateResponse(text=text, model=self.generator.info)

    def GetModelInfo(self, request, context):
        return self.generator.info


def serve(
    generator: CloudGenerator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    max_workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Start serving ``generator``; returns the started server and its bound port.

    ``port=0`` picks a free port. Requests above :data:`MAX_MESSAGE_BYTES` are
    refused by gRPC with RESOURCE_EXHAUSTED before reaching the model.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a taken port must fail loudly, not be shared
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    inference.add_servicer(InferenceService(generator), server)
    address = f"{host}:{port}"
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and a key")
    if tls_cert is not None:
        pair = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
        creds = grpc.ssl_server_credentials([pair])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind {address}")
    server.start()
    return server, bound


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`main` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="<output-dir>/<run-name>")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    p.add_argument("--tls-cert", type=Path, help="PEM server certificate (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--cache-dir", help="override the run's cache-dir (backbone, data)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the run's device")
    p.add_argument("--workers", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> None:
    """Command line: load a run's checkpoint and serve until SIGINT / SIGTERM."""
    p = build_parser()
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = {k: v for k, v in (("cache-dir", args.cache_dir), ("device", args.device)) if v}
    model, settings, info = load_cloud_model(args.run_dir, overrides)
    generator = CloudGenerator(model, settings, info)
    generator.warm_up()
    server, port = serve(
        generator,
        args.host,
        args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_workers=args.workers,
    )
    scheme = "TLS" if args.tls_cert else "plaintext"
    log.info(
        "serving %s round %d (%s, fused_dim %d) on %s:%d (%s)",
        info.run_name,
        info.round,
        info.method,
        info.fused_dim,
        args.host,
        port,
        scheme,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    log.info("stopped")


if __name__ == "__main__":
    main()
