"""A lean keep-alive HTTP/1.1 GET for one scrape target: the scrape loop's usual request.

aiohttp's client spends a few hundred microseconds of Python per request (URL objects,
header multidicts, connector bookkeeping, a response object, stream readers, timers): at
500 series per target that is most of a scrape's CPU. ``LeanGet`` keeps one connection per
target, sends a request built once, and reads the answer straight from its protocol's
buffer: a body of ``Content-Length``, ``chunked`` or up to the close, identity or gzip.

It only does the ordinary case. Whatever else happens - no connection, a redirect, a 1xx,
a malformed or cut answer, another encoding - ``get`` returns None and the scrape loop
makes the same request with aiohttp, which follows redirects and words every error as
before; a URL it cannot carry (https, user info) never gets a ``LeanGet``. A status other
than 200 and the body size limit are answered here, in the words the aiohttp path uses.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass

from yarl import URL

from scraper.fastpath import ScrapeError

MAX_HEAD = 65536  # bytes of status line and headers before the answer is not ordinary
_GZIP = (b"gzip", b"x-gzip")


class _Unusual(Exception):
    """Not the ordinary case: the caller asks aiohttp instead."""


def size_exceeded(limit: int, content_length: int | None = None) -> ScrapeError:
    """The body size limit's error, as the scrape loop words it."""
    if content_length is not None:
        return ScrapeError(
            "body_size_limit", f"body size limit exceeded: Content-Length {content_length} > {limit} bytes"
        )
    return ScrapeError("body_size_limit", f"body size limit exceeded: more than {limit} bytes")


@dataclass(slots=True)
class _Head:
    status: int
    reason: str
    headers: dict[bytes, bytes]
    body_at: int  # offset of the body in the buffer


def _copy(buf: bytes | bytearray, start: int, stop: int) -> bytes:
    """``buf[start:stop]`` as bytes in one copy (``bytes(buf[a:b])`` of a bytearray copies
    twice: a body is ~40 KB); the view is released before the buffer is cut."""
    with memoryview(buf) as view, view[start:stop] as part:
        return bytes(part)


def _parse_head(buf: bytes | bytearray, end: int) -> _Head:
    lines = bytes(buf[:end]).split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or len(status_line) < 12:
        raise _Unusual
    code = status_line[9:12]
    if not code.isdigit() or status_line[12:13] not in (b"", b" "):
        raise _Unusual
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name = name.lower()
        if not sep or not name or name != name.strip() or name in headers:
            raise _Unusual  # folded, malformed or repeated: aiohttp knows the rules
        headers[name] = value.strip(b" \t")
    if status_line.startswith(b"HTTP/1.0 ") and headers.get(b"connection", b"").lower() != b"keep-alive":
        headers[b"connection"] = b"close"
    return _Head(int(code), status_line[13:].decode("latin-1"), headers, end + 4)


