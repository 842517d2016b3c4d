"""Rule evaluation: each group at its interval through the query engine.

Recording rules write their series; alerting rules move alerts inactive -> pending -> firing
(``for``), keep them firing for ``keep_firing_for`` after the condition clears, then resolve.
``ALERTS`` and ``ALERTS_FOR_STATE`` are written like Prometheus does, with stale markers when
a series disappears. Alert state is saved to an AlertStateStore after each evaluation and
restored when a process (re)gains a group, so timers and firing alerts survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from alerting.notifier.model import Alert, fingerprint
from alerting.ownership import GroupOwnership, LocalOwnership
from alerting.rulefile import Rule, RuleGroup
from alerting.rulestore import ReloadReport, RuleStore
from alerting.state import FIRING, INACTIVE, PENDING, AlertStateRecord, AlertStateStore
from alerting.template import DEFAULT_LIMITS, TemplateLimits, expand_alert_template
from query.result import QueryResult
from storage.base import SampleWriter
from storage.model import STALE_NAN, SampleBatch, Series, labels_from_dict

log = logging.getLogger("ringmon.alerting.evaluator")

RULE_EVALUATIONS = Counter("ringmon_rule_evaluations_total", "Rule evaluations", ["group"])
RULE_FAILURES = Counter("ringmon_rule_evaluation_failures_total", "Rule evaluations that failed", ["group"])
GROUP_DURATION = Histogram("ringmon_rule_group_duration_seconds", "Time to evaluate one rule group")
GROUP_MISSED = Counter("ringmon_rule_group_iterations_missed_total", "Evaluations skipped because the previous one overran", ["group"])
OWNED_GROUPS = Gauge("ringmon_rule_groups_owned", "Rule groups this alerter evaluates")
ALERTS_ACTIVE = Gauge("ringmon_alerts", "Active alerts by state", ["state"])

QueryFunc = Callable[[str, int], Coroutine[Any, Any, QueryResult]]
RESOLVED_RETENTION_S = 15 * 60.0


class AlertSink(Protocol):
    async def receive(self, alerts: list[Alert]) -> None: ...


@dataclass
class EvalOptions:
    default_interval_ms: int = 60_000
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    resend_delay_s: float = 60.0
    resolved_retention_s: float = RESOLVED_RETENTION_S
    template_limits: TemplateLimits = DEFAULT_LIMITS


@dataclass
class RuleHealth:
    health: str = "unknown"  # ok | err | unknown
    last_error: str = ""
    last_evaluation: float = 0.0
    evaluation_time_s: float = 0.0


class RuleEvalError(Exception):
    """A rule's result cannot be used (duplicate label sets, limit exceeded, wrong type)."""


def rule_ids(group: RuleGroup) -> list[str]:
    """Stable identities of a group's rules: name + labels hash (+ occurrence when repeated)."""
    seen: dict[str, int] = {}
    out = []
    for r in group.rules:
        h = hashlib.sha256(repr(sorted(r.labels.items())).encode()).hexdigest()[:8]
        base = f"{r.kind}:{r.name}:{h}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}#{n}")
    return out


def _samples(res: QueryResult) -> list[tuple[dict[str, str], float]]:
    if res.type == "scalar":
        assert res.scalar is not None
        return [({}, float(res.scalar[1]))]
    if res.type == "vector":
        out = []
        for s in res.series:
            if len(s.values):
                out.append((dict(s.labels), float(s.values[-1])))
        return out
    raise RuleEvalError(f"rule result is a {res.type}, expected an instant vector or scalar")


