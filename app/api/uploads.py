"""Multipart uploads read straight from the request stream, each part into its own sink.

FastAPI's ``UploadFile`` parameters parse and spool the whole body before the handler
runs. A route that takes files this way instead reads ``request.stream()`` itself
(python-multipart's streaming parser, as Starlette's own ``MultiPartParser`` uses it),
so every part goes to its sink as it arrives, and a part over its limit is refused
before the rest of the body is read. The route states its ``requestBody`` in the
OpenAPI through ``multipart_body``.

A sink's ``reserve`` runs on the event loop before its bytes are accepted (it refuses
them by raising); ``write`` and ``finish`` block, and run in a worker thread, a
megabyte at a time, and at the end of each part (what a sink learns from a whole part
may refuse the parts after it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.api.body_stream import body_chunks

if TYPE_CHECKING:  # defined for type checkers only
    from python_multipart.multipart import MultipartCallbacks

FLUSH_BYTES = 1024 * 1024  # bytes gathered before a thread writes them


class Sink(Protocol):
    def reserve(self, size: int) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...


REF_PREFIX = "#/components/schemas/"
# named multipart bodies, put in the schema's components by ``install_openapi``: an inline
# body would be named by generated clients after the path (``Body_import_version_...``)
MULTIPART_BODIES: dict[str, dict[str, Any]] = {}


def multipart_body(name: str, files: Mapping[str, str]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads these files (name -> description) itself;
    ``name`` is the body's component name in the schema."""
    properties = {
        name: {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": description,
        }
        for name, description in files.items()
    }
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(files),
        "additionalProperties": False,
    }
    MULTIPART_BODIES[name] = schema
    body = {"$ref": REF_PREFIX + name}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


def bad_multipart(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid multipart body: {reason}")


def field_errors(kind: str, message: str, names: list[str]) -> RequestValidationError:
    """FastAPI's own 422 for these parts, as if they had been declared parameters."""
    return RequestValidationError(
        [{"type": kind, "loc": ("body", name), "msg": message, "input": None} for name in names]
    )


class _Parts:
    """python-multipart's callbacks: they queue work, which ``receive_parts`` then does."""

    def __init__(self, sinks: Mapping[str, Sink]) -> None:
        self.sinks = sinks
        self.pending: list[tuple[Sink, bytes | None]] = []  # (sink, data); None: its end
        self.pending_bytes = 0
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.current: str | None = None  # the name of the part being read
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]  # bounded by the parser (max_header_size)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise bad_multipart("a part has no Content-Disposition name")
        name = options[b"name"].decode("latin-1")
        if name not in self.sinks:
            raise field_errors("extra_forbidden", "Extra inputs are not permitted", [name])
        if name in self.started:
            raise field_errors("invalid_request", f"{name}: sent twice", [name])
        self.started.add(name)
        self.current = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self.current is not None  # the parser calls on_headers_finished first
        sink = self.sinks[self.current]
        sink.reserve(end - start)  # raises once the part passes its limit
        self.pending.append((sink, data[start:end]))
        self.pending_bytes += end - start

    def on_part_end(self) -> None:
        assert self.current is not None
        self.pending.append((self.sinks[self.current], None))
        self.pending_bytes = FLUSH_BYTES  # a part is whole: its sink hears of it at once
        self.finished.add(self.current)
        self.current = None

    async def flush(self) -> None:
        if self.pending:
            work, self.pending, self.pending_bytes = self.pending, [], 0
            await run_in_threadpool(_apply, work)


def _apply(work: list[tuple[Sink, bytes | None]]) -> None:
    for sink, data in work:
        if data is None:
            sink.finish()
        else:
            sink.write(data)


async def receive_parts(request: Request, sinks: Mapping[str, Sink], idle_seconds: float) -> None:
    """Stream the multipart body of ``request`` into ``sinks`` (field name -> sink).

    Every sink's part must come, once; a missing or unknown part answers FastAPI's 422,
    a body that is not multipart 415, a broken one 400.
    """
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the files {', '.join(sinks)} as multipart/form-data",
        )
    if b"boundary" not in options:
        raise bad_multipart("no boundary in its Content-Type")
    parts = _Parts(sinks)
    parser = MultipartParser(options[b"boundary"], parts.callbacks())
    try:
        async for chunk in body_chunks(request, idle_seconds):  # 408 when it stalls
            parser.write(chunk)
            if parts.pending_bytes >= FLUSH_BYTES:
                await parts.flush()
        parser.finalize()
    except FormParserError as exc:
        raise bad_multipart(str(exc)) from exc
    except ClientDisconnect as exc:  # nobody to answer; what was written goes
        raise bad_multipart("the client went away before its end") from exc
    await parts.flush()
    if parts.started != parts.finished:
        raise bad_multipart("it ends inside a part")
    if missing := [name for name in sinks if name not in parts.finished]:
        raise field_errors("missing", "Field required", missing)
