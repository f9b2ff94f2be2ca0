"""The Fleet-only reverse proxy (deploy/fleet_proxy.py), in process.

The proxy runs as an ASGI app behind ``httpx.ASGITransport``; the SuperLink is
an ``httpx.MockTransport`` that records what reaches it. The end-to-end check
(real SuperLink, SuperNodes and ``flwr`` CLI through the proxy over TLS) is in
``test_deployment.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import httpx
import pytest

PROXY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "fleet_proxy.py"
_spec = importlib.util.spec_from_file_location("fleet_proxy", PROXY_FILE)
fleet_proxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fleet_proxy)

UPSTREAM = "https://127.0.0.1:9093"
# What a SuperNode with a registered key calls (flwr 1.42 fleet_http_client.py).
SUPERNODE_CALLS = [
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
]
REFUSED = [
    ("POST", "/v1/control/list-runs"),  # flwr ls
    ("POST", "/v1/control/start-run"),  # flwr run
    ("POST", "/v1/control/stop-run"),
    ("POST", "/v1/control/register-node"),  # flwr supernode register
    ("POST", "/v1/control/list-nodes"),
    ("POST", "/v1/control/stream-logs"),
    ("POST", "/v1/runtime/pull-messages"),  # the ServerApp's Runtime API
    ("POST", "/v1/runtime/get-nodes"),
    ("POST", "/v1/fleet/register-node"),  # self-registration (keyless SuperNodes)
    ("POST", "/v1/fleet/unregister-node"),
    ("GET", "/v1/fleet/pull-messages"),
    ("POST", "/v1/fleet/pull-messages/"),
    ("POST", "/v1/fleet/../control/list-runs"),
    ("POST", "/V1/FLEET/PULL-MESSAGES"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("POST", "/health"),
    ("GET", "/"),
]


class Upstream:
    """A fake SuperLink: records requests, answers with a fixed protobuf-like body."""

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[httpx.Request] = []
        self.fail = fail

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        return httpx.Response(
            200,
            content=b"\x08\x01reply",
            headers={"content-type": "application/protobuf", "x-flwr-test": "yes"},
        )


def call(
    method: str,
    path: str,
    upstream: Upstream,
    body: bytes = b"",
    headers: dict | None = None,
    max_body: int = fleet_proxy.MAX_BODY,
) -> httpx.Response:
    """One request through a fresh proxy in front of ``upstream``."""

    async def go() -> httpx.Response:
        backend = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
        app = fleet_proxy.FleetProxy(UPSTREAM, backend, max_body)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://edge") as client:
            response = await client.request(method, path, content=body, headers=headers)
        await backend.aclose()
        return response

    return asyncio.run(go())


@pytest.mark.parametrize("name", SUPERNODE_CALLS)
def test_supernode_calls_are_forwarded(name):
    upstream = Upstream()
    headers = {
        "content-type": "application/protobuf",
        "flwr-public-key": "cHVibGlj",
        "flwr-signature": "c2ln",
        "proxy-authorization": "Basic eDp5",
        "keep-alive": "timeout=5",
    }
    response = call("POST", f"/v1/fleet/{name}", upstream, b"\x0a\x03abc", headers)
    assert response.status_code == 200
    assert response.content == b"\x08\x01reply"
    assert response.headers["x-flwr-test"] == "yes"
    (seen,) = upstream.requests
    assert str(seen.url) == f"{UPSTREAM}/v1/fleet/{name}"
    assert seen.method == "POST" and seen.content == b"\x0a\x03abc"
    # node-auth headers reach the SuperLink unchanged; hop-by-hop headers do not
    assert seen.headers["flwr-public-key"] == "cHVibGlj"
    assert seen.headers["flwr-signature"] == "c2ln"
    assert seen.headers["host"] == "127.0.0.1:9093"
    assert "proxy-authorization" not in seen.headers and "keep-alive" not in seen.headers


def test_health_is_forwarded():
    upstream = Upstream()
    assert call("GET", "/health", upstream).status_code == 200
    assert call("HEAD", "/health", upstream).status_code == 200
    assert [r.method for r in upstream.requests] == ["GET", "HEAD"]


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_everything_else_is_refused(method, path):
    upstream = Upstream()
    response = call(method, path, upstream, b"\x0a\x00")
    assert response.status_code == 403
    assert b"only the Fleet API" in response.content
    assert upstream.requests == []  # never reaches the SuperLink


def test_allowed_is_exactly_the_fleet_calls_and_health():
    assert fleet_proxy.FLEET_ROUTES == {f"/v1/fleet/{n}" for n in SUPERNODE_CALLS}
    assert fleet_proxy.allowed("GET", "/health")
    assert not fleet_proxy.allowed("PUT", "/v1/fleet/push-object")


def test_oversized_body_is_refused():
    upstream = Upstream()
    response = call("POST", "/v1/fleet/push-object", upstream, b"x" * 2048, max_body=1024)
    assert response.status_code == 413
    assert upstream.requests == []


def test_superlink_down_gives_502():
    response = call("POST", "/v1/fleet/pull-messages", Upstream(fail=True), b"\x0a\x00")
    assert response.status_code == 502


def test_host_port_parsing():
    assert fleet_proxy.parse_args(["--upstream", "127.0.0.1:9093"]).upstream == ("127.0.0.1", 9093)
    assert fleet_proxy.parse_args(["--upstream", "[::1]:9093"]).upstream == ("::1", 9093)
    with pytest.raises(SystemExit):
        fleet_proxy.parse_args(["--upstream", "127.0.0.1"])
