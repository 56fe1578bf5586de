"""uvicorn's HTTP protocol with a bound on a request's head, for ``charnn serve``.

uvicorn's httptools protocol keeps every header line a client sends until the head ends:
a client that never ends it grew the server by the 200 MB it sent. This protocol counts
the URL and the headers as they arrive and, past ``CHARNN_MAX_HEADER_BYTES``, answers
400 and closes the connection (the parser error path uvicorn already has).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    _head_bytes = 0

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            # raised inside the parser: uvicorn answers 400 and closes the connection
            raise HeadTooLarge(f"request head over {self.max_head_bytes} bytes")


def bounded_protocol(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with this bound, for ``uvicorn.run(http=...)``."""
    return type("BoundedHttpTools", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})
