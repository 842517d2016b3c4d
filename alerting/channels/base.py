"""What every channel implements, the delivery error it raises, and shared config helpers."""

from __future__ import annotations

import abc
import asyncio
import builtins
from dataclasses import dataclass
from typing import Any

import aiohttp

from alerting.notifier.model import Notification
from alerting.template import TemplateError, parse_template
from common.config_keys import check_keys, key_error, with_line


class DeliveryError(Exception):
    """A channel could not deliver; ``retryable`` says whether backing off and retrying may help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ChannelConfigError(ValueError):
    """A channel's config is wrong; the message names the key."""


@dataclass
class LocalReceivers:
    """What this process offers channels that deliver to Ringmon itself.

    ``journal``: where the ``notification_log`` channel records (a ``NotificationRecorder``;
    None where no web UI reads it, e.g. ``ringmon alerter``). ``web_url``: the base URL of
    Ringmon's own web server, for webhook URLs written as a path (``/-/webhook-sink/NAME``).
    """

    journal: Any = None
    web_url: str = ""


class Integration(abc.ABC):
    """One configured destination of a receiver (e.g. the second webhook of receiver "ops")."""

    kind: str = "integration"

    def __init__(self, index: int, send_resolved: bool) -> None:
        self.index = index
        self.send_resolved = send_resolved

    @property
    def name(self) -> str:
        return f"{self.kind}[{self.index}]"

    def bind(self, local: LocalReceivers) -> None:
        """Called by the notifier with this process's local receivers; most channels need none."""
        return None

    @abc.abstractmethod
    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        """Deliver ``n``; raise DeliveryError on failure."""


def render(template_text: str, n: Notification, name: str) -> str:
    """Expand a channel template (Alertmanager-like data: .Status, .Alerts, .CommonLabels ...)."""
    try:
        return parse_template(template_text, name, predefined=()).expand(n.template_data())
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


async def render_off_loop(template_text: str, n: Notification, name: str) -> str:
    """``render`` in a worker thread: the template's budgets bound it, the event loop keeps its cadence."""
    return await asyncio.to_thread(render, template_text, n, name)


def check_template(text: str, where: str) -> str:
    try:
        parse_template(text, where, predefined=())
    except TemplateError as exc:
        raise ChannelConfigError(f"{where}: invalid template: {exc.reason} (line {exc.line})") from None
    return text


class Opts:
    """Typed access to one channel's YAML mapping; unknown keys are errors."""

    def __init__(self, data: Any, where: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ChannelConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        check_keys(data, known, where, ChannelConfigError)
        self.data = data
        self.where = where

    def template(self, key: str, default: str) -> str:
        """The template text of ``key`` (or ``default``), parsed once so a bad one fails at load, on its line."""
        try:
            return check_template(self.str(key, default), f"{self.where}.{key}")
        except ChannelConfigError as exc:
            raise ChannelConfigError(with_line(self.data, self.where, key, str(exc))) from None

    def error(self, key: str, problem: str) -> ChannelConfigError:
        """The error about ``key``'s value: ``<file>:<line>: <dotted.key>: <problem>``."""
        return ChannelConfigError(key_error(self.data, self.where, key, problem))

    def str(self, key: str, default: str | None = None) -> str:
        v = self.data.get(key, default)
        if v is None:
            raise ChannelConfigError(key_error(self.data, self.where, key, "required"))
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ChannelConfigError(key_error(self.data, self.where, key, f"expected a string, got {type(v).__name__}"))
        return str(v)

    def bool(self, key: builtins.str, default: bool) -> bool:
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            raise ChannelConfigError(key_error(self.data, self.where, key, f"expected true or false, got {v!r}"))
        return v

    def num(self, key: builtins.str, default: float) -> float:
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ChannelConfigError(key_error(self.data, self.where, key, f"expected a number, got {v!r}"))
        return float(v)

    def duration(self, key: builtins.str, default: float) -> float:
        from common.durations import DurationError, seconds_of

        v = self.data.get(key)
        if v is None:
            return default
        try:
            return seconds_of(v)
        except DurationError as exc:
            raise ChannelConfigError(key_error(self.data, self.where, key, f"{exc}")) from None

    def str_list(self, key: builtins.str, default: builtins.list[builtins.str] | None = None) -> builtins.list[builtins.str]:
        v = self.data.get(key, default)
        if v is None:
            raise ChannelConfigError(key_error(self.data, self.where, key, "required"))
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ChannelConfigError(key_error(self.data, self.where, key, "expected a list of strings"))
        return list(v)

    def str_map(self, key: builtins.str) -> dict[builtins.str, builtins.str]:
        v = self.data.get(key) or {}
        if not isinstance(v, dict):
            raise ChannelConfigError(key_error(self.data, self.where, key, "expected a mapping"))
        return {str(k): str(x) for k, x in v.items()}

    def url(self, key: builtins.str, default: builtins.str | None = None) -> builtins.str:
        u = self.str(key, default)
        if not u.startswith(("http://", "https://")):
            raise ChannelConfigError(key_error(self.data, self.where, key, f"expected an http:// or https:// URL, got {u!r}"))
        return u


async def post(
    session: aiohttp.ClientSession,
    url: str,
    timeout_s: float,
    what: str,
    ok: tuple[int, ...] = (200, 201, 202, 204),
    **kwargs: Any,
) -> tuple[int, str]:
    """POST and classify the answer: 2xx ok; 429 and 5xx retryable; other 4xx permanent."""
    try:
        async with session.post(url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs) as resp:
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DeliveryError(f"{what}: {url}: {type(exc).__name__}: {exc}", retryable=True) from None
    if status in ok or 200 <= status < 300:
        return status, body
    retryable = status == 429 or status >= 500
    raise DeliveryError(f"{what}: {url} answered {status}: {body[:200]}", retryable=retryable)
