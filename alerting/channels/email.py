"""Email over SMTP: text and HTML bodies from templates; STARTTLS, implicit TLS and auth configurable.

Any text that is not plain printable ASCII goes into a header as RFC 2047 encoded words and into
the bodies as base64 UTF-8, so a label value holding CR, LF or U+2028 arrives intact instead of
making the message unbuildable. Templates expand and smtplib runs in a worker thread, so the
event loop never blocks on either.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import smtplib
import socket
import ssl
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, getaddresses, make_msgid

import aiohttp

from alerting.channels.base import (
    DeliveryError,
    Integration,
    Opts,
    render,
)
from alerting.notifier.model import Notification

DEFAULT_SUBJECT = ('[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Firing }}{{ end }}] '
                   '{{ .CommonLabels.alertname }}{{ range $k, $v := .GroupLabels }}{{ if ne $k "alertname" }} {{ $k }}={{ $v }}{{ end }}{{ end }}')
DEFAULT_TEXT = """{{ range .Alerts }}[{{ .Status }}] {{ .Labels.alertname }}
{{ range $k, $v := .Labels }}  {{ $k }} = {{ $v }}
{{ end }}{{ range $k, $v := .Annotations }}  {{ $k }}: {{ $v }}
{{ end }}  since {{ .StartsAt }}
{{ end }}{{ if .ExternalURL }}
{{ .ExternalURL }}
{{ end }}"""
DEFAULT_HTML = """<html><body><h2>{{ .Status | toUpper }}: {{ .CommonLabels.alertname | html }}</h2>
{{ range .Alerts }}<h3>[{{ .Status }}] {{ .Labels.alertname | html }}</h3><table>
{{ range $k, $v := .Labels }}<tr><td>{{ $k | html }}</td><td>{{ $v | html }}</td></tr>
{{ end }}</table>{{ range $k, $v := .Annotations }}<p><b>{{ $k | html }}</b>: {{ $v | html }}</p>
{{ end }}<p>since {{ .StartsAt }}</p>{{ end }}</body></html>"""


_WORD_BYTES = 39  # 52 base64 characters: an encoded word and "Subject: " fit in 78 columns


def _utf8(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) replaced."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def header_value(text: str) -> str:
    """A header value as given when it is printable ASCII, else RFC 2047 encoded words (UTF-8,
    base64, whole characters per word): CR, LF, U+2028 and every other character decode back as
    they were (email.header.Header would split the text at its line breaks and drop them)."""
    if text.isascii() and text.isprintable():
        return text
    words: list[bytes] = []
    chunk = b""
    for ch in _utf8(text):
        b = ch.encode("utf-8")
        if chunk and len(chunk) + len(b) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += b
    words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _addresses(text: str) -> str:
    """Address list with any non-ASCII display name encoded (the addresses stay readable)."""
    return ", ".join(formataddr((name, addr), "utf-8") for name, addr in getaddresses([text]))


def _text_part(text: str, subtype: str) -> MIMEText:
    return MIMEText(_utf8(text), subtype, "utf-8")  # base64: line breaks of any kind kept as sent


class EmailIntegration(Integration):
    kind = "email"
    KEYS = ("to", "from", "smarthost", "hello", "auth_username", "auth_password", "starttls", "require_tls",
            "tls", "tls_insecure_skip_verify", "ca_file", "subject", "text", "html", "send_resolved", "headers",
            "timeout")

    def __init__(self, index: int, to: list[str], sender: str, host: str, port: int, *, hello: str = "",
                 username: str = "", password: str = "", starttls: str = "opportunistic", implicit_tls: bool = False,
                 insecure: bool = False, ca_file: str = "", subject: str = DEFAULT_SUBJECT, text: str = DEFAULT_TEXT,
                 html: str = DEFAULT_HTML, send_resolved: bool = True, headers: dict[str, str] | None = None,
                 timeout_s: float = 15.0) -> None:
        super().__init__(index, send_resolved)
        self.to = to
        self.sender = sender
        self.host = host
        self.port = port
        self.hello = hello or socket.getfqdn()
        self.username = username
        self.password = password
        self.starttls = starttls  # "never" | "opportunistic" | "required"
        self.implicit_tls = implicit_tls
        self.insecure = insecure
        self.ca_file = ca_file
        self.subject = subject
        self.text = text
        self.html = html
        self.headers = headers or {}
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, index: int, data: dict, where: str, defaults: dict | None = None) -> EmailIntegration:
        merged = copy.copy(data)  # keeps a YamlMap's key lines; global.smtp defaults fill the keys not given
        for k, v in (defaults or {}).items():
            merged.setdefault(k, v)
        o = Opts(merged, where, cls.KEYS)
        host, sep, port = o.str("smarthost").rpartition(":")
        if not sep or not port.isdigit():
            raise o.error("smarthost", f"expected HOST:PORT, got {o.str('smarthost')!r}")
        require = o.bool("require_tls", False)
        starttls = o.str("starttls", "required" if require else "opportunistic")
        if starttls not in ("never", "opportunistic", "required"):
            raise o.error("starttls", f"expected never, opportunistic or required, got {starttls!r}")
        to = o.str_list("to")
        if not to:
            raise o.error("to", "at least one address is required")
        return cls(index, to, o.str("from"), host, int(port), hello=o.str("hello", ""),
                   username=o.str("auth_username", ""), password=o.str("auth_password", ""), starttls=starttls,
                   implicit_tls=o.bool("tls", False), insecure=o.bool("tls_insecure_skip_verify", False),
                   ca_file=o.str("ca_file", ""),
                   subject=o.template("subject", DEFAULT_SUBJECT),
                   text=o.template("text", DEFAULT_TEXT),
                   html=o.template("html", DEFAULT_HTML),
                   send_resolved=o.bool("send_resolved", True), headers=o.str_map("headers"),
                   timeout_s=o.duration("timeout", 15.0))

    def message(self, n: Notification) -> Message:
        text = render(self.text, n, "email.text")
        msg: Message
        if self.html:
            msg = MIMEMultipart("alternative")
            msg.attach(_text_part(text, "plain"))
            msg.attach(_text_part(render(self.html, n, "email.html"), "html"))
        else:
            msg = _text_part(text, "plain")
        msg["Subject"] = header_value(render(self.subject, n, "email.subject")[:998])
        msg["From"] = _addresses(self.sender)
        msg["To"] = _addresses(", ".join(self.to))
        msg["Date"] = formatdate(localtime=False)
        msg["Message-Id"] = make_msgid(domain="ringmon")
        for k, v in self.headers.items():
            msg[k] = header_value(v)
        return msg

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _send_sync(self, msg: Message) -> None:
        try:
            if self.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.hello,
                                                      timeout=self.timeout_s, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.hello, timeout=self.timeout_s)
            with smtp:
                smtp.ehlo()
                if not self.implicit_tls and self.starttls != "never":
                    if smtp.has_extn("starttls"):
                        smtp.starttls(context=self._tls_context())
                        smtp.ehlo()
                    elif self.starttls == "required":
                        raise DeliveryError(f"email: {self.host}:{self.port} does not offer STARTTLS (required)", retryable=False)
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(msg)
                if refused:
                    raise DeliveryError(f"email: recipients refused: {sorted(refused)}", retryable=False)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"email: authentication failed: {exc.smtp_code} {exc.smtp_error!r}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            retry = 400 <= exc.smtp_code < 500
            raise DeliveryError(f"email: server answered {exc.smtp_code} {exc.smtp_error!r}", retryable=retry) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"email: {self.host}:{self.port}: {type(exc).__name__}: {exc}", retryable=True) from None

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        # templates expand (within their budgets) in the worker thread too, off the event loop
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._send_sync(self.message(n)))
