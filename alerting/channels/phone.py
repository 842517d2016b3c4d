"""Phone channel through a Twilio-style REST API: a voice call speaking the alert, and/or an SMS."""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

import aiohttp

from alerting.channels.base import (
    ChannelConfigError,
    Integration,
    Opts,
    post,
    render_off_loop,
)
from alerting.notifier.model import Notification

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_SPOKEN = ('{{ if eq .Status "firing" }}Alert. {{ .CommonLabels.alertname }} is firing'
                  '{{ if .CommonAnnotations.summary }}: {{ .CommonAnnotations.summary }}{{ end }}.'
                  '{{ else }}Resolved. {{ .CommonLabels.alertname }} is resolved.{{ end }}')
DEFAULT_SMS = ('[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}'
               '{{ if .CommonAnnotations.summary }}: {{ .CommonAnnotations.summary }}{{ end }}'
               ' ({{ len .Alerts }} alert{{ if gt (len .Alerts) 1 }}s{{ end }})')


def twiml_say(text: str, voice: str = "alice", repeat: int = 2) -> str:
    """TwiML that speaks ``text`` (repeated so the callee can catch it)."""
    say = f'<Say voice="{escape(voice)}">{escape(text)}</Say>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{say * max(1, repeat)}</Response>'


class PhoneIntegration(Integration):
    kind = "phone"
    KEYS = ("base_url", "account_sid", "auth_token", "from", "to", "voice", "sms", "send_resolved",
            "spoken_text", "sms_text", "voice_name", "repeat", "timeout")

    def __init__(self, index: int, account_sid: str, auth_token: str, from_number: str, to_numbers: list[str],
                 voice: bool = True, sms: bool = True, base_url: str = DEFAULT_BASE_URL, send_resolved: bool = False,
                 spoken_text: str = DEFAULT_SPOKEN, sms_text: str = DEFAULT_SMS, voice_name: str = "alice",
                 repeat: int = 2, timeout_s: float = 10.0) -> None:
        super().__init__(index, send_resolved)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.to_numbers = to_numbers
        self.voice = voice
        self.sms = sms
        self.base_url = base_url.rstrip("/")
        self.spoken_text = spoken_text
        self.sms_text = sms_text
        self.voice_name = voice_name
        self.repeat = repeat
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, index: int, data: dict, where: str) -> PhoneIntegration:
        o = Opts(data, where, cls.KEYS)
        voice, sms = o.bool("voice", True), o.bool("sms", True)
        if not voice and not sms:
            raise ChannelConfigError(f"{where}: enable at least one of voice and sms")
        to = o.str_list("to")
        if not to:
            raise o.error("to", "at least one phone number is required")
        return cls(index, o.str("account_sid"), o.str("auth_token"), o.str("from"), to, voice, sms,
                   o.url("base_url", DEFAULT_BASE_URL), o.bool("send_resolved", False),
                   o.template("spoken_text", DEFAULT_SPOKEN),
                   o.template("sms_text", DEFAULT_SMS),
                   o.str("voice_name", "alice"), int(o.num("repeat", 2)), o.duration("timeout", 10.0))

    def _url(self, what: str) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/{what}.json"

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        token = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        spoken = await render_off_loop(self.spoken_text, n, "phone.spoken_text")
        text = (await render_off_loop(self.sms_text, n, "phone.sms_text"))[:1600]
        for to in self.to_numbers:
            if self.voice:
                form = {"To": to, "From": self.from_number, "Twiml": twiml_say(spoken, self.voice_name, self.repeat)}
                await post(session, self._url("Calls"), self.timeout_s, "phone call", data=form, headers=headers)
            if self.sms:
                form = {"To": to, "From": self.from_number, "Body": text}
                await post(session, self._url("Messages"), self.timeout_s, "sms", data=form, headers=headers)
