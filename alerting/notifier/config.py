"""The notifier config (Alertmanager-like YAML): route tree, receivers with channels, inhibit rules.

Errors say ``<file>: <key.path>: <what was expected>``; unknown keys are errors, worded by
``common.config_keys`` with the line (``<file>:<line>: <key.path>: unknown key (known keys here: ...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerting.channels.alertmanager import AlertmanagerIntegration
from alerting.channels.base import ChannelConfigError, Integration
from alerting.channels.email import EmailIntegration
from alerting.channels.notification_log import NotificationLogIntegration
from alerting.channels.pagerduty import PagerDutyIntegration
from alerting.channels.phone import PhoneIntegration
from alerting.channels.webhook import WebhookIntegration
from alerting.notifier.inhibit import InhibitRule
from alerting.notifier.matchers import MatcherSyntaxError, parse_matchers
from alerting.notifier.routing import Route
from common.config_keys import check_keys, in_file, key_error, with_line
from common.durations import DurationError, seconds_of
from common.yamlfile import YamlFileError, load_yaml_file
from storage.matchers import Matcher, MatchOp


class NotifierConfigError(ValueError):
    """The notifier config is wrong; the message names file, key and reason."""


CHANNEL_KINDS: dict[str, Any] = {
    "webhook_configs": WebhookIntegration,
    "pagerduty_configs": PagerDutyIntegration,
    "phone_configs": PhoneIntegration,
    "email_configs": EmailIntegration,
    "alertmanager_configs": AlertmanagerIntegration,
    "notification_log_configs": NotificationLogIntegration,  # last: earlier kinds keep their indices
}
ROUTE_KEYS = ("receiver", "matchers", "match", "match_re", "continue", "group_by", "group_wait",
              "group_interval", "repeat_interval", "routes")
TOP_KEYS = ("global", "route", "receivers", "inhibit_rules")
GLOBAL_KEYS = ("external_url", "resolve_timeout", "smtp", "retry_initial", "retry_max", "retry_timeout",
               "notification_log_retention")


@dataclass
class Receiver:
    name: str
    integrations: list[Integration] = field(default_factory=list)


@dataclass
class NotifierConfig:
    route: Route
    receivers: dict[str, Receiver]
    inhibit_rules: list[InhibitRule] = field(default_factory=list)
    external_url: str = ""
    resolve_timeout_s: float = 300.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    retry_timeout_s: float = 0.0  # 0: keep retrying until the group's next flush is due
    nflog_retention_s: float = 5 * 86400.0
    source: str = ""


def _dur(d: dict, where: str, key: str) -> float:
    """The duration ``d[key]`` in seconds; an error names the key's file and line."""
    try:
        return seconds_of(d[key])
    except DurationError as exc:
        raise NotifierConfigError(key_error(d, where, key, str(exc))) from None


def _check_keys(d: Any, where: str, known: tuple[str, ...]) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise NotifierConfigError(f"{where or 'config'}: expected a mapping, got {type(d).__name__}")
    check_keys(d, known, where, NotifierConfigError)
    return d


def _matchers(d: dict, where: str, list_key: str = "matchers", only: str = "") -> list[Matcher]:
    """The matchers of ``d``: the list under ``list_key`` and the ``match*`` mappings whose key starts with ``only``."""
    out: list[Matcher] = []
    for i, text in enumerate(d.get(list_key) or []):
        if not isinstance(text, str):
            raise NotifierConfigError(
                with_line(d, where, list_key, f"{where}.{list_key}[{i}]: expected a string like severity=\"page\""))
        try:
            out.extend(parse_matchers(text))
        except MatcherSyntaxError as exc:
            raise NotifierConfigError(with_line(d, where, list_key, f"{where}.{list_key}[{i}]: {exc}")) from None
    for key, op in (("match", MatchOp.EQ), ("match_re", MatchOp.RE), ("source_match", MatchOp.EQ),
                    ("source_match_re", MatchOp.RE), ("target_match", MatchOp.EQ), ("target_match_re", MatchOp.RE)):
        if key not in d or not key.startswith(only):
            continue
        m = d[key] or {}
        if not isinstance(m, dict):
            raise NotifierConfigError(key_error(d, where, key, "expected a mapping of label to value"))
        for name, value in m.items():
            try:
                out.append(Matcher(str(name), op, str(value)))
            except ValueError as exc:
                raise NotifierConfigError(key_error(m, f"{where}.{key}", name, str(exc))) from None
    return out


