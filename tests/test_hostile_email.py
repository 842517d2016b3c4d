"""Issue #16's email row: a group label holding CR or U+2028 made the email unbuildable
(ValueError), so it was never sent. Sent through a real SMTP receiver (aiosmtpd on 127.0.0.1),
the mail arrives and its subject, a configured header and both bodies decode back intact."""

from __future__ import annotations

import email
from email import policy
from email.header import decode_header, make_header

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from test_channels import _free_port, _Mailbox, _note

from alerting.channels.email import EmailIntegration


@pytest.mark.parametrize("value", ["db\rprimary", "db\u2028primary", "line\nbreak\x85\u2029 é \x00 end"])
async def test_email_encodes_any_label_value(value: str) -> None:
    """A group label with CR or U+2028 made the message unbuildable (ValueError: never sent); now
    it arrives, and the subject and bodies decode back to the value as it was."""
    box = _Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    try:
        em = EmailIntegration.from_config(0, {"to": ["Jörg Ops <oncall@example.org>"], "from": "ringmon@example.org",
                                              "smarthost": f"127.0.0.1:{ctl.port}", "starttls": "never",
                                              "headers": {"X-Group": "{{ not a template }} \u2028"}}, "email")
        note = _note()
        note.group_labels = {"alertname": "DiskFull", "cluster": value}
        note.alerts[0].labels["cluster"] = value
        async with aiohttp.ClientSession() as s:
            await em.notify(note, s)
        (_, rcpts, raw, _) = box.messages[0]
        assert rcpts == ["oncall@example.org"]
        headers = email.message_from_bytes(raw)  # decoded exactly as RFC 2047 says, no refolding
        assert str(make_header(decode_header(headers["Subject"]))) == f"[FIRING:1] DiskFull cluster={value}"
        assert str(make_header(decode_header(headers["X-Group"]))) == "{{ not a template }} \u2028"
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert msg["To"].addresses[0].display_name == "Jörg Ops"
        assert f"cluster = {value}\n" in msg.get_body(("plain",)).get_content()
        assert value.replace("\x00", "") in msg.get_body(("html",)).get_content().replace("\x00", "")
    finally:
        ctl.stop()
