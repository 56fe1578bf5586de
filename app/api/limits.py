"""Request-level limits: body size (enforced on the streamed body), per-key rates, and
requests of one kind at once."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_refusal
from app.errors import TooManyRequestsError

IMPORT_ROUTE = re.compile(r"^/models/[^/]+/versions/?$")
DATASET_ROUTE = re.compile(r"^/datasets/?$")
MULTIPART_OVERHEAD = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body larger than {limit} bytes (limit set by {setting})",
        )


class BodySizeLimit:
    """Refuse bodies over the limit: at once by Content-Length, else while they stream in.

    Checkpoint imports have their own limit: ``max_import_bytes``, the sum of their files'
    limits (each file's own is enforced as it streams in, ``app.api.uploads``); dataset
    uploads theirs, ``max_dataset_bytes`` (the body is the file).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_import_bytes: int,
        max_dataset_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = max_import_bytes + MULTIPART_OVERHEAD
        self.max_dataset_bytes = max_dataset_bytes or max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.max_body_bytes, "CHARNN_MAX_BODY_BYTES"
        if scope["method"] == "POST" and IMPORT_ROUTE.match(scope["path"]):
            limit, setting = self.max_import_bytes, "CHARNN_MAX_IMPORT_BYTES"
        elif scope["method"] == "POST" and DATASET_ROUTE.match(scope["path"]):
            limit, setting = self.max_dataset_bytes, "CHARNN_MAX_DATASET_BYTES"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_refusal(send, BodyTooLarge(limit, setting))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)  # FastAPI answers it as a 413
            return message

        await self.app(scope, limited, send)


class CloseUnreadBodies:
    """Close the connection after answering a request whose body was left unread.

    A refusal (413, 429, 401, ...) is sent before the body has been read; on a kept-alive
    connection the server would then read the rest, megabytes or gigabytes, only to
    find the next request. ``Connection: close`` tells the server and the client that
    the rest will never be read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unread = _has_body(scope)  # until its last message is read

        async def reading() -> Message:
            nonlocal unread
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                unread = False
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, reading, sending)


def _has_body(scope: Scope) -> bool:
    declared = _content_length(scope)
    if declared is not None:
        return declared > 0
    return any(key == b"transfer-encoding" for key, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """A token bucket per API key: ``rate`` requests a second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (tokens, when)

    def check(self, principal: str) -> None:
        if self.rate <= 0 or not principal.startswith("key:"):
            return
        now = time.monotonic()
        tokens, then = self._buckets.get(principal, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            wait = (1 - tokens) / self.rate
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"more than {self.rate:g} requests a second with this API key "
                "(limit set by CHARNN_PREDICT_RATE_PER_KEY)",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        self._buckets[principal] = (tokens - 1, now)


class ConcurrencyLimit:
    """At most ``limit`` requests of one kind at once; the next one gets a 429 at once.

    Taken and given back on the event loop, where no other request runs in between.
    """

    def __init__(self, limit: int, what: str, setting: str, retry_after: int = 5) -> None:
        self.limit, self.what, self.setting, self.retry_after = limit, what, setting, retry_after
        self.active = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise TooManyRequestsError(
                f"{self.active} {self.what} in progress, at most {self.limit} "
                f"(limit set by {self.setting}); try again shortly",
                retry_after=self.retry_after,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
