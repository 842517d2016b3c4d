"""Metric metadata of a scraped body: the HELP, TYPE and UNIT lines, per metric family, as
Prometheus keeps them for ``/api/v1/metadata`` and ``/api/v1/targets/metadata``.

Read from a body the parsers accepted, at most once a minute per target: comment lines are
found with ``bytes.find`` and read by the lenient parser's ``parse_meta`` (so a text-format
body has no UNIT, as in Prometheus). Text-format ``untyped`` is reported as ``unknown``, as
Prometheus does; a family named only by HELP or UNIT has type ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.interning import InternTable
from scraper.lenient import LenientState, LineError


def _meta_lines(body: bytes, fmt: str) -> list[tuple[str, str, str]]:
    """(keyword, name, text) of every HELP/TYPE/UNIT line, as the parser reads it (HELP text
    unescaped); lines starting with ``#`` are found with ``bytes.find`` (C speed), not by
    trying every line, and read by the lenient parser's ``parse_meta``."""
    out = []
    st = LenientState(fmt)
    i = 0 if body.startswith(b"#") else body.find(b"\n#") + 1
    while i >= 0 and (i > 0 or body.startswith(b"#")):
        nxt = body.find(b"\n#", i)
        end = body.find(b"\n", i)
        try:
            meta = st.parse_meta(body[i : end if end >= 0 else len(body)].decode("utf-8", "replace"))
        except LineError:  # e.g. OpenMetrics' # EOF
            meta = None
        if meta is not None:
            out.append(meta)
        i = nxt + 1 if nxt >= 0 else -1
    return out


@dataclass(frozen=True)
class MetricMetadata:
    """What one target said about one metric family."""

    metric: str
    type: str = "unknown"
    help: str = ""
    unit: str = ""

    def to_list(self) -> list[str]:
        return [self.metric, self.type, self.help, self.unit]


class MetadataCache:
    """The metadata of a target's accepted bodies, read again at most every ``refresh_s``:
    reading costs ~1.5 ms for a 90 KB body of 300 families, and metadata rarely changes, so a
    scrape pays it about once a minute, not every interval - and never while the body keeps
    the lines of the one read (``layout``: the scrape cache's ``ScrapeCache.layout``)."""

    def __init__(self, refresh_s: float = 60.0) -> None:
        self.refresh_s = refresh_s
        self.read_at = float("-inf")
        self.current: dict[str, MetricMetadata] = {}
        self._layout: int | None = None  # the layout of the body read last

    def update(self, body: bytes, fmt: str, now: float, layout: int | None = None) -> dict[str, MetricMetadata]:
        if layout is not None and layout == self._layout:
            return self.current  # the same comment lines as the body read
        if now - self.read_at >= self.refresh_s:
            self.current = extract_metadata(body, fmt)
            self.read_at = now
            self._layout = layout
        return self.current


# One instance of each family's metadata for all targets (the targets of one exporter say the
# same): a scraper keeps a copy per family, not per family and target. Forgets all when full.
_shared: InternTable[MetricMetadata] = InternTable(200_000)


def extract_metadata(body: bytes, fmt: str) -> dict[str, MetricMetadata]:
    """Metric family -> its metadata, in order of appearance."""
    found: dict[str, dict[str, str]] = {}
    for keyword, name, text in _meta_lines(body, fmt):
        entry = found.setdefault(name, {})
        if keyword == "HELP":
            entry["help"] = text
        elif keyword == "TYPE":
            entry["type"] = "unknown" if text == "untyped" else text
        else:
            entry["unit"] = text
    out = {}
    for name, entry in found.items():
        meta = _shared(MetricMetadata(name, **entry))
        out[meta.metric] = meta
    return out


__all__ = ["MetadataCache", "MetricMetadata", "extract_metadata"]
