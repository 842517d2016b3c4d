"""An aiohttp app served on 127.0.0.1 for a test: ``runner, url = await serve(app)``, the port
the kernel chose read back through aiohttp's public ``runner.addresses``; the caller ends it
with ``await runner.cleanup()``."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start ``app`` on a free loopback port; its runner and base URL (``http://127.0.0.1:N``)."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