def _route(d: Any, where: str, parent: Route | None, path: str, receivers: set[str]) -> Route:
    d = _check_keys(d, where, ROUTE_KEYS)
    receiver = d.get("receiver", parent.receiver if parent else None)
    if not receiver:
        raise NotifierConfigError(key_error(d, where, "receiver", "the root route needs a receiver"))
    if receiver not in receivers:
        raise NotifierConfigError(key_error(d, where, "receiver", f"no receiver named {receiver!r} (known: {', '.join(sorted(receivers))})"))
    r = Route(receiver=str(receiver), path=path)
    if parent is not None:
        r.group_by, r.group_by_all = list(parent.group_by), parent.group_by_all
        r.group_wait_s, r.group_interval_s = parent.group_wait_s, parent.group_interval_s
        r.repeat_interval_s = parent.repeat_interval_s
        r.matchers = _matchers(d, where)
    elif any(k in d for k in ("matchers", "match", "match_re")):
        raise NotifierConfigError(f"{where}: the root route must not have matchers (it matches every alert)")
    if "continue" in d:
        if parent is None:
            raise NotifierConfigError(key_error(d, where, "continue", "not allowed on the root route"))
        if not isinstance(d["continue"], bool):
            raise NotifierConfigError(key_error(d, where, "continue", "expected true or false"))
        r.continue_matching = d["continue"]
    if "group_by" in d:
        gb = d["group_by"] or []
        if not isinstance(gb, list) or not all(isinstance(x, str) for x in gb):
            raise NotifierConfigError(key_error(d, where, "group_by", "expected a list of label names"))
        r.group_by_all = "..." in gb
        if r.group_by_all and len(gb) > 1:
            raise NotifierConfigError(key_error(d, where, "group_by", "'...' must be alone"))
        r.group_by = [] if r.group_by_all else list(gb)
    for key, attr in (("group_wait", "group_wait_s"), ("group_interval", "group_interval_s"),
                      ("repeat_interval", "repeat_interval_s")):
        if key in d:
            setattr(r, attr, _dur(d, where, key))
    if r.group_interval_s <= 0:
        raise NotifierConfigError(key_error(d, where, "group_interval", "must be positive"))
    children = d.get("routes") or []
    if not isinstance(children, list):
        raise NotifierConfigError(key_error(d, where, "routes", "expected a list of routes"))
    r.routes = [_route(c, f"{where}.routes[{i}]", r, f"{path}/{i}", receivers) for i, c in enumerate(children)]
    return r


def config_from_dict(data: Any, source: str = "<notifier config>") -> NotifierConfig:
    try:
        return _build(data, source)
    except ChannelConfigError as exc:
        raise NotifierConfigError(in_file(source, str(exc))) from None
    except NotifierConfigError as exc:
        raise NotifierConfigError(in_file(source, str(exc))) from None


def _build(data: Any, source: str) -> NotifierConfig:
    d = _check_keys(data, "", TOP_KEYS)  # "" is the top of the file: its keys have no prefix
    g = _check_keys(d.get("global"), "global", GLOBAL_KEYS)
    smtp_defaults = g.get("smtp") or {}
    if not isinstance(smtp_defaults, dict):
        raise NotifierConfigError(key_error(g, "global", "smtp", "expected a mapping of email_configs defaults"))
    receivers: dict[str, Receiver] = {}
    rlist = d.get("receivers") or []
    if not isinstance(rlist, list) or not rlist:
        raise NotifierConfigError(key_error(d, "", "receivers", "expected a non-empty list of receivers"))
    for i, rd in enumerate(rlist):
        where = f"receivers[{i}]"
        rd = _check_keys(rd, where, ("name", *CHANNEL_KINDS))
        name = rd.get("name")
        if not isinstance(name, str) or not name:
            raise NotifierConfigError(key_error(rd, where, "name", "required"))
        if name in receivers:
            raise NotifierConfigError(key_error(rd, where, "name", f"receiver {name!r} is defined twice"))
        rec = Receiver(name)
        idx = 0
        for kind, cls in CHANNEL_KINDS.items():
            items = rd.get(kind) or []
            if not isinstance(items, list):
                raise NotifierConfigError(key_error(rd, where, kind, "expected a list"))
            for j, item in enumerate(items):
                w = f"{where}.{kind}[{j}]"
                if cls is EmailIntegration:
                    integ = cls.from_config(idx, item, w, smtp_defaults)
                else:
                    integ = cls.from_config(idx, item, w)
                rec.integrations.append(integ)
                idx += 1
        receivers[name] = rec
    if "route" not in d:
        raise NotifierConfigError("route: required (the root of the routing tree)")
    route = _route(d["route"], "route", None, "root", set(receivers))
    inhibit: list[InhibitRule] = []
    for i, ir in enumerate(d.get("inhibit_rules") or []):
        where = f"inhibit_rules[{i}]"
        ir = _check_keys(ir, where, ("source_matchers", "target_matchers", "source_match", "source_match_re",
                                       "target_match", "target_match_re", "equal"))
        src = _matchers(ir, where, "source_matchers", only="source_match")
        tgt = _matchers(ir, where, "target_matchers", only="target_match")
        if not src or not tgt:
            raise NotifierConfigError(f"{where}: needs both source and target matchers")
        equal = ir.get("equal") or []
        if not isinstance(equal, list):
            raise NotifierConfigError(key_error(ir, where, "equal", "expected a list of label names"))
        inhibit.append(InhibitRule(src, tgt, [str(e) for e in equal]))
    cfg = NotifierConfig(route=route, receivers=receivers, inhibit_rules=inhibit, source=source)
    cfg.external_url = str(g.get("external_url", ""))
    for key, attr in (("resolve_timeout", "resolve_timeout_s"), ("retry_initial", "retry_initial_s"),
                      ("retry_max", "retry_max_s"), ("retry_timeout", "retry_timeout_s"),
                      ("notification_log_retention", "nflog_retention_s")):
        if key in g:
            setattr(cfg, attr, _dur(g, "global", key))
    return cfg


def load_notifier_config(path: str | Path) -> NotifierConfig:
    """Read and validate a notifier config file (route, receivers, inhibit rules)."""
    p = Path(path)
    try:
        data = load_yaml_file(p)
    except YamlFileError as exc:
        raise NotifierConfigError(str(exc)) from None
    return config_from_dict(data, str(p))
