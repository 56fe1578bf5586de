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
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_refusal
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


class Requires:
    """A dependency that admits callers with ``scope`` and returns who they are.

    ``AccessControl`` reads the scope off each route's dependencies and decides before
    the body is read; the dependency itself still runs, as the route's documentation
    (Swagger's "Authorize") and as a second check that cannot be routed around.
    """

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, request: Request, credentials: Credentials) -> str:
        authorizer: Authorizer = request.app.state.authorizer
        token = credentials.credentials if credentials is not None else None
        host = request.client.host if request.client else None
        return authorizer.principal(host, token, self.scope)


def require(scope: str) -> Requires:
    return Requires(scope)


ReadAccess = Depends(require("predict"))
AdminAccess = Depends(require("admin"))
Caller = Annotated[str, Depends(require("predict"))]


def bearer_token(headers: Headers) -> str | None:
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    return credentials if credentials and scheme.lower() == "bearer" else None


def required_scope(route: APIRoute) -> str | None:
    """The widest scope among the route's ``Requires`` dependencies (admin > predict)."""
    scopes: set[str] = set()
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Requires):
            scopes.add(dependant.call.scope)
        pending.extend(dependant.dependencies)
    return "admin" if "admin" in scopes else next(iter(scopes), None)


class AccessControl:
    """Decides 401/403 from the headers, before anything reads the request's body.

    FastAPI reads and parses a body (a multipart upload: spooled to disk) before it
    runs the route's dependencies, so a refusal there comes after the upload. This
    middleware matches the request against the routes that need a key (``routes``,
    as their routers declare them) and asks the ``Authorizer`` at once.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], authorizer: Authorizer) -> None:
        self.app = app
        self.authorizer = authorizer
        self.guarded = [
            (route, needed)
            for route in routes
            if isinstance(route, APIRoute) and (needed := required_scope(route))
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await send_refusal(send, refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> HTTPException | None:
        needed = self.scope_for(scope)
        if needed is None:
            return None
        client = scope.get("client")
        try:
            token = bearer_token(Headers(scope=scope))
            self.authorizer.principal(client[0] if client else None, token, needed)
        except HTTPException as refusal:
            return refusal
        return None

    def scope_for(self, scope: Scope) -> str | None:
        for route, needed in self.guarded:
            if route.matches(scope)[0] is Match.FULL:
                return needed
        return None  # open, or no such route: a 404 or 405 reads no body either
