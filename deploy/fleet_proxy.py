"""A reverse proxy that exposes only the SuperLink's Fleet API to edge boxes.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (``flwr run``,
``flwr ls``, ``flwr supernode register``, ...) and the Runtime API (the
ServerApp) on one HTTPS port, and its open-source edition has no account login
on the Control API. Anyone who can reach that port and holds ``ca.crt`` (every
edge box has it) could list runs, submit an app or register a SuperNode key.

Run the SuperLink on ``127.0.0.1`` (the operator's port) and this proxy on the
address edge boxes use. It terminates TLS with the SuperLink's own certificate
(``server.pem``/``server.key``) and forwards to the SuperLink, over TLS checked
against ``ca.crt``, only:

* ``POST`` to the Fleet routes a key-authenticated SuperNode calls
  (:data:`FLEET_ROUTES`),
* ``GET``/``HEAD /health``.

Everything else (``/v1/control/*``, ``/v1/runtime/*``, ``/docs``, ``/openapi.json``,
Fleet self-registration) gets ``403`` and a log line naming the client. It needs
only packages Flower already depends on (uvicorn, httpx)::

    python deploy/fleet_proxy.py --certs certs --port 8000 --upstream 127.0.0.1:9093

``deploy/start_fleet_proxy.sh`` wraps it like the other scripts (``--daemon``,
``--pid-file``).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

LOG = logging.getLogger("fleet_proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Every call of a SuperNode that authenticates with a registered key
# (flwr/supernode/fleet_http_client.py, flwr 1.42). ``register-node`` and
# ``unregister-node`` are used only by SuperNodes without a key (the SuperLink
# refuses both when --enable-supernode-auth is on), so they are not forwarded.
FLEET_ROUTES = frozenset(
    f"/v1/fleet/{name}"
    for name in (
        "activate-node",
        "deactivate-node",
        "send-node-heartbeat",
        "pull-messages",
        "push-messages",
        "get-run",
        "get-fab",
        "push-object",
        "pull-object",
        "confirm-message-received",
    )
)
HEALTH = "/health"
# Largest request body forwarded: Flower sends arrays in 5 MiB chunks
# (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE), so 32 MiB leaves a wide margin.
MAX_BODY = 32 * 1024 * 1024
# Not forwarded in either direction (RFC 9110 section 7.6.1), plus what is recomputed.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def allowed(method: str, path: str) -> bool:
    """Whether the proxy forwards a ``method`` request for ``path``.

    Parameters
    ----------
    method : str
        HTTP method, upper case.
    path : str
        Request path, without the query string.

    Returns
    -------
    bool
        True for ``POST`` to a Fleet route and ``GET``/``HEAD`` of ``/health``.
    """
    if path == HEALTH:
        return method in ("GET", "HEAD")
    return method == "POST" and path in FLEET_ROUTES


def _headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """End-to-end headers of ``raw`` (hop-by-hop ones and the length dropped)."""
    out = []
    for key, value in raw:
        name = key.decode("latin-1").lower()
        if name not in HOP_BY_HOP:
            out.append((name, value.decode("latin-1")))
    return out


class FleetProxy:
    """ASGI application forwarding the allowed routes to the SuperLink.

    Parameters
    ----------
    upstream : str
        Base URL of the SuperLink, e.g. ``https://127.0.0.1:9093``.
    client : httpx.AsyncClient
        Client for the upstream requests (TLS verification configured on it).
    max_body : int
        Requests with a larger body are refused with ``413``.
    """

    def __init__(self, upstream: str, client: httpx.AsyncClient, max_body: int = MAX_BODY):
        self.upstream = upstream.rstrip("/")
        self.client = client
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        host, port = scope.get("client") or ("?", "?")
        peer = f"{host}:{port}"
        if not allowed(method, path):
            LOG.warning("refused %s %s from %s (not a Fleet API route)", method, path, peer)
            await _respond(send, 403, b"Forbidden: only the Fleet API is served on this address\n")
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            LOG.warning(
                "refused %s %s from %s (body over %d bytes)", method, path, peer, self.max_body
            )
            await _respond(send, 413, b"Request body too large\n")
            return
        url = self.upstream + path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(
            method, url, headers=_headers(scope["headers"]), content=body
        )
        try:
            response = await self.client.send(request)  # read whole (decoded)
        except httpx.HTTPError as err:
            LOG.error("upstream error for %s %s from %s: %r", method, path, peer, err)
            await _respond(send, 502, b"Bad gateway: the SuperLink did not answer\n")
            return
        headers = [
            (k, v)
            for k, v in _headers(response.headers.raw)
            if k != "content-encoding"  # the body is forwarded decoded
        ]
        await _respond(send, response.status_code, response.content, headers)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
) -> None:
    """Send a complete response with a ``content-length``."""
    if headers is None:
        headers = [("content-type", "text/plain; charset=utf-8")]
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _host_port(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 hosts in brackets)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments.

    Returns
    -------
    argparse.ArgumentParser
        The parser :func:`parse_args` uses; ``tests/test_docs_commands.py`` checks the
        documented commands against it.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--certs", type=Path, default=Path("certs"), help="ca.crt, server.pem, server.key"
    )
    p.add_argument("--host", default="0.0.0.0", help="address edge boxes connect to")
    p.add_argument("--port", type=int, default=8000, help="port edge boxes connect to")
    p.add_argument(
        "--upstream",
        type=_host_port,
        default=("127.0.0.1", 9093),
        help="the SuperLink's HOST:PORT (bound to 127.0.0.1)",
    )
    p.add_argument("--max-body", type=int, default=MAX_BODY, help="largest request body, bytes")
    p.add_argument("--timeout", type=float, default=120.0, help="upstream timeout, seconds")
    p.add_argument("--access-log", action="store_true", help="log every forwarded request")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the proxy."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the proxy until interrupted."""
    import uvicorn  # a Flower dependency

    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.access_log:  # httpx logs every upstream request at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)
    certs = args.certs
    for name in ("ca.crt", "server.pem", "server.key"):
        if not (certs / name).is_file():
            sys.exit(f"fleet_proxy: {certs / name} not found")
    up_host, up_port = args.upstream
    upstream = f"https://{'[' + up_host + ']' if ':' in up_host else up_host}:{up_port}"
    verify = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    client = httpx.AsyncClient(verify=verify, timeout=args.timeout, follow_redirects=False)
    LOG.info(
        "Fleet API on https://%s:%s -> %s (Control and Runtime APIs refused)",
        args.host,
        args.port,
        upstream,
    )
    uvicorn.run(
        FleetProxy(upstream, client, args.max_body),
        host=args.host,
        port=args.port,
        ssl_certfile=str(certs / "server.pem"),
        ssl_keyfile=str(certs / "server.key"),
        access_log=args.access_log,
        server_header=False,
        log_level="info",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
