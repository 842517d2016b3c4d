"""Sample values as Prometheus's text and OpenMetrics parsers read them.

Both parsers call ``parseFloat`` (model/textparse/promparse.go): any ``p``, ``P`` or ``_``
is an error ("keep to pre-Go 1.13 float formats"), then Go's ``strconv.ParseFloat(s, 64)``,
and any error is a parse error. So a value is a plain ASCII decimal (``1``, ``-.5``, ``1.``,
``2E-3``), or ``Inf``/``+Inf``/``-Inf``/``Infinity``/``+Infinity``/``-Infinity``/``NaN`` in
any letter case (NaN without a sign); a decimal that rounds past the largest float64
(``1e309``) is ``ErrRange``, an error, while one that underflows reads as 0. Python's
``float()`` also takes blanks around the number, ``_`` digit groups, signed NaN and
non-ASCII digits, and turns an overflow into infinity: none of which Prometheus accepts.

``parse_value`` is the exact rule for one token; ``plain_decimal``/``special_ok`` let the
scrape cache keep C-speed ``float()`` and send only what it cannot vouch for to the parser.
"""

from __future__ import annotations

import math
import re

# What strconv.ParseFloat reads as a decimal: sign, digits with an optional point, exponent.
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_SPECIALS: dict[str, float] = {
    "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
    "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
    "nan": math.nan,
}
_SPECIAL_BYTES = frozenset(k.encode() for k in _SPECIALS)
# The bytes a plain decimal is made of (``bytes.translate(None, DECIMAL_BYTES)`` leaves nothing).
DECIMAL_BYTES = b"0123456789.eE+-"


def parse_value(tok: str) -> float:
    """The float Prometheus reads from ``tok``; ValueError where it reports a parse error."""
    if _DECIMAL_RE.fullmatch(tok):
        v = float(tok)
        if math.isinf(v):
            raise ValueError(f"{tok!r}: value out of range")
        return v
    if tok.isascii():
        special = _SPECIALS.get(tok.lower())
        if special is not None:
            return special
    raise ValueError(f"{tok!r}: invalid syntax")


def special_ok(raw: bytes) -> bool:
    """Whether ``raw`` (not a plain decimal) is a spelling of Inf/NaN Prometheus accepts."""
    return raw.lower() in _SPECIAL_BYTES


def vouched(raws: list[bytes], values: list[float]) -> bool:
    """Whether every ``float(raw)`` in ``values`` is what Prometheus reads from ``raw``.

    Only called with values ``float()`` accepted, so a token of decimal bytes is a decimal
    in both languages; anything else must be an Inf/NaN spelling, and an infinity must come
    from one (not from an overflowing decimal).
    """
    strip = bytes.translate
    if strip(b"".join(raws), None, DECIMAL_BYTES):
        if not all(special_ok(r) for r in raws if strip(r, None, DECIMAL_BYTES)):
            return False
    if math.inf in values or -math.inf in values:
        return all(not math.isinf(v) or strip(r, None, DECIMAL_BYTES) for r, v in zip(raws, values, strict=True))
    return True
