"""The notifications page and the local webhook sink.

``GET /notifications`` lists what Ringmon's own receivers were handed (the notification
journal: the ``notification_log`` channel and the sink), newest first. ``POST
/-/webhook-sink/<name>`` is a webhook receiver in the web server: it accepts an Alertmanager
v4 payload from a loopback address and records it as "webhook sink <name>", so a
notification can be followed from the alert to its arrival without leaving the machine.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any

from aiohttp import web

from alerting.notifier.journal import JournalEntry, NotificationJournal
from web.common import render

log = logging.getLogger("ringmon.web.notifications")

JOURNAL = web.AppKey("notification_journal", NotificationJournal)
SINK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PAGE_LIMIT = 200


def _bad(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": error_type, "error": message}, status=status)


def is_loopback_peer(remote: str | None) -> bool:
    """Whether a request came from this machine (IPv4-mapped IPv6 included)."""
    try:
        addr = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


async def webhook_sink(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not SINK_NAME.match(name):
        return _bad(400, "bad_data", f"sink name {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-'")
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    own = sock[0] if isinstance(sock, tuple) and sock else None  # a server on a LAN address calls itself from it
    if not (is_loopback_peer(request.remote) or (own is not None and request.remote == own)):
        return _bad(403, "forbidden", "the webhook sink accepts notifications from this machine only")
    try:
        payload = json.loads(await request.read())
        entry = JournalEntry.from_webhook(payload, f"webhook sink {name}")
    except (ValueError, UnicodeDecodeError) as exc:
        return _bad(400, "bad_data", f"not an Alertmanager webhook payload: {exc}")
    await request.app[JOURNAL].record(entry)
    log.info("webhook sink %s received %s notification for %s (%d alerts)", name, entry.status, entry.receiver,
             len(entry.alerts))
    return web.json_response({"status": "success"})


def _row(e: JournalEntry) -> dict[str, Any]:
    alerts = []
    for a in e.alerts:
        labels = dict(a.get("labels") or {})
        alerts.append({"name": labels.pop("alertname", ""), "status": a.get("status", ""), "labels": labels,
                       "summary": (a.get("annotations") or {}).get("summary", "")})
    return {"entry": e, "alerts": alerts}


async def notifications_page(request: web.Request) -> web.Response:
    entries = await request.app[JOURNAL].recent(PAGE_LIMIT)
    return render(request, "notifications.html", page_title="Notifications", rows=[_row(e) for e in entries],
                  limit=PAGE_LIMIT)


def add_notification_routes(app: web.Application, journal: NotificationJournal) -> list[tuple[str, str]]:
    """Mount the page and the sink; returns the navigation entry."""
    app[JOURNAL] = journal
    app.router.add_get("/notifications", notifications_page, name="notifications")
    app.router.add_post("/-/webhook-sink/{name}", webhook_sink, name="webhook_sink")
    return [("/notifications", "Notifications")]
