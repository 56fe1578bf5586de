"""Domain errors -> HTTP responses, in one place.

Validation-like errors answer 422 in FastAPI's own shape (``detail`` is a list of
``{loc, msg, type}``), so a client handles every field error the same way; the
others answer ``{"detail": "<message>"}``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from app.errors import (
    ConflictError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    TooManyRequestsError,
    UploadTooLargeError,
)
from app.ml.errors import (
    CharnnError,
    CheckpointError,
    ConfigurationError,
    DataError,
    DeviceUnavailableError,
    StorageError,
    UnknownCharactersError,
)
from app.schemas import ErrorMessage

log = logging.getLogger("charnn.api")


def field_loc(field: str, prefix: tuple[str | int, ...] = ("body",)) -> list[str | int]:
    """``data.pairs[3].input`` -> ``["body", "data", "pairs", 3, "input"]``."""
    loc: list[str | int] = list(prefix)
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        loc.append(int(index) if index else name)
    return loc


def json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it: a request may hold NaN, infinities and lone
    surrogates (Python's JSON parser takes them), which a response cannot encode."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(
        {"detail": json_safe(errors)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def unknown_characters(exc: UnknownCharactersError, prefix: str = "") -> JSONResponse:
    vocabulary = "".join(exc.allowed)
    return unprocessable(
        [
            {
                "loc": field_loc(prefix + exc.field.format(i=u.input_index)),
                "msg": f"unknown character {u.character!r} at position {u.position}; "
                f"the vocabulary is {vocabulary!r}",
                "type": "unknown_character",
                "input": u.character,
                "ctx": {"position": u.position, "input_index": u.input_index},
            }
            for u in exc.unknown
        ]
    )


def field_error(field: str, message: str, kind: str) -> JSONResponse:
    return unprocessable([{"loc": field_loc(field), "msg": message, "type": kind}])


def message(status_code: int, exc: Exception, **headers: str) -> JSONResponse:
    detail = json_safe(str(exc))
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers or None)


async def handle_invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422, made safe to encode whatever the request held.

    A body that is not JSON (``text/plain``, a form, no JSON type) reaches the validator
    as bytes, which need not be UTF-8: FastAPI's encoder would decode them strictly.
    """
    assert isinstance(exc, RequestValidationError)
    return unprocessable(jsonable_encoder(exc.errors(), custom_encoder={bytes: _bytes_as_text}))


def _bytes_as_text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


async def handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    # training data errors name fields relative to ``data`` (the vocabulary sits beside it);
    # evaluate takes its data in the same shape
    takes_data = request.url.path.rstrip("/").endswith(("/train", "/evaluate"))
    data_prefix = "data." if takes_data else ""
    match exc:
        case UnknownCharactersError():
            return unknown_characters(exc, data_prefix)
        case DataError():
            own_field = exc.field in ("vocab", "dataset")  # beside ``data``, not in it
            field = exc.field if own_field else data_prefix + exc.field
            return field_error(field, exc.message, "invalid_data")
        case UploadTooLargeError():
            return message(status.HTTP_413_CONTENT_TOO_LARGE, exc)
        case LimitExceededError():
            return field_error(exc.field, str(exc), "limit_exceeded")
        case InvalidRequestError():
            return field_error(exc.field, str(exc), "invalid_request")
        case ConfigurationError():
            return message(status.HTTP_422_UNPROCESSABLE_CONTENT, exc)
        case TooManyRequestsError():
            return message(
                status.HTTP_429_TOO_MANY_REQUESTS, exc, **{"Retry-After": str(exc.retry_after)}
            )
        case NotFoundError():
            return message(status.HTTP_404_NOT_FOUND, exc)
        case ConflictError():
            return message(status.HTTP_409_CONFLICT, exc)
        case StorageError():
            log.error("the store refused a write: %s", exc)
            return message(status.HTTP_507_INSUFFICIENT_STORAGE, exc)
        case DeviceUnavailableError():
            return message(status.HTTP_503_SERVICE_UNAVAILABLE, exc)
        case CheckpointError():
            log.error("stored checkpoint failed verification: %s", exc)
            return message(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                RuntimeError(f"the stored checkpoint failed verification: {exc}"),
            )
    log.error("unmapped domain error %s: %s", type(exc).__name__, exc)
    return message(status.HTTP_400_BAD_REQUEST, exc)