class _Protocol(asyncio.Protocol):
    """One connection; ``start`` arms it for the answer to the request about to be sent."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # what arrived of the answer: the first read's bytes as they came (an answer usually
        # comes in one read: no copy into a buffer), a bytearray once a second read adds to it
        self.buf: bytes | bytearray = b""
        self.waiter: asyncio.Future[tuple[_Head, bytes]] | None = None
        self.closed = False
        self.limit = 0
        self._head: _Head | None = None
        self._need = -1  # buffer length that completes a Content-Length body
        self._chunks: list[bytes] = []  # decoded chunks of a chunked body
        self._chunk_pos = 0
        self._chunked_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, waiter: asyncio.Future[tuple[_Head, bytes]], limit: int) -> None:
        self.waiter, self.limit = waiter, limit
        self._head, self._need, self._chunks, self._chunk_pos, self._chunked_size = None, -1, [], 0, 0
        if self.buf:  # bytes nobody asked for: the connection is out of step
            self._fail(_Unusual())

    def data_received(self, data: bytes) -> None:
        if not self.buf:
            self.buf = data
        elif isinstance(self.buf, bytearray):
            self.buf += data
        else:
            self.buf = bytearray(self.buf) + data
        if self._need >= 0:
            if len(self.buf) >= self._need:
                self._step(eof=False)
        elif self.waiter is not None:
            self._step(eof=False)

    def eof_received(self) -> bool:
        self.closed = True
        self._step(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._step(eof=True)

    def _fail(self, exc: BaseException) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def _done(self, head: _Head, body: bytes) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result((head, body))

    def _step(self, *, eof: bool) -> None:
        if self.waiter is None:
            return
        try:
            self._advance(eof)
        except (_Unusual, ScrapeError) as exc:
            self._fail(exc)

    def _advance(self, eof: bool) -> None:
        buf = self.buf
        head = self._head
        if head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if eof or len(buf) > MAX_HEAD:
                    raise _Unusual
                return
            head = self._head = _parse_head(buf, end)
            if head.status != 200:
                if 300 <= head.status < 400 or head.status < 200:
                    raise _Unusual  # a redirect to follow, an interim answer
                raise ScrapeError("http_status", f"server returned HTTP status {head.status} {head.reason}")
            h = head.headers
            enc = h.get(b"content-encoding", b"").lower()
            if enc not in (b"", b"identity", *_GZIP):
                raise _Unusual
            te = h.get(b"transfer-encoding")
            if te is not None:
                if te.lower() != b"chunked":
                    raise _Unusual
                self._chunk_pos = head.body_at
            elif b"content-length" in h:
                cl = h[b"content-length"]
                if not cl.isdigit():
                    raise _Unusual
                n = int(cl)
                if self.limit and n > self.limit and enc in (b"", b"identity"):
                    raise size_exceeded(self.limit, n)
                self._check_size(head, n)
                self._need = head.body_at + n
        h = head.headers
        if b"transfer-encoding" in h:
            if self._read_chunks():
                self._finish(head, b"".join(self._chunks), len(buf) == self._chunk_pos)
            elif eof:
                raise _Unusual
        elif self._need >= 0:
            if len(buf) >= self._need:
                self._finish(head, _copy(buf, head.body_at, self._need), len(buf) == self._need)
            elif eof:
                raise _Unusual
        else:  # the body runs to the close
            self._check_size(head, len(buf) - head.body_at)
            if eof:
                self._finish(head, _copy(buf, head.body_at, len(buf)), True)

    def _check_size(self, head: _Head, size: int) -> None:
        """Refuse a body before it is buffered whole: an identity body over the limit is the
        limit's error; an encoded one with more bytes on the wire than any body within the
        limit packs into (deflate's stored blocks add ~5 bytes per 64 KiB, gzip's header 18
        and names) goes to aiohttp, which decodes it as a stream and words the error."""
        if not self.limit or size <= self.limit:
            return
        if head.headers.get(b"content-encoding", b"").lower() in (b"", b"identity"):
            raise size_exceeded(self.limit)
        if size > self.limit + self.limit // 1024 + 1024:
            raise _Unusual

    def _read_chunks(self) -> bool:
        """Decode the chunks that arrived; True once the last chunk and trailers did."""
        buf, pos = self.buf, self._chunk_pos
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self._chunk_pos = pos
                return False
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip(b" \t")
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Unusual from None
            if size < 0 or not size_text.isalnum():
                raise _Unusual
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                if len(buf) < eol + 4:
                    self._chunk_pos = pos
                    return False
                end = eol if buf[eol + 2:eol + 4] == b"\r\n" else buf.find(b"\r\n\r\n", eol + 2)
                if end < 0:
                    self._chunk_pos = pos
                    return False
                self._chunk_pos = end + 4
                return True
            assert self._head is not None
            self._check_size(self._head, self._chunked_size + size)  # before the chunk is buffered
            start, stop = eol + 2, eol + 2 + size
            if len(buf) < stop + 2:
                self._chunk_pos = pos
                return False
            if buf[stop:stop + 2] != b"\r\n":
                raise _Unusual
            self._chunks.append(_copy(buf, start, stop))
            self._chunked_size += size
            pos = stop + 2

    def _finish(self, head: _Head, body: bytes, exact: bool) -> None:
        enc = head.headers.get(b"content-encoding", b"").lower()
        if enc in _GZIP:
            d = zlib.decompressobj(wbits=31)
            try:
                out = d.decompress(body, self.limit + 1) if self.limit else d.decompress(body)
            except zlib.error:
                raise _Unusual from None
            if self.limit and len(out) > self.limit:
                raise size_exceeded(self.limit)
            if not d.eof or d.unused_data:
                raise _Unusual
            body = out
        self.buf = b""
        if not exact or head.headers.get(b"connection", b"").lower() == b"close":
            self.closed = True  # out of step or told so: the next request opens a new one
            if self.transport is not None:
                self.transport.close()
        self._done(head, body)


class LeanGet:
    """GETs of one http URL over a kept-alive connection (see the module docstring)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        u = URL(url)
        if not self.carries(u):
            raise ValueError(f"not a URL for LeanGet: {url}")
        host = u.raw_host or ""
        self.host, self.port = host, u.port or 80
        host_header = f"[{host}]" if ":" in host else host
        if u.port != 80 and u.port is not None:
            host_header += f":{u.port}"
        lines = [f"GET {u.raw_path_qs} HTTP/1.1", f"Host: {host_header}", "Accept-Encoding: gzip"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "accept-encoding")]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._proto: _Protocol | None = None

    @staticmethod
    def carries(u: URL) -> bool:
        return u.scheme == "http" and bool(u.raw_host) and not u.raw_user and not u.raw_password and not u.raw_fragment

    async def get(self, limit: int = 0) -> tuple[bytes, str] | None:
        """(body, Content-Type) of a 200; None when the answer is not the ordinary case (ask
        aiohttp); ScrapeError for another status or a body over ``limit`` (0: none)."""
        loop = asyncio.get_running_loop()
        p = self._proto
        if p is None or p.closed or p.transport is None or p.transport.is_closing():
            self.close()
            try:
                _, p = await loop.create_connection(_Protocol, self.host, self.port)
            except OSError:
                return None  # aiohttp words the connection error
            self._proto = p
        assert p.transport is not None
        waiter: asyncio.Future[tuple[_Head, bytes]] = loop.create_future()
        p.start(waiter, limit)
        if not waiter.done():
            p.transport.write(self.request)
        try:
            head, body = await waiter
        except _Unusual:
            self.close()
            return None
        except BaseException:  # a status, the size limit, a timeout: the connection is out of step
            self.close()
            raise
        return body, head.headers.get(b"content-type", b"").decode("latin-1")

    def close(self) -> None:
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None:
            p.transport.close()
