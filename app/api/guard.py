"""Who may reach the service from a browser: the Host it is called by, the Origin of a page.

A service without API keys trusts whoever can reach it on loopback, and a web page on
any site can make the browser reach loopback. Two checks keep such pages out:

- **Host** must be a name the service is served under (``CHARNN_ALLOWED_HOSTS``).
  A page on ``evil.example`` that re-resolves its own name to 127.0.0.1 (DNS
  rebinding) reaches the port, but its requests still say ``Host: evil.example``.
- **Origin**, on a request that changes something or costs work (POST, PUT, PATCH,
  DELETE), must be the service's own: a page elsewhere can send a form or a
  ``fetch`` there without reading the answer, and that is enough to do harm.
  The playground and Swagger UI are served by the service itself, so their
  requests carry its own origin; curl and the CLI send none.

Both are decided from the headers, before anything else runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, status
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_refusal

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """``"[::1]:8000"`` -> ``("::1", 8000)``; ``"Example.com"`` -> ``("example.com", None)``."""
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or ""), parts.port
    except ValueError:  # a port that is no number, a bracket left open
        return "", None


class RequestGuard:
    """Refuses a request whose Host is not the service's, or a cross-site change."""

    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = allowed_hosts

    def refusal(self, scope: Scope) -> HTTPException | None:
        """Why ``scope`` may not go on, or None."""
        headers = Headers(scope=scope)
        host_header = headers.get("host", "")
        host, port = split_host(host_header)
        if not self.any_host and host not in self.allowed_hosts:
            return HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"Host {host_header!r} is not a name this service is served under; "
                "add it to CHARNN_ALLOWED_HOSTS",
            )
        origin = headers.get("origin")
        cross_site = origin is not None and not _same_origin(origin, host, port)
        if cross_site and scope["method"] not in SAFE_METHODS:
            return HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"cross-site request refused: a page from {origin!r} may not "
                f"{scope['method']} here (only pages this service serves itself may)",
            )
        return None


def _same_origin(origin: str, host: str, port: int | None) -> bool:
    """Whether a page from ``origin`` is the service's own (served from ``host[:port]``).

    A Host without a port (behind a proxy, say) is matched by name alone: the scheme
    and port the browser used are then the proxy's business, not ours.
    """
    scheme, _, rest = origin.partition("://")  # "null" (a sandboxed page): never the same
    if not rest or "/" in rest:
        return False
    origin_host, origin_port = split_host(rest)
    if origin_port is None:
        origin_port = DEFAULT_PORTS.get(scheme.lower())
    return origin_host == host and port in (None, origin_port)


class RequestGuardMiddleware:
    """``RequestGuard`` in front of the app: refused requests never reach it."""

    def __init__(self, app: ASGIApp, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.guard.refusal(scope)
            if refusal is not None:
                await send_refusal(send, refusal)
                return
        await self.app(scope, receive, send)
