"""``POST /predict`` without the framework's per-request layers.

For a small model the forward pass is the cheap part of a prediction: most of a
request's time went to the layers around the route (middleware, routing, dependency
injection, response validation). This handler serves the route's happy path as a
bare ASGI app, with the same checks in the same order:

    body size -> content type -> Host and Origin -> API key -> JSON body -> fields
    -> rate limit -> serving.predict

and the same answers: the engine's own errors go through the app's exception
handlers, and the response carries the same headers and metrics as any other.

Anything it would have to refuse before ``serving.predict`` (a body too large or not
JSON, a field error, a missing key, the rate limit) it hands, body included, to the
FastAPI route, which answers it as it answers every request. So refusals stay
defined in one place, and this file only has to get the common case right.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import Authorizer, bearer_token
from app.api.deps import Services
from app.api.errors import Handler, exception_handler_for
from app.api.guard import RequestGuard
from app.api.observability import valid_request_id
from app.api.routes.predict import predict_body
from app.logs import request_id
from app.schemas import PredictRequest

log = logging.getLogger("charnn.api")

PATH = "/predict"
JSON_TYPES = ("application/json",)


class HandOff(Exception):
    """Not a request for the fast path: the FastAPI route answers it."""


class FastPredict:
    def __init__(
        self,
        route: ASGIApp,
        services: Services,
        guard: RequestGuard,
        authorizer: Authorizer,
        exception_handlers: Mapping[Any, Handler],
    ) -> None:
        self.route = route
        self.services = services
        self.guard = guard
        self.authorizer = authorizer
        self.exception_handlers = exception_handlers
        metrics = services.metrics
        self.max_body_bytes = services.settings.max_body_bytes
        # label lookups take a lock and a dict walk: bind them once
        self.latency = metrics.latency.labels("POST", PATH)
        self.answered = {200: metrics.requests.labels("POST", PATH, "200")}
        self.requests = metrics.requests
        self.predictions = metrics.predictions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        received: list[Message] = []
        try:
            request, caller, rid = await self._admit(scope, receive, received)
        except HandOff:
            await self.route(scope, _replay(received, receive), send)
            return
        token = request_id.set(rid)
        try:
            status, headers, body = await self._answer(scope, request, caller)
            # still under the request's id: uvicorn writes its access line in send
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"x-request-id", rid.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            request_id.reset(token)
        self.latency.observe(time.perf_counter() - started)
        counter = self.answered.get(status)
        if counter is None:
            counter = self.answered[status] = self.requests.labels("POST", PATH, str(status))
        counter.inc()

    async def _admit(
        self, scope: Scope, receive: Receive, received: list[Message]
    ) -> tuple[PredictRequest, str, str]:
        """The request, the caller and the request id; or HandOff to the route."""
        headers = Headers(scope=scope)
        content_length = headers.get("content-length")
        if content_length is not None and not _within(content_length, self.max_body_bytes):
            raise HandOff
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() not in JSON_TYPES:
            raise HandOff
        if self.guard.refusal(scope) is not None:
            raise HandOff
        client = scope.get("client")
        try:  # decided before a byte of the body is read, as on every route
            caller = self.authorizer.principal(
                client[0] if client else None, bearer_token(headers), "predict"
            )
        except HTTPException:
            raise HandOff from None
        body = await self._body(receive, received)
        try:
            request = PredictRequest.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):  # not JSON, too deep, a field
            raise HandOff from None
        try:
            self.services.limiter.check(caller)
        except HTTPException:
            raise HandOff from None
        return request, caller, valid_request_id(headers.get("x-request-id"))

    async def _body(self, receive: Receive, received: list[Message]) -> bytes:
        chunks = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # the client went away
                raise HandOff
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HandOff
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer(
        self, scope: Scope, request: PredictRequest, caller: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        try:
            row, predictions = await self.services.serving.predict(
                request.model_name,
                request.version,
                request.inputs,
                top_k=request.top_k,
                probabilities=request.return_probabilities,
            )
        except Exception as exc:  # noqa: BLE001  # answered as the route's handlers answer it
            response = await self._error_response(scope, exc)
            return response.status_code, response.raw_headers, bytes(response.body)
        self.predictions.labels(request.model_name).inc(len(predictions))
        body = await predict_body(request, row.version, predictions)
        return (
            200,
            [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
            body,
        )

    async def _error_response(self, scope: Scope, exc: Exception) -> Response:
        handler = exception_handler_for(self.exception_handlers, exc)
        if handler is None:
            log.error("predict failed", exc_info=exc)
            return PlainTextResponse("Internal Server Error", status_code=500)
        response = handler(Request(scope), exc)
        return await response if inspect.isawaitable(response) else response


def _within(content_length: str, limit: int) -> bool:
    return content_length.isdigit() and int(content_length) <= limit


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read yet."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