class GroupRunner:
    """Evaluates one rule group and holds its alerts between evaluations."""

    def __init__(
        self,
        group: RuleGroup,
        query: QueryFunc,
        writer: SampleWriter,
        state_store: AlertStateStore,
        sink: AlertSink | None,
        options: EvalOptions,
    ) -> None:
        self.group = group
        self.query = query
        self.writer = writer
        self.state_store = state_store
        self.sink = sink
        self.options = options
        self.ids = rule_ids(group)
        self.alerts: dict[str, dict[str, AlertStateRecord]] = {}
        self.previous: dict[str, set[tuple]] = {}  # rule id -> label sets written last time
        self.health: dict[str, RuleHealth] = {}
        self.restored = False
        self._saved = ""
        self.last_evaluation = 0.0
        self.last_duration_s = 0.0
        RULE_FAILURES.labels(group.name)  # exported from zero: no failures is a rate of 0, not absent

    @property
    def key(self) -> str:
        return self.group.key

    @property
    def interval_ms(self) -> int:
        return self.group.effective_interval_ms(self.options.default_interval_ms)

    def update_group(self, group: RuleGroup) -> None:
        """New definition after a reload: state of rules that still exist carries over."""
        self.group = group
        self.ids = rule_ids(group)
        keep = set(self.ids)
        for rid in list(self.alerts):
            if rid not in keep:
                del self.alerts[rid]

    async def restore(self) -> None:
        records = await self.state_store.load_group(self.key)
        self.alerts = {}
        for rec in records:
            rec.last_sent_at = 0.0  # the notifier may have lost it: re-send, its log dedups
            self.alerts.setdefault(rec.rule, {})[rec.fingerprint] = rec
        known = set(self.ids)
        self.alerts = {k: v for k, v in self.alerts.items() if k in known}
        self.restored = True
        self._saved = ""
        n = sum(len(v) for v in self.alerts.values())
        if n:
            log.info("restored %d alerts of group %s", n, self.key)

    def forget(self) -> None:
        """Another alerter owns the group now; its state will be reloaded if we get it back.

        The notifier drops this group's alerts without notifying: the new owner re-sends them
        and the shared notification log keeps them from being delivered twice.
        """
        drop = getattr(self.sink, "drop", None)
        if drop is not None:
            drop({fingerprint({**self.options.external_labels, **r.labels}) for r in self.records()})
        self.alerts = {}
        self.previous = {}
        self.restored = False
        self._saved = ""

    async def evaluate(self, ts_ms: int) -> None:
        if not self.restored:
            await self.restore()
        started = time.monotonic()
        query_ts = ts_ms - self.group.query_offset_ms
        RULE_EVALUATIONS.labels(self.group.name).inc(len(self.group.rules))
        for rule, rid in zip(self.group.rules, self.ids, strict=True):
            t0 = time.monotonic()
            h = self.health.setdefault(rid, RuleHealth())
            batch = SampleBatch(target=f"rules/{self.group.name}")
            try:
                res = await self.query(rule.expr, query_ts)
                samples = _samples(res)
                if rule.is_alert:
                    await self._eval_alert(rule, rid, samples, query_ts, batch)
                else:
                    self._eval_record(rule, rid, samples, query_ts, batch)
                h.health, h.last_error = "ok", ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing rule must not stop the others
                RULE_FAILURES.labels(self.group.name).inc()
                h.health, h.last_error = "err", str(exc)
                log.warning("rule %s in group %s failed: %s", rule.name, self.key, exc)
                if rule.is_alert:
                    self._write_alert_series(rule, rid, query_ts, batch)
            h.last_evaluation = ts_ms / 1000.0
            h.evaluation_time_s = time.monotonic() - t0
            if len(batch):
                await self.writer.append(batch)
        await self._save()
        await self._send(ts_ms / 1000.0)
        self.last_evaluation = ts_ms / 1000.0
        self.last_duration_s = time.monotonic() - started
        GROUP_DURATION.observe(self.last_duration_s)

    # ------------------------------------------------------------------ recording rules

    def _eval_record(self, rule: Rule, rid: str, samples: list[tuple[dict[str, str], float]], ts_ms: int,
                     batch: SampleBatch) -> None:
        out: dict[tuple, float] = {}
        extra = {**self.group.labels, **rule.labels}
        for labels, v in samples:
            lab = dict(labels)
            lab.update(extra)
            lab["__name__"] = rule.name
            key = labels_from_dict(lab)
            if key in out:
                raise RuleEvalError("vector contains metrics with the same labelset after applying rule labels")
            out[key] = v
        if self.group.limit and len(out) > self.group.limit:
            raise RuleEvalError(f"exceeded limit of {self.group.limit} with {len(out)} series")
        for key, v in out.items():
            batch.add(Series.of(key), ts_ms, v)
        self._stale(rid, set(out), ts_ms, batch)

    def _stale(self, rid: str, now_keys: set[tuple], ts_ms: int, batch: SampleBatch) -> None:
        for gone in self.previous.get(rid, set()) - now_keys:
            batch.add(Series.of(gone), ts_ms, STALE_NAN)
        self.previous[rid] = now_keys

    # ------------------------------------------------------------------ alerting rules

    async def _expand_all(self, rule: Rule, samples: list[tuple[dict[str, str], float]], ts_ms: int
                          ) -> list[tuple[dict[str, str], float, dict[str, str], dict[str, str]]]:
        """Expand label and annotation templates per sample, in a worker thread (each expansion
        within ``template_limits``, so this loop keeps its cadence); ``query`` calls go back to
        the engine on this loop."""
        opts = self.options
        rule_labels = {**self.group.labels, **rule.labels}
        uses_query = any("query" in t for t in [*rule_labels.values(), *rule.annotations.values()])
        loop = asyncio.get_running_loop()

        def query_sync(expr: str) -> list[dict]:
            res = asyncio.run_coroutine_threadsafe(self.query(expr, ts_ms), loop).result(timeout=30)
            if res.type == "scalar" and res.scalar is not None:
                return [{"Labels": {}, "Value": float(res.scalar[1])}]
            return [{"Labels": dict(s.labels), "Value": float(s.values[-1])} for s in res.series if len(s.values)]

        def expand(base: dict[str, str], v: float) -> tuple[dict[str, str], dict[str, str]]:
            q = query_sync if uses_query else None
            lab = {k: expand_alert_template(t, f"__alert_{rule.name}", base, v, opts.external_labels,
                                            opts.external_url, q, opts.template_limits) for k, t in rule_labels.items()}
            ann = {k: expand_alert_template(t, f"__alert_{rule.name}", base, v, opts.external_labels,
                                            opts.external_url, q, opts.template_limits)
                   for k, t in rule.annotations.items()}
            return lab, ann

        def expand_all() -> list[tuple[dict[str, str], float, dict[str, str], dict[str, str]]]:
            out = []
            for labels, v in samples:
                base = {k: val for k, val in labels.items() if k != "__name__"}
                out.append((base, v, *expand(base, v)))
            return out

        if not any("{{" in t for t in [*rule_labels.values(), *rule.annotations.values()]):
            return [(b, v, dict(rule_labels), dict(rule.annotations))
                    for b, v in (({k: x for k, x in lab.items() if k != "__name__"}, v) for lab, v in samples)]
        return await loop.run_in_executor(None, expand_all)

    async def _eval_alert(self, rule: Rule, rid: str, samples: list[tuple[dict[str, str], float]], ts_ms: int,
                          batch: SampleBatch) -> None:
        ts = ts_ms / 1000.0
        opts = self.options
        found: dict[str, tuple[dict[str, str], dict[str, str], float]] = {}
        for base, v, expanded, ann in await self._expand_all(rule, samples, ts_ms):
            final = dict(base)
            for k, val in expanded.items():
                if val == "":
                    final.pop(k, None)
                else:
                    final[k] = val
            final["alertname"] = rule.name
            fp = fingerprint(final)
            if fp in found:
                raise RuleEvalError("vector contains metrics with the same labelset after applying alert labels")
            found[fp] = (final, ann, v)
        if self.group.limit and len(found) > self.group.limit:
            raise RuleEvalError(f"exceeded limit of {self.group.limit} with {len(found)} alerts")
        recs = self.alerts.setdefault(rid, {})
        for fp, (final, ann, v) in found.items():
            rec = recs.get(fp)
            if rec is not None and rec.state != INACTIVE:
                rec.value, rec.annotations, rec.labels = v, ann, final
                rec.keep_firing_since = 0.0
                continue
            recs[fp] = AlertStateRecord(rule=rid, fingerprint=fp, labels=final, annotations=ann, state=PENDING,
                                        value=v, active_at=ts)
        for fp, rec in list(recs.items()):
            if fp not in found and rec.state != INACTIVE:
                if rule.keep_firing_for_ms and rec.state == FIRING:
                    if not rec.keep_firing_since:
                        rec.keep_firing_since = ts
                    if (ts - rec.keep_firing_since) * 1000 < rule.keep_firing_for_ms:
                        continue
                if rec.state == PENDING:
                    del recs[fp]
                    continue
                rec.state = INACTIVE
                rec.resolved_at = ts
                continue
            if rec.state == INACTIVE:
                if ts - rec.resolved_at > opts.resolved_retention_s:
                    del recs[fp]
                continue
            if rec.state == PENDING and (ts - rec.active_at) * 1000 >= rule.for_ms:
                rec.state = FIRING
                rec.fired_at = ts
        self._write_alert_series(rule, rid, ts_ms, batch)

    def _write_alert_series(self, rule: Rule, rid: str, ts_ms: int, batch: SampleBatch) -> None:
        keys: set[tuple] = set()
        for rec in self.alerts.get(rid, {}).values():
            if rec.state == INACTIVE:
                continue
            alerts_key = labels_from_dict({**rec.labels, "__name__": "ALERTS", "alertstate": rec.state})
            for_key = labels_from_dict({**rec.labels, "__name__": "ALERTS_FOR_STATE"})
            batch.add(Series.of(alerts_key), ts_ms, 1.0)
            batch.add(Series.of(for_key), ts_ms, float(int(rec.active_at)))
            keys.add(alerts_key)
            keys.add(for_key)
        self._stale(rid, keys, ts_ms, batch)

    # ------------------------------------------------------------------ persistence and sending

    def records(self) -> list[AlertStateRecord]:
        return [r for recs in self.alerts.values() for r in recs.values()]

    async def _save(self) -> None:
        records = self.records()
        snapshot = "\n".join(sorted(r.to_json() for r in records))
        if snapshot == self._saved:
            return
        await self.state_store.save_group(self.key, records)
        self._saved = snapshot

    def _to_send(self, ts: float) -> list[AlertStateRecord]:
        opts = self.options
        out = []
        for rec in self.records():
            if rec.state == PENDING:
                continue
            never_sent = rec.last_sent_at == 0.0
            if never_sent or rec.resolved_at > rec.last_sent_at or rec.last_sent_at + opts.resend_delay_s <= ts:
                out.append(rec)
        return out

    async def _send(self, ts: float) -> None:
        if self.sink is None:
            return
        due = self._to_send(ts)
        if not due:
            return
        delta = max(self.options.resend_delay_s, self.interval_ms / 1000.0)
        alerts = []
        for rec in due:
            rec.last_sent_at = ts
            rec.valid_until = ts + 4 * delta
            resolved = rec.state == INACTIVE
            alerts.append(Alert(
                labels={**self.options.external_labels, **rec.labels},
                annotations=dict(rec.annotations),
                starts_at=rec.fired_at or rec.active_at,
                ends_at=rec.resolved_at if resolved else rec.valid_until,
                generator_url=self._generator_url(rec.rule),
            ))
        await self._save()
        await self.sink.receive(alerts)

    def _generator_url(self, rid: str) -> str:
        """A link to the rule's expression on the web UI (Prometheus' ``generatorURL``)."""
        base = self.options.external_url.rstrip("/")
        if not base:
            return ""
        for rule, i in zip(self.group.rules, self.ids, strict=True):
            if i == rid:
                return f"{base}/graph?g0.expr={urllib.parse.quote_plus(rule.expr)}&g0.tab=1"
        return base

    def active_alerts(self) -> list[AlertStateRecord]:
        return [r for r in self.records() if r.state != INACTIVE]


