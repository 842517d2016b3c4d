"""The notifier: alerts in, grouped notifications out, once each, retried with backoff.

Pipeline per aggregation group (one per route and group-by label values):
group_wait -> flush -> every group_interval: drop silenced and inhibited alerts, ask the
notification log whether anything changed for each channel (new firing alerts, resolutions,
or repeat_interval elapsed), deliver with exponential backoff, then record the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from alerting.channels.base import DeliveryError, Integration, LocalReceivers
from alerting.notifier.config import NotifierConfig
from alerting.notifier.inhibit import Inhibitor
from alerting.notifier.model import Alert, Notification
from alerting.notifier.nflog import NflogEntry, NotificationLog, needs_update, nflog_key
from alerting.notifier.routing import Route
from alerting.notifier.silences import Silences
from common.retry import backoff_delays

log = logging.getLogger("ringmon.alerting.notifier")

NOTIFICATIONS = Counter("ringmon_notifications_total", "Notifications delivered", ["integration"])
NOTIFICATION_FAILURES = Counter(
    "ringmon_notifications_failed_total", "Failed delivery attempts", ["integration", "retryable"]
)
NOTIFICATIONS_UNDELIVERED = Counter(
    "ringmon_notifications_undelivered_total",
    "Notifications a flush gave up on: a permanent error, or every retry within the retry budget"
    " (group_interval by default) failed; the next flush sends them again while still due",
    ["integration"],
)
NOTIFICATION_LATENCY = Histogram(
    "ringmon_notification_latency_seconds", "Time to deliver one notification (all attempts)", ["integration"]
)
ACTIVE_GROUPS = Gauge("ringmon_notifier_aggregation_groups", "Aggregation groups in the notifier")
ALERTS_RECEIVED = Counter("ringmon_notifier_alerts_received_total", "Alerts received by the notifier", ["status"])

RESOLVED_RETENTION_S = 15 * 60.0


@dataclass
class AlertStatus:
    """An alert as the API and pages show it: its state and what mutes it."""

    alert: Alert
    state: str  # active | suppressed | resolved
    silenced_by: list[str]
    inhibited: bool


class AggregationGroup:
    """The alerts of one route with the same group-by label values, flushed on a timer."""

    def __init__(self, notifier: Notifier, route: Route, key: str, labels: dict[str, str]) -> None:
        self.notifier = notifier
        self.route = route
        self.key = key
        self.labels = labels
        self.alerts: dict[str, Alert] = {}
        self.task: asyncio.Task | None = None
        self.created = notifier.clock()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"notify-group {self.key}")

    async def _run(self) -> None:
        n = self.notifier
        wait = self.route.group_wait_s
        # Alerts that started long ago (e.g. after a restart) need not wait again.
        oldest = min((a.starts_at for a in self.alerts.values()), default=self.created)
        if oldest + wait <= n.clock():
            wait = 0.0
        try:
            if wait > 0 and await n.sleep(wait):
                return
            while True:
                await self.flush()
                if not self.alerts:
                    n.drop_group(self)
                    return
                if await n.sleep(self.route.group_interval_s):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not silently kill notifications for this group forever
            log.exception("notification group %s failed; it restarts on the next alert", self.key)
            n.drop_group(self)

    async def flush(self) -> None:
        n = self.notifier
        now = n.clock()
        snapshot = list(self.alerts.values())
        await n.refresh_mutes()
        visible = [a for a in snapshot if a.resolved(now) or not n.muted(a, now)]
        firing = {a.fingerprint for a in visible if not a.resolved(now)}
        resolved = {a.fingerprint for a in visible if a.resolved(now)}
        receiver = n.config.receivers.get(self.route.receiver)
        ok = True
        if receiver is not None and receiver.integrations:
            results = await asyncio.gather(
                *(self._deliver(i, receiver.name, visible, firing, resolved, now) for i in receiver.integrations)
            )
            ok = all(results)
        if ok:
            for a in snapshot:
                cur = self.alerts.get(a.fingerprint)
                if cur is a and a.resolved(now):
                    del self.alerts[a.fingerprint]

    async def _deliver(
        self, integ: Integration, receiver: str, visible: list[Alert], firing: set[str], resolved: set[str], now: float
    ) -> bool:
        n = self.notifier
        key = nflog_key(self.key, receiver, integ.name)
        entry = await n.nflog.get(key)
        if not needs_update(entry, firing, resolved, integ.send_resolved, self.route.repeat_interval_s, now):
            return True
        alerts = visible if integ.send_resolved else [a for a in visible if not a.resolved(now)]
        if alerts:
            note = Notification(receiver, self.key, dict(self.labels), sorted(alerts, key=lambda a: a.starts_at),
                                n.config.external_url, now=now)
            if not await n.send_with_retry(integ, note, self.route.group_interval_s):
                return False
        retention = max(n.config.nflog_retention_s, self.route.repeat_interval_s * 2)
        await n.nflog.put(NflogEntry(key, set(firing), set(resolved), now, now + retention))
        return True


class Notifier:
    """Receives alerts from the evaluator and delivers notifications through the routing tree."""

    def __init__(
        self,
        config: NotifierConfig,
        nflog: NotificationLog,
        silences: Silences | None = None,
        clock: Callable[[], float] = time.time,
        local: LocalReceivers | None = None,
    ) -> None:
        self.local = local or LocalReceivers()
        self.config = config
        self._bind(config)
        self.nflog = nflog
        self.silences = silences
        self.clock = clock
        self.inhibitor = Inhibitor(config.inhibit_rules)
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, AggregationGroup] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._gc_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._stopping.clear()
        self._gc_task = asyncio.create_task(self._gc_loop(), name="notifier-gc")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop sending. A delivery under way may finish and be logged (for ``grace_s`` at most),
        so a clean restart never re-sends what was delivered; anything left is cancelled."""
        self._stopping.set()
        tasks = [g.task for g in self.groups.values() if g.task is not None]
        if self._gc_task is not None:
            tasks.append(self._gc_task)
        pending: set[asyncio.Task] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for t in pending:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.groups.clear()
        ACTIVE_GROUPS.set(0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True means stop now."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    async def _gc_loop(self) -> None:
        while not await self.sleep(60.0):
            now = self.clock()
            for fp, a in list(self.alerts.items()):
                if a.resolved(now) and a.ends_at is not None and a.ends_at + RESOLVED_RETENTION_S < now:
                    del self.alerts[fp]
            with contextlib.suppress(Exception):
                await self.nflog.gc(now)
            if self.silences is not None:
                with contextlib.suppress(Exception):
                    await self.silences.store.delete_expired_before(now - 5 * 86400)

    def apply_config(self, config: NotifierConfig) -> None:
        """Swap the routing tree and channels; alerts are regrouped, the notification log prevents re-sends."""
        self._bind(config)
        self.config = config
        self.inhibitor = Inhibitor(config.inhibit_rules)
        for g in list(self.groups.values()):
            if g.task is not None:
                g.task.cancel()
        self.groups.clear()
        for a in list(self.alerts.values()):
            self._route(a)

    def _bind(self, config: NotifierConfig) -> None:
        """Hand the channels this process's local receivers; export their counters from zero, so
        a rate of failures is 0 (not absent) until one fails."""
        for receiver in config.receivers.values():
            for integ in receiver.integrations:
                integ.bind(self.local)
                NOTIFICATIONS.labels(integ.kind)
                NOTIFICATIONS_UNDELIVERED.labels(integ.kind)
                for retryable in ("true", "false"):
                    NOTIFICATION_FAILURES.labels(integ.kind, retryable)

    # ------------------------------------------------------------------ alerts in

    async def receive(self, alerts: list[Alert]) -> None:
        now = self.clock()
        for a in alerts:
            ALERTS_RECEIVED.labels("resolved" if a.resolved(now) else "firing").inc()
            old = self.alerts.get(a.fingerprint)
            if old is not None and not old.resolved(now) and old.starts_at < a.starts_at and not a.resolved(now):
                a.starts_at = old.starts_at
            a.updated_at = now
            self.alerts[a.fingerprint] = a
            self._route(a)

    def drop(self, fingerprints: set[str]) -> None:
        """Forget alerts silently: another alerter evaluates their rule group now and notifies for them."""
        for fp in fingerprints:
            self.alerts.pop(fp, None)
        for g in list(self.groups.values()):
            for fp in fingerprints:
                g.alerts.pop(fp, None)

    def _route(self, a: Alert) -> None:
        for route in self.config.route.match(a.labels):
            key = route.group_key(a.labels)
            group = self.groups.get(key)
            if group is None:
                if a.resolved(self.clock()):
                    # a resolution for a group we hold nothing of: flush it so the log clears
                    pass
                group = AggregationGroup(self, route, key, route.group_labels(a.labels))
                group.alerts[a.fingerprint] = a
                self.groups[key] = group
                ACTIVE_GROUPS.set(len(self.groups))
                group.start()
            else:
                group.alerts[a.fingerprint] = a

    def drop_group(self, group: AggregationGroup) -> None:
        if self.groups.get(group.key) is group and not group.alerts:
            del self.groups[group.key]
            ACTIVE_GROUPS.set(len(self.groups))

    # ------------------------------------------------------------------ muting

    async def refresh_mutes(self) -> None:
        if self.silences is not None:
            try:
                await self.silences.refresh()
            except Exception as exc:  # keep using the last known silences
                log.warning("cannot refresh silences: %s", exc)

    def muted(self, a: Alert, now: float) -> bool:
        if self.silences is not None and self.silences.muted_by(a.labels, now):
            return True
        return self.inhibitor.inhibited(a, list(self.alerts.values()), now)

    async def status(self) -> list[AlertStatus]:
        now = self.clock()
        await self.refresh_mutes()
        out = []
        for a in sorted(self.alerts.values(), key=lambda x: (x.name, x.fingerprint)):
            sil = self.silences.muted_by(a.labels, now) if self.silences else []
            inh = self.inhibitor.inhibited(a, list(self.alerts.values()), now)
            state = "resolved" if a.resolved(now) else ("suppressed" if sil or inh else "active")
            out.append(AlertStatus(a, state, sil, inh))
        return out

    # ------------------------------------------------------------------ delivery

    async def send_with_retry(self, integ: Integration, note: Notification, budget_s: float) -> bool:
        """Deliver with exponential backoff until accepted, a permanent error, the budget or stop."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        cfg = self.config
        budget = cfg.retry_timeout_s or max(budget_s, 1.0)
        started = time.monotonic()
        delays = backoff_delays(cfg.retry_initial_s, cfg.retry_max_s, jitter=0.2)
        attempt = 0
        while True:
            attempt += 1
            try:
                await integ.notify(note, self._session)
            except DeliveryError as exc:
                NOTIFICATION_FAILURES.labels(integ.kind, str(exc.retryable).lower()).inc()
                log.warning("delivery failed (attempt %d) %s %s: %s", attempt, note.receiver, integ.name, exc)
                if not exc.retryable:
                    NOTIFICATIONS_UNDELIVERED.labels(integ.kind).inc()
                    return False
            except Exception as exc:
                NOTIFICATION_FAILURES.labels(integ.kind, "true").inc()
                log.exception("delivery crashed (attempt %d) %s %s: %s", attempt, note.receiver, integ.name, exc)
            else:
                NOTIFICATIONS.labels(integ.kind).inc()
                NOTIFICATION_LATENCY.labels(integ.kind).observe(time.monotonic() - started)
                log.info("notified %s via %s: %s (%d alerts)", note.receiver, integ.name, note.status, len(note.alerts))
                return True
            delay = next(delays)
            if time.monotonic() - started + delay > budget:
                NOTIFICATIONS_UNDELIVERED.labels(integ.kind).inc()
                return False
            if await self.sleep(delay):
                return False
