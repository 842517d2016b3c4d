"""The scrape loop's lean HTTP client against a raw local server that answers byte for byte:
framings, encodings, keep-alive, and the cases it hands to aiohttp."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from discovery.target import ScrapeSettings, Target
from scraper.config import ScrapeConfig
from scraper.fastpath import ScrapeError
from scraper.httpclient import LeanGet
from scraper.loop import ScrapeLoop
from scraper.memwriter import MemoryWriter

BODY = b"".join(b'm{i="%d"} %d\n' % (i, i) for i in range(300))
CT = b"Content-Type: text/plain; version=0.0.4\r\n"


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + CT + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def chunked(body: bytes, size: int, extra: bytes = b"", trailer: bytes = b"") -> bytes:
    parts = [b"HTTP/1.1 200 OK\r\n" + CT + b"Transfer-Encoding: chunked\r\n" + extra + b"\r\n"]
    for i in range(0, len(body), size):
        part = body[i:i + size]
        parts.append(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
    parts.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(parts)


class RawServer:
    """Answers each request line with ``answer(path)``, written in ``piece``-byte writes."""

    def __init__(self, answer: Callable[[str], bytes | None]) -> None:
        self.answer = answer
        self.piece = 0
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self.handlers: list[tuple[asyncio.Task, asyncio.StreamWriter]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append((task, writer))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                out = self.answer(head.split(b" ")[1].decode())
                if out is None:
                    break
                step = self.piece or len(out)
                for i in range(0, len(out), step):
                    writer.write(out[i:i + step])
                    await writer.drain()
                if b"Connection: close" in out:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Callable[[str], bytes | None]], RawServer]]:
    servers: list[asyncio.Server] = []

    made: list[RawServer] = []

    async def make(answer: Callable[[str], bytes | None]) -> RawServer:
        rs = RawServer(answer)
        made.append(rs)
        srv = await asyncio.start_server(rs.handle, "127.0.0.1", 0)
        rs.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return rs

    yield make  # type: ignore[misc]
    for rs in made:  # connections clients left open: end their handlers
        for _, w in rs.handlers:
            w.close()
        tasks = [t for t, _ in rs.handlers]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def lean(rs: RawServer, path: str = "/metrics") -> LeanGet:
    return LeanGet(f"http://127.0.0.1:{rs.port}{path}", {"Accept": "text/plain", "User-Agent": "t"})


async def test_content_length_kept_alive_and_the_request(raw):
    rs = await raw(lambda path: ok())
    client = lean(rs, "/metrics?x=a%20b")
    for _ in range(3):
        assert await client.get() == (BODY, "text/plain; version=0.0.4")
    assert rs.connections == 1  # one connection for every scrape
    first = rs.requests[0]
    assert first.startswith(b"GET /metrics?x=a%20b HTTP/1.1\r\nHost: 127.0.0.1:" + str(rs.port).encode() + b"\r\n")
    assert b"Accept-Encoding: gzip\r\n" in first and b"User-Agent: t\r\n" in first
    client.close()


@pytest.mark.parametrize("piece", [0, 1, 7])
async def test_chunked_gzip_trailers_in_pieces(raw, piece):
    packed = gzip.compress(BODY)
    rs = await raw(lambda path: chunked(packed, 100, b"Content-Encoding: gzip\r\n", b"X-T: 1\r\n"))
    rs.piece = piece  # the answer arrives a byte (or 7) at a time
    client = lean(rs)
    for _ in range(2):
        assert (await client.get())[0] == BODY
    assert rs.connections == 1
    client.close()


async def test_connection_close_and_idle_close_reconnect(raw):
    answers = [ok(extra=b"Connection: close\r\n"), None, ok()]
    rs = await raw(lambda path: answers.pop(0) if answers else ok())
    client = lean(rs)
    assert (await client.get())[0] == BODY  # the server closes after it
    assert await client.get() is None  # closed without an answer: the loop asks aiohttp
    assert (await client.get())[0] == BODY
    assert rs.connections == 3
    client.close()


async def test_status_and_size_limit_words(raw):
    rs = await raw(lambda path: {
        "/500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        "/gz": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
            len(gzip.compress(BODY)), gzip.compress(BODY)),
        "/chunked": chunked(BODY, 1000),
    }.get(path, ok()))
    with pytest.raises(ScrapeError, match="^server returned HTTP status 500 Internal Server Error$"):
        await lean(rs, "/500").get()
    with pytest.raises(ScrapeError, match=rf"^body size limit exceeded: Content-Length {len(BODY)} > 100 bytes$"):
        await lean(rs).get(100)
    assert len(gzip.compress(BODY)) < 2000 < len(BODY)
    for path in ("/gz", "/chunked"):  # the limit is on the decoded body
        with pytest.raises(ScrapeError, match="^body size limit exceeded: more than 1000 bytes$"):
            await lean(rs, path).get(1000)
        assert (await lean(rs, path).get(len(BODY)))[0] == BODY


async def test_a_body_over_the_limit_is_refused_before_it_is_buffered(raw):
    """A chunk declared bigger than the limit is refused as its size line arrives, not after
    the sender has sent it all (here it never does); an encoded body with more bytes on the
    wire than the limit allows for goes to aiohttp, which decodes it as a stream."""
    plain = random.Random(1).randbytes(20_000)
    noise = gzip.compress(plain)  # incompressible: a little over 20 KB packed
    rs = await raw(lambda path: {
        "/huge-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n" + b"x" * 5000,
        "/bigz": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(noise), noise),
        "/bigz-chunked": chunked(noise, 4000, b"Content-Encoding: gzip\r\n"),
    }.get(path, ok()))
    with pytest.raises(ScrapeError, match="^body size limit exceeded: more than 1000 bytes$"):
        await asyncio.wait_for(lean(rs, "/huge-chunk").get(1000), 30)
    for path in ("/bigz", "/bigz-chunked"):
        assert await asyncio.wait_for(lean(rs, path).get(1000), 30) is None
        got = await asyncio.wait_for(lean(rs, path).get(20_000), 30)  # within the limit: decoded here
        assert got is not None and got[0] == plain


async def test_unusual_answers_go_to_aiohttp(raw):
    """A redirect, a garbled status line or an unknown encoding: the scrape loop makes the
    request with aiohttp, which follows the redirect or words the error."""
    rs = await raw(lambda path: {
        "/moved": b"HTTP/1.1 302 Found\r\nLocation: /metrics\r\nContent-Length: 0\r\n\r\n",
        "/garbled": b"HTTP/9 200\r\n\r\n",
        "/br": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
    }.get(path, ok()))
    for path in ("/moved", "/garbled", "/br"):
        assert await lean(rs, path).get() is None
    w = MemoryWriter()
    async with aiohttp.ClientSession() as session:
        settings = ScrapeSettings(interval_s=5, timeout_s=2, path="/moved")
        loop = ScrapeLoop(Target("r", f"127.0.0.1:{rs.port}", settings), w, session, config=ScrapeConfig())
        assert loop.lean is not None
        out = await loop.scrape_once()
        assert out is not None and out.samples_scraped == 300  # aiohttp followed the redirect
        garbled = ScrapeLoop(Target("g", f"127.0.0.1:{rs.port}", ScrapeSettings(interval_s=5, timeout_s=2,
                                                                                   path="/garbled")), w, session)
        assert await garbled.scrape_once() is None
        assert garbled.health.last_error.startswith("ClientResponseError"), garbled.health.last_error
        await loop.stop()
        await garbled.stop()
