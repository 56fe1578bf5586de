"""API keys with scopes, and who may call without one.

With keys configured (``CHARNN_API_KEYS``), every route but health, docs and the
playground needs ``Authorization: Bearer <key>``: ``predict`` for predicting,
generating and reading, ``admin`` for everything. Keys are compared in constant
time, all of them every time, so timing tells nothing about which one was close.

Without keys, charnn serves only clients on loopback, unless
``CHARNN_ALLOW_UNAUTHENTICATED=true`` says that is intended.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.settings import Settings

bearer = HTTPBearer(auto_error=False, description="An API key from CHARNN_API_KEYS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

LOCAL_ONLY = (
    "this charnn has no API keys, so it serves clients on this machine only; set "
    "CHARNN_API_KEYS, or CHARNN_ALLOW_UNAUTHENTICATED=true if that is really intended"
)


@lru_cache(maxsize=1024)  # the same few client addresses, request after request
def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")  # testclient: Starlette's test client


class Authorizer:
    def __init__(self, settings: Settings) -> None:
        self.keys = [(key.encode(), scopes) for key, scopes in settings.key_scopes.items()]
        self.open = settings.allow_unauthenticated

    def principal(self, host: str | None, credentials: str | None, scope: str) -> str:
        """Who is calling (for rate limits), or an HTTPException saying why not.

        ``host`` is the client's address; ``credentials`` the bearer token, if any.
        """
        if not self.keys:
            if self.open or is_loopback(host):
                return f"client:{host or '-'}"
            raise HTTPException(status.HTTP_403_FORBIDDEN, LOCAL_ONLY)
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scopes = self._scopes(credentials.encode())
        if scopes is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this API key lacks the '{scope}' scope"
            )
        return "key:" + hmac.new(b"charnn", credentials.encode(), "sha256").hexdigest()[:16]

    def _scopes(self, presented: bytes) -> frozenset[str] | None:
        found = None
        for key, scopes in self.keys:  # every key, every time: constant time overall
            if hmac.compare_digest(key, presented):
                found = scopes
        return found


def require(scope: str) -> Callable[[Request, Credentials], Awaitable[str]]:
    """A dependency that admits callers with ``scope`` and returns who they are."""

    async def check(request: Request, credentials: Credentials) -> str:
        authorizer: Authorizer = request.app.state.authorizer
        token = credentials.credentials if credentials is not None else None
        return authorizer.principal(request.client.host if request.client else None, token, scope)

    return check


ReadAccess = Depends(require("predict"))
AdminAccess = Depends(require("admin"))
Caller = Annotated[str, Depends(require("predict"))]
