"""A big HTTP answer written a piece at a time, so that sending it never stalls the event loop.

aiohttp writes a bytes body in one call: on Python 3.11 it joins the headers and the whole body
into one new bytes object and the transport copies what the socket did not take into its
buffer, two copies of the answer on the event loop. A 300 MB query answer took 206 ms of the
loop thread's CPU that way (``ringmon standalone``, bench/hostile.py's four big queries), and
nothing else ran meanwhile. ``piecewise`` hands the body to aiohttp as a payload that writes
PIECE_BYTES at a time and lets the loop run (and the socket drain) between pieces.
"""

from __future__ import annotations

import warnings
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload

from common.sequences import slices

PIECE_BYTES = 1 << 20


class PiecewiseBytesPayload(BytesPayload):
    """A bytes body that aiohttp writes PIECE_BYTES at a time (the writer drains between them)."""

    def __init__(self, value: bytes | bytearray | memoryview, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # aiohttp's warning about big bodies: the one this class heeds
            warnings.simplefilter("ignore", ResourceWarning)
            super().__init__(value, *args, **kwargs)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        view = memoryview(self._value).cast("B")
        if content_length is not None:
            view = view[:content_length]
        for piece in slices(view, PIECE_BYTES):
            await writer.write(piece)


def piecewise(body: bytes | bytearray | memoryview, **kwargs: Any) -> BytesPayload:
    """``body`` as a payload for ``web.Response(body=...)``: written in pieces when it is bigger
    than one piece; ``kwargs`` (``content_type`` ...) as for ``BytesPayload``."""
    cls = PiecewiseBytesPayload if len(body) > PIECE_BYTES else BytesPayload
    return cls(body, **kwargs)