# SQLite's SQLITE_FULL and PostgreSQL's disk_full: the database is there, its disk is not
DISK_FULL = (13, "53100")


def disk_full(exc: Exception) -> bool:
    original = getattr(exc, "orig", None)
    codes = (getattr(original, "sqlite_errorcode", None), getattr(original, "sqlstate", None))
    return any(code in DISK_FULL for code in codes)


async def handle_database_down(_request: Request, exc: Exception) -> JSONResponse:
    if disk_full(exc):
        log.error("the registry's disk is full: %s", exc)
        return JSONResponse(
            {"detail": "the registry database's disk is full; free space, then try again"},
            status_code=status.HTTP_507_INSUFFICIENT_STORAGE,
        )
    log.warning("registry unreachable: %s", exc)
    return JSONResponse(
        {"detail": "the registry database is unreachable; try again shortly"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path.

    Starlette's 405 names only the methods of the first route that matched the path
    (``GET`` where ``DELETE`` is served too); so ask the router about each method.
    """
    allowed = []
    for method in METHODS:
        scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
        }
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and (
        allowed := allowed_methods(request)
    ):  # (none for the static files, whose own 405 stands)
        headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        exc = StarletteHTTPException(exc.status_code, exc.detail, headers)
    return await http_exception_handler(request, exc)


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed at all (not UTF-8, or broken multipart)",
    401: "Missing or invalid API key",
    403: "The key lacks the scope, or no keys are configured and the client is not on loopback",
    404: "No such model, version, job or dataset",
    408: "The body stopped arriving: no byte for CHARNN_UPLOAD_IDLE_SECONDS",
    409: "The model is being trained, the job has ended, a version has no held-out split, "
    "or a job trains on the dataset",
    413: "Body larger than CHARNN_MAX_BODY_BYTES; an imported file larger than "
    "CHARNN_MAX_IMPORT_BYTES (weights) or CHARNN_MAX_IMPORT_META_BYTES (checkpoint.json); "
    "a dataset larger than CHARNN_MAX_DATASET_BYTES, or one the store has no room for "
    "(CHARNN_MAX_DATASETS_BYTES)",
    415: "The body is not of a media type this operation reads",
    429: "Too many requests (a full queue, concurrent imports or evaluations, the per-key "
    "rate); see Retry-After",
    503: "Registry unreachable, or the service cannot run this now",
    507: "The store cannot be written (disk full, over quota, read-only); nothing was kept",
}


ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "The scheme to use.", "schema": {"const": "Bearer"}}},
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these refusals, each ``{"detail": "<message>"}``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        responses[code] = {"model": ErrorMessage, "description": ERROR_DESCRIPTIONS[code]}
        if code in ERROR_HEADERS:
            responses[code]["headers"] = ERROR_HEADERS[code]
    return responses


AUTH_RESPONSES = error_responses(401, 403)
ERROR_RESPONSES = error_responses(413)  # every route: the body size is checked before routing


Handler = Callable[[Request, Any], Response | Awaitable[Response]]  # as FastAPI keeps them


def exception_handler_for(handlers: Mapping[Any, Handler], exc: Exception) -> Handler | None:
    """The handler the app would pick for ``exc``: the one of its nearest class."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(RequestValidationError, handle_invalid_request)
    app.add_exception_handler(CharnnError, handle_domain_error)
    app.add_exception_handler(OperationalError, handle_database_down)
    app.add_exception_handler(InterfaceError, handle_database_down)


async def send_refusal(send: Send, error: StarletteHTTPException) -> None:
    """Answer ``error`` straight from ASGI middleware, before the body is read.

    ``Connection: close``: the client may still be sending a body nobody will read.
    """
    body = json.dumps({"detail": error.detail}).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                *headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
