"""Request-level limits: body size (enforced on the streamed body) and per-key rates."""

from __future__ import annotations

import re
import time

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_refusal

IMPORT_ROUTE = re.compile(r"^/models/[^/]+/versions/?$")
MULTIPART_OVERHEAD = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body larger than {limit} bytes (limit set by {setting})",
        )


class BodySizeLimit:
    """Refuse bodies over the limit: at once by Content-Length, else while they stream in.

    Checkpoint imports (two files, each up to CHARNN_MAX_IMPORT_BYTES) have their own limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_import_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = 2 * max_import_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.max_body_bytes, "CHARNN_MAX_BODY_BYTES"
        if scope["method"] == "POST" and IMPORT_ROUTE.match(scope["path"]):
            limit, setting = self.max_import_bytes, "CHARNN_MAX_IMPORT_BYTES"
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
