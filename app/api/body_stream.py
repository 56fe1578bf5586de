"""A request body read as it arrives, with a bound on how long it may go silent.

uvicorn waits for a body's next bytes for as long as the client keeps its connection
open. An upload that stops sending would hold its slot (``CHARNN_MAX_CONCURRENT_DATASET_UPLOADS``,
``CHARNN_MAX_CONCURRENT_IMPORTS``) and its staging directory for ever: two such clients
shut every other upload out. ``body_chunks`` gives up after ``CHARNN_UPLOAD_IDLE_SECONDS``
without a byte (408, as nginx's ``client_body_timeout``), and the route's cleanup
removes what was written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import HTTPException, Request, status


async def body_chunks(request: Request, idle_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks; 408 once ``idle_seconds`` pass with none (ClientDisconnect as
    ``request.stream()`` raises it)."""
    chunks = request.stream()
    while True:
        try:
            with anyio.fail_after(idle_seconds):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise HTTPException(
                status.HTTP_408_REQUEST_TIMEOUT,
                f"no byte of the body arrived for {idle_seconds:g} seconds (limit set by "
                "CHARNN_UPLOAD_IDLE_SECONDS); send it again",
            ) from None
        yield chunk