class RuleManager:
    """Runs every group of a RuleStore on its own timer, if this alerter owns the group."""

    def __init__(
        self,
        rules: RuleStore,
        query: QueryFunc,
        writer: SampleWriter,
        state_store: AlertStateStore,
        sink: AlertSink | None = None,
        ownership: GroupOwnership | None = None,
        options: EvalOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.query = query
        self.writer = writer
        self.state_store = state_store
        self.sink = sink
        self.ownership = ownership or LocalOwnership()
        self.options = options or EvalOptions()
        self.clock = clock
        self.runners: dict[str, GroupRunner] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self._stopping = asyncio.Event()
        self.evaluations: dict[str, int] = {}

    async def start(self) -> ReloadReport:
        self._stopping.clear()
        return await self.reload()

    async def reload(self) -> ReloadReport:
        """Re-read the rule files in a worker thread (a large file parses for seconds), then
        take the result and sync the group runners on this loop."""
        read = await asyncio.get_running_loop().run_in_executor(None, self.rules.read)
        report = self.rules.apply(read)
        self.sync_groups()
        return report

    def sync_groups(self) -> None:
        groups = {g.key: g for g in self.rules.groups()}
        for key in list(self.runners):
            if key not in groups:
                self._stop_group(key)
        for key, g in groups.items():
            runner = self.runners.get(key)
            if runner is None:
                self.runners[key] = GroupRunner(g, self.query, self.writer, self.state_store, self.sink, self.options)
                self.tasks[key] = asyncio.create_task(self._loop(key), name=f"rule-group {key}")
            elif runner.group != g:
                old_interval = runner.interval_ms
                runner.update_group(g)
                if runner.interval_ms != old_interval:
                    self.tasks[key].cancel()
                    self.tasks[key] = asyncio.create_task(self._loop(key), name=f"rule-group {key}")

    def _stop_group(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.runners.pop(key, None)

    async def stop(self) -> None:
        self._stopping.set()
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.tasks.clear()

    def _offset_ms(self, key: str, interval_ms: int) -> int:
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return h % interval_ms

    async def _loop(self, key: str) -> None:
        runner: GroupRunner | None = self.runners[key]
        assert runner is not None
        interval = runner.interval_ms
        offset = self._offset_ms(key, interval)
        now_ms = int(self.clock() * 1000)
        next_ms = (now_ms - offset) // interval * interval + offset
        if next_ms < now_ms:
            next_ms += interval
        while not self._stopping.is_set():
            delay = (next_ms - self.clock() * 1000) / 1000.0
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            runner = self.runners.get(key)
            if runner is None:
                return
            await self.evaluate_once(key, next_ms)
            now_ms = int(self.clock() * 1000)
            nxt = next_ms + interval
            if nxt <= now_ms:
                missed = (now_ms - next_ms) // interval
                GROUP_MISSED.labels(runner.group.name).inc(missed)
                nxt = next_ms + (missed + 1) * interval
            next_ms = nxt

    async def evaluate_once(self, key: str, ts_ms: int) -> bool:
        """One evaluation of one group if we own it; returns whether it ran."""
        runner = self.runners.get(key)
        if runner is None:
            return False
        if not self.ownership.owns(key):
            if runner.restored:
                log.info("group %s is now evaluated by another alerter", key)
                runner.forget()
            self._update_gauges()
            return False
        try:
            await runner.evaluate(ts_ms)
            self.evaluations[key] = self.evaluations.get(key, 0) + 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("evaluating group %s failed", key)
        self._update_gauges()
        return True

    def _update_gauges(self) -> None:
        owned = [r for r in self.runners.values() if r.restored]
        OWNED_GROUPS.set(len(owned))
        counts = {PENDING: 0, FIRING: 0}
        for r in owned:
            for rec in r.active_alerts():
                counts[rec.state] = counts.get(rec.state, 0) + 1
        for state, n in counts.items():
            ALERTS_ACTIVE.labels(state).set(n)

    def status(self) -> list[dict]:
        """Groups, rules, health and alerts in the shape of Prometheus' /api/v1/rules."""
        out = []
        for key, runner in self.runners.items():
            g = runner.group
            rules = []
            for rule, rid in zip(g.rules, runner.ids, strict=True):
                h = runner.health.get(rid, RuleHealth())
                item = {
                    "name": rule.name,
                    "query": rule.expr,
                    "labels": dict(rule.labels),
                    "health": h.health,
                    "lastError": h.last_error,
                    "lastEvaluation": h.last_evaluation,
                    "evaluationTime": h.evaluation_time_s,
                    "type": "alerting" if rule.is_alert else "recording",
                }
                if rule.is_alert:
                    recs = runner.alerts.get(rid, {}).values()
                    active = [r for r in recs if r.state != INACTIVE]
                    item.update({
                        "duration": rule.for_ms / 1000.0,
                        "keepFiringFor": rule.keep_firing_for_ms / 1000.0,
                        "annotations": dict(rule.annotations),
                        "state": FIRING if any(r.state == FIRING for r in active)
                        else PENDING if active else INACTIVE,
                        "alerts": [
                            {"labels": r.labels, "annotations": r.annotations, "state": r.state,
                             "activeAt": r.active_at, "value": _fmt(r.value)}
                            for r in active
                        ],
                    })
                rules.append(item)
            out.append({
                "name": g.name,
                "file": g.file,
                "key": key,
                "interval": runner.interval_ms / 1000.0,
                "limit": g.limit,
                "owned": self.ownership.owns(key),
                "rules": rules,
                "lastEvaluation": runner.last_evaluation,
                "evaluationTime": runner.last_duration_s,
            })
        return out


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.10e}"  # Go's strconv.FormatFloat(v, 'e', 10, 64), as Prometheus' API prints it
