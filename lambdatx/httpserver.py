"""
The HTTP layer under both APIs: twisted.web with three fixes (see ../shared/NOTES.md).

* **Bodies stay in memory and are bounded.** ``LambdaRequest`` keeps the body in a ``BytesIO``
  (twisted.web spools bodies over 100 kB to a temporary file) and stops storing once the site's
  limit is crossed. A site may answer such a request at once (``on_too_large``): the raw
  response is written and the connection closed, so an oversized ``Content-Length`` is refused
  before the upload (``Expect: 100-continue`` is then not answered with 100).
* **Chunked trailers are kept.** ``LambdaChannel`` copies the chunked decoder's trailer fields
  onto the request before it is rendered (aws-lambda-go sends error trailers).
* **Quiet.** No access log, no "Starting factory" lines.

Private twisted.web names used here (``_transferDecoder``, ``_trailerHeaders``,
``_send100Continue``) are pinned by tests/test_httpserver.py.
"""

from __future__ import annotations

from io import BytesIO
from typing import Callable, Optional

from twisted.web import http, server

#: ``body_limit(request)``: bytes to keep, or None to discard the body (never too large).
BodyLimit = Callable[[server.Request], Optional[int]]
#: ``on_too_large(request, length)``: a raw HTTP response to send before closing, or None to
#: let the route answer after the body was read (and discarded).
OnTooLarge = Callable[[server.Request, int], Optional[bytes]]


class LambdaRequest(server.Request):
    """A request whose body is kept in memory up to the site's limit."""

    #: True once the body crossed the limit; the stored content is then empty.
    body_too_large = False
    #: Trailer fields of a chunked body: {lowercase name: value}, or None.
    trailers: Optional[dict[bytes, bytes]] = None

    #: The request target, known before the body (``path`` is set only once it is read).
    raw_path = b""

    def gotLength(self, length):
        channel = self.channel
        self.raw_path = channel._path.split(b"?", 1)[0]
        site = channel.site
        self._limit = site.body_limit(self) if site.body_limit is not None else -1
        self._received = 0
        self.content = BytesIO()
        if length is not None and self._limit is not None and 0 <= self._limit < length:
            self._too_large(length)

    def handleContentChunk(self, data):
        limit = self._limit
        if limit is None or self.body_too_large:
            return
        self._received += len(data)
        if 0 <= limit < self._received:
            self._too_large(self._received)
            return
        self.content.write(data)

    def _too_large(self, length: int) -> None:
        self.body_too_large = True
        self.body_length = length
        self.content = BytesIO()
        on_too_large = self.channel.site.on_too_large
        raw = on_too_large(self, length) if on_too_large is not None else None
        if raw is not None:
            self.channel.reject(raw)


class LambdaChannel(http.HTTPChannel):
    """HTTPChannel that keeps chunked trailers and can refuse a request before its body."""

    _rejected = False

    def reject(self, raw_response: bytes) -> None:
        """Write a complete response and close, ignoring whatever the client still sends."""
        self._rejected = True
        self.transport.write(raw_response)
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._rejected:
            return
        super().dataReceived(data)

    def _send100Continue(self):
        if not self._rejected:
            super()._send100Continue()

    def allContentReceived(self):
        if self._rejected:
            return
        decoder = self._transferDecoder
        raw = getattr(decoder, "_trailerHeaders", None)
        if raw:
            trailers = {}
            for line in raw:
                name, sep, value = bytes(line).partition(b":")
                if sep:
                    trailers[name.strip().lower()] = value.strip()
            self.requests[-1].trailers = trailers
        super().allContentReceived()


class LambdaSite(server.Site):
    """A quiet Site building LambdaChannel/LambdaRequest."""

    noisy = False
    protocol = LambdaChannel
    requestFactory = LambdaRequest

    def __init__(
        self,
        resource,
        *,
        body_limit: BodyLimit | None = None,
        on_too_large: OnTooLarge | None = None,
        timeout: float | None = 60 * 60 * 12,
    ):
        # Bodies are events, never HTML forms (curl labels every -d body as one).
        super().__init__(resource, timeout=timeout, parsePOSTFormSubmission=False)
        self.body_limit = body_limit
        self.on_too_large = on_too_large

    def log(self, request):
        pass


def raw_response(status: int, phrase: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    lines.extend(name + b": " + value for name, value in headers)
    lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
