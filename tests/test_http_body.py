"""Big answers are written a piece at a time (common/http_body.py), byte for byte."""

from __future__ import annotations

import warnings

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from local_http import serve

from common.http_body import PIECE_BYTES, PiecewiseBytesPayload, piecewise


class Recorder(AbstractStreamWriter):
    """A stream writer that keeps what it is given, one entry per write."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.pieces.append(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        pass

    async def drain(self) -> None:
        pass

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        pass

    def enable_chunking(self) -> None:
        pass

    async def write_headers(self, status_line: str, headers: object) -> None:
        pass

    def send_headers(self) -> None:
        pass


BODY = bytes(range(256)) * (5 * PIECE_BYTES // 256) + b"tail"  # five pieces and a bit


async def test_a_big_body_is_written_in_pieces_of_at_most_one_piece() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ResourceWarning about the big body
        payload = piecewise(memoryview(BODY), content_type="application/json")
    assert isinstance(payload, PiecewiseBytesPayload) and payload.size == len(BODY)
    rec = Recorder()
    await payload.write(rec)
    assert len(rec.pieces) == 6 and max(map(len, rec.pieces)) == PIECE_BYTES
    assert b"".join(rec.pieces) == BODY
    rec = Recorder()
    await payload.write_with_length(rec, PIECE_BYTES + 3)
    assert b"".join(rec.pieces) == BODY[: PIECE_BYTES + 3]
    assert not isinstance(piecewise(b"{}"), PiecewiseBytesPayload)  # small: aiohttp's own payload


async def test_a_big_answer_arrives_whole_with_its_length() -> None:
    app = web.Application()

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=piecewise(BODY, content_type="application/json"))

    app.router.add_get("/big", big)
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/big") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert int(r.headers["Content-Length"]) == len(BODY)
            assert await r.read() == BODY
    finally:
        await runner.cleanup()
