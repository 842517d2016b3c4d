"""Cassandra schema of Ringmon: keyspace, time-bucketed tables, TTLs, TWCS windows, version.

One table per resolution and purpose, each with its own ``default_time_to_live`` and a
TimeWindowCompactionStrategy whose window is about 1/24 of that TTL (so about 24-30 SSTable
windows live per table and whole SSTables expire). ``create_schema`` is idempotent
(``IF NOT EXISTS``) and records ``schema_version`` in ``meta``. See
docs/ARCHITECTURE.md ("Cassandra storage") for the design and its partition-size arithmetic.

Buckets (all integers derived from the sample timestamp in ms):

- ``raw_recent``: partition ``(target, hour)`` where hour = ts // 1 h, clustered by
  ``(series_id, ts)``: one scrape of one target is one single-partition batch;
- ``raw_blocks``: sealed compressed blocks, partition ``(series_id, day)`` (rollup job);
  ``raw_block_times`` (version 8): partition ``start_ts`` (the window's), the timestamp
  frames the blocks of a window's target share, by key (``storage.blocks.share_times``:
  a version-4 block names its frame there instead of carrying it);
- ``raw_frames`` (version 6): partition ``(target, hour)``, one row per scrape clustered by
  ``ts``: the values in layout order (``storage.frames.encode_delta``, XOR'd with the frame at
  ``base_ts``, null = whole); ``raw_layouts``: partition ``target``, the series ids of each
  ``layout_id``. Both expire with the raw retention (TTL); the rollup job seals frames long
  before and then drops the partitions of sealed hours of ``raw_frames`` and ``raw_recent``
  (partition tombstones, ``RollupJob.drop_sealed_raw``);
- ``raw_late``: partition ``day``, one row per hour that got a late write (samples older
  than ``CassandraStorage.late_after_ms`` when written, e.g. a spool replay) and when: a
  sealed block older than that write may miss samples, so reads merge that hour's rows in;
- ``raw_late_frames`` (version 7): partition ``hour``, one row per target that got a frame
  stored more than ``CassandraStorage.settle_after_ms`` (15 s) after its scrape, and when:
  a reader's kept frames (``CassandraStorage.frame_cache``) of that target and hour older
  than that write are read again. Only readers use it (the rollup job goes by ``raw_late``);
  its rows live ``LATE_FRAMES_TTL_S``;
- ``rollup_1m_chunks``: partition ``(series_id, day)``, one row per 6-hour chunk;
  ``rollup_1h_chunks``: partition ``(series_id, bucket)`` with bucket = ts // 32 days, one
  row per 8-day chunk, plus *pieces* of it keyed by their first bucket, which live seals
  write unread and a later write merges into the chunk; a chunk packs a series'
  buckets (``storage.rollup_chunks``), one ``c_<column>`` blob per column since version 4
  (``data`` holds the record form of version 3, empty in column form). Version 2 kept one
  row per bucket in ``rollup_1m`` / ``rollup_1h``: ``create_schema`` (``ringmon storage
  init``) packs those rows into chunks and drops the old tables (``storage.rollup_upgrade``);
  on a version-3 keyspace it adds the column blobs (chunks already written stay in record
  form, which reads still take);
- index (two levels, same shape): ``series_day`` (series of a metric with their labels and
  targets), ``postings_day`` (label -> series), ``label_values_day``, ``label_names_day``
  bucketed by day, and ``..._month`` bucketed by 32-day periods for long ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.base import DAY_MS, HOUR_MS, STORED_CHUNK_COLUMNS
from storage.cassandra_frames import LAYOUT_REWRITE_MS

if TYPE_CHECKING:
    from cassandra.cluster import Session

# 2: raw_late (``ringmon storage init`` on a version-1 keyspace adds it); 3: rollup chunks
# (``ringmon storage init`` packs a version-2 keyspace's rollup rows into them); 4: rollup
# chunks in column form (init adds the ``c_<column>`` blobs to the chunk tables); 5: the rate
# aggregates' blobs (``storage.base.ADDED_IN_V5``; init adds them, older chunks read NaN there);
# 6: scrape frames (``raw_frames``, ``raw_layouts``; init adds them, ``raw_recent`` rows stay);
# 7: ``raw_late_frames`` (init adds it); 8: ``raw_block_times`` (init adds it; blocks of
# version 4 name their timestamp frame there, older blocks carry theirs). The 1h chunk pieces
# (rows of ``rollup_1h_chunks`` keyed inside their span, ``storage.cassandra_rollup``) change no
# table: a version-8 keyspace holds chunks only, which this Ringmon reads and merges into as
# before, and readers before the pieces join them with their chunk too. A rollup job before them
# would merge a chunk without its pieces: stop older rollup jobs before starting this one.
SCHEMA_VERSION = 8
CHUNK_TABLES = ("rollup_1m_chunks", "rollup_1h_chunks")
CHUNK_COLUMNS = tuple(STORED_CHUNK_COLUMNS.values())
_CHUNK_DDL = "".join(f"{c} blob, " for c in CHUNK_COLUMNS)

RAW_BUCKET_MS = HOUR_MS  # raw_recent partition width
BLOCK_BUCKET_MS = DAY_MS  # raw_blocks partition width
ROLLUP_1M_BUCKET_MS = DAY_MS
ROLLUP_1H_BUCKET_MS = 32 * DAY_MS
INDEX_SHARDS = 32  # series_* / postings partitions per (metric, bucket[, label])
POSTING_SPREAD = 8  # shards one label value's postings spread over (an "=" lookup reads these)


@dataclass(frozen=True)
class IndexLevel:
    """One granularity of the series index: its table suffix, bucket width and TTL."""

    suffix: str
    bucket_ms: int
    ttl_s: int


DAY_S = 86_400
# Retention (issue 6): raw 7 d, 1 m 30 d, 1 h 365 d, plus a margin for late sealing/rollup.
DEFAULT_TTLS_S: dict[str, int] = {
    "raw_recent": 8 * DAY_S,
    "raw_blocks": 8 * DAY_S,
    # frames and their layouts live as long as raw rows: a rollup job down for less than the raw
    # retention loses nothing (a shorter TTL saves disk and relies on RingmonRollupLag)
    "raw_frames": 8 * DAY_S,
    "rollup_1m": 32 * DAY_S,
    "rollup_1h": 370 * DAY_S,
    "index_day": 32 * DAY_S,  # covers raw and 1 m ranges
    "index_month": 400 * DAY_S,  # covers 1 h ranges
}

# ``raw_late_frames`` rows: a reader's kept frames read longer ago than this (less a margin)
# are read again (``CassandraStorage._drop_marked``), not trusted on marks that may be gone.
LATE_FRAMES_TTL_S = DAY_S

INDEX_LEVELS = (
    IndexLevel("day", DAY_MS, DEFAULT_TTLS_S["index_day"]),
    IndexLevel("month", 32 * DAY_MS, DEFAULT_TTLS_S["index_month"]),
)

_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,47}$")


@dataclass
class SchemaSpec:
    """What ``ringmon storage init`` creates: keyspace, replication and per-table TTLs."""

    keyspace: str = "ringmon"
    replication: dict[str, str | int] = field(
        default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": 1}
    )
    ttls_s: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TTLS_S))

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.keyspace):
            raise ValueError(
                f"invalid keyspace name {self.keyspace!r}: letters, digits and _, starting with a letter, max 48"
            )
        for k, v in self.ttls_s.items():
            if k not in DEFAULT_TTLS_S:
                raise ValueError(f"unknown table TTL key {k!r} (known: {', '.join(DEFAULT_TTLS_S)})")
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"TTL of {k} must be a positive number of seconds, got {v!r}")


def parse_replication(text: str) -> dict[str, str | int]:
    """``"1"`` -> SimpleStrategy rf 1; ``"dc1:3,dc2:2"`` -> NetworkTopologyStrategy."""
    text = text.strip()
    if text.isdigit():
        return {"class": "SimpleStrategy", "replication_factor": int(text)}
    out: dict[str, str | int] = {"class": "NetworkTopologyStrategy"}
    for part in text.split(","):
        dc, sep, rf = part.partition(":")
        if not sep or not dc.strip() or not rf.strip().isdigit():
            raise ValueError(f"invalid replication {text!r}: use N or dc1:N,dc2:M")
        out[dc.strip()] = int(rf)
    return out


def twcs_window(ttl_s: int) -> tuple[str, int]:
    """TWCS (unit, size) giving about 24 windows over the TTL (at least 1 hour)."""
    hours = max(1, round(ttl_s / 3600 / 24))
    if hours >= 24:
        return "DAYS", max(1, round(hours / 24))
    return "HOURS", hours


# The raw tables whose sealed hours the rollup job tombstones (``RollupJob.drop_sealed_raw``),
# 4-5 h after the data: a tombstone purges its data when a compaction meets both, i.e. when it
# is flushed into the data's TWCS window (merged whole once closed). In 8-hour windows half the
# frames' tombstones landed in a later window, which never compacts with the data's (those
# frames stayed to their TTL); in 1-day windows 1 in 6.
DROPPED_RAW_TWCS = ("DAYS", 1)


LZ4_16K = "{'class': 'LZ4Compressor', 'chunk_length_in_kb': 16}"
# Sealed blocks are Zstandard frames of a few hundred bytes each, which LZ4 cannot shrink; Zstd
# over a 16 KB chunk of them takes ~10% off (what each small frame repeats: its entropy tables,
# headers), 1.29 -> 1.16 B/sample on independent node_exporter-shaped series of 108 samples
# (bench.rollup.node_exporter_host), for ~15-20 us more of the node's CPU per chunk a read
# decompresses. ``create_schema`` sets it on a keyspace made before (new SSTables only).
ZSTD_16K = "{'class': 'ZstdCompressor', 'chunk_length_in_kb': 16}"
COMPRESSION_BY_TABLE = {"raw_blocks": ZSTD_16K}


def _options(ttl_s: int, order: str = "", window: tuple[str, int] | None = None, compression: str = LZ4_16K) -> str:
    unit, size = window or twcs_window(ttl_s)
    opts = [
        f"default_time_to_live = {ttl_s}",
        "compaction = {'class': 'TimeWindowCompactionStrategy', "
        f"'compaction_window_unit': '{unit}', 'compaction_window_size': {size}}}",
        f"compression = {compression}",
        # TTL'd data never gets tombstones of its own: expire whole SSTables quickly.
        f"gc_grace_seconds = {3 * 3600}",
    ]
    if order:
        opts.insert(0, f"CLUSTERING ORDER BY ({order})")
    return " AND ".join(opts)


def table_statements(spec: SchemaSpec) -> list[tuple[str, str]]:
    """(table name, CREATE TABLE statement) for every table, in creation order."""
    ks, t = spec.keyspace, spec.ttls_s
    stmts = [
        (
            "meta",
            f"CREATE TABLE IF NOT EXISTS {ks}.meta (key text PRIMARY KEY, value text)",
        ),
        (
            "raw_recent",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_recent (target text, hour int, series_id bigint, "
            "ts bigint, value double, PRIMARY KEY ((target, hour), series_id, ts)) WITH "
            + _options(t["raw_recent"], "series_id ASC, ts ASC", DROPPED_RAW_TWCS),
        ),
        (
            "raw_blocks",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_blocks (series_id bigint, day int, start_ts bigint, "
            "end_ts bigint, count int, codec tinyint, data blob, "
            "PRIMARY KEY ((series_id, day), start_ts)) WITH "
            + _options(t["raw_blocks"], "start_ts ASC", compression=COMPRESSION_BY_TABLE["raw_blocks"]),
        ),
        (
            "raw_block_times",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_block_times (start_ts bigint, key bigint, data blob, "
            # (a day longer than the blocks naming them: written just before them, they must
            # not expire first, nor before a reseal rewrites them)
            "PRIMARY KEY ((start_ts), key)) WITH " + _options(t["raw_blocks"] + DAY_S, "key ASC"),
        ),
        (
            "raw_frames",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_frames (target text, hour int, ts bigint, base_ts bigint, "
            "layout_id bigint, data blob, PRIMARY KEY ((target, hour), ts)) WITH "
            + _options(t["raw_frames"], "ts ASC", DROPPED_RAW_TWCS),
        ),
        (
            "raw_layouts",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_layouts (target text, layout_id bigint, series_ids blob, "
            "PRIMARY KEY ((target), layout_id)) WITH "
            # a layout row is rewritten every LAYOUT_REWRITE_MS: it outlives the frames naming it
            + _options(t["raw_frames"] + LAYOUT_REWRITE_MS // 1000, "layout_id ASC"),
        ),
        (
            "raw_late",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_late (day int, hour int, written_at bigint, "
            "PRIMARY KEY ((day), hour)) WITH " + _options(t["raw_recent"], "hour ASC"),
        ),
        (
            "raw_late_frames",
            f"CREATE TABLE IF NOT EXISTS {ks}.raw_late_frames (hour int, target text, written_at bigint, "
            "PRIMARY KEY ((hour), target)) WITH " + _options(LATE_FRAMES_TTL_S, "target ASC"),
        ),
        (
            "rollup_1m_chunks",
            f"CREATE TABLE IF NOT EXISTS {ks}.rollup_1m_chunks (series_id bigint, day int, start_ts bigint, "
            "data blob, " + _CHUNK_DDL + "PRIMARY KEY ((series_id, day), start_ts)) WITH "
            + _options(t["rollup_1m"], "start_ts ASC"),
        ),
        (
            "rollup_1h_chunks",
            f"CREATE TABLE IF NOT EXISTS {ks}.rollup_1h_chunks (series_id bigint, bucket int, start_ts bigint, "
            "data blob, " + _CHUNK_DDL + "PRIMARY KEY ((series_id, bucket), start_ts)) WITH "
            + _options(t["rollup_1h"], "start_ts ASC"),
        ),
    ]
    for level in INDEX_LEVELS:
        ttl = t[f"index_{level.suffix}"]
        s = level.suffix
        stmts += [
            (
                f"series_{s}",
                f"CREATE TABLE IF NOT EXISTS {ks}.series_{s} (metric text, bucket int, shard smallint, "
                "series_id bigint, labels text, targets set<text>, "
                "PRIMARY KEY ((metric, bucket, shard), series_id)) WITH "
                + _options(ttl, "series_id ASC"),
            ),
            (
                f"postings_{s}",
                f"CREATE TABLE IF NOT EXISTS {ks}.postings_{s} (metric text, bucket int, name text, "
                "shard smallint, value text, series_id bigint, "
                "PRIMARY KEY ((metric, bucket, name, shard), value, series_id)) WITH "
                + _options(ttl, "value ASC, series_id ASC"),
            ),
            (
                f"label_values_{s}",
                f"CREATE TABLE IF NOT EXISTS {ks}.label_values_{s} (bucket int, name text, shard smallint, "
                "value text, PRIMARY KEY ((bucket, name, shard), value)) WITH " + _options(ttl, "value ASC"),
            ),
            (
                f"label_names_{s}",
                f"CREATE TABLE IF NOT EXISTS {ks}.label_names_{s} (bucket int, name text, "
                "PRIMARY KEY ((bucket), name)) WITH " + _options(ttl, "name ASC"),
            ),
        ]
    return stmts


def keyspace_statement(spec: SchemaSpec) -> str:
    repl = ", ".join(
        f"'{k}': {v}" if isinstance(v, int) else f"'{k}': '{v}'" for k, v in spec.replication.items()
    )
    return f"CREATE KEYSPACE IF NOT EXISTS {spec.keyspace} WITH replication = {{{repl}}}"


def create_schema(session: Session, spec: SchemaSpec) -> list[str]:
    """Create keyspace and tables if missing (blocking driver calls); returns tables created.

    Idempotent: existing tables are left as they are (but for added chunk columns and the
    compression of ``COMPRESSION_BY_TABLE``, set if it differs). Records ``schema_version``.
    """
    session.execute(keyspace_statement(spec), timeout=60)
    existing = {
        r[0]
        for r in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (spec.keyspace,)
        )
    }
    created = []
    for name, stmt in table_statements(spec):
        if name not in existing:
            session.execute(stmt, timeout=60)
            created.append(name)
    for table, compression in COMPRESSION_BY_TABLE.items():
        if table in existing:
            got = session.execute(
                "SELECT compression FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
                (spec.keyspace, table),
            ).one()
            want = compression.split("'")[3]  # (the class)
            if got is None or not str(got[0].get("class", "")).endswith(want):
                session.execute(f"ALTER TABLE {spec.keyspace}.{table} WITH compression = {compression}", timeout=60)
    for table in CHUNK_TABLES:
        if table in existing:
            have = {
                r[0]
                for r in session.execute(
                    "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
                    (spec.keyspace, table),
                )
            }
            for col in CHUNK_COLUMNS:
                if col not in have:
                    session.execute(f"ALTER TABLE {spec.keyspace}.{table} ADD {col} blob", timeout=60)
    from storage import rollup_upgrade  # the chunk codec, imported by init only (not by the scraper)

    for old in rollup_upgrade.ROW_TABLES_BEFORE_CHUNKS:
        if old in existing:
            rollup_upgrade.convert_row_table(session, spec.keyspace, old, spec.ttls_s[old])
    row = session.execute(
        f"SELECT value FROM {spec.keyspace}.meta WHERE key = 'schema_version'"
    ).one()
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise RuntimeError(
            f"keyspace {spec.keyspace} has schema version {row[0]}, newer than this Ringmon ({SCHEMA_VERSION})"
        )
    session.execute(
        f"INSERT INTO {spec.keyspace}.meta (key, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
    )
    for key, value in (("index_shards", INDEX_SHARDS), ("posting_spread", POSTING_SPREAD)):
        session.execute(f"INSERT INTO {spec.keyspace}.meta (key, value) VALUES (%s, %s)", (key, str(value)))
    return created


def schema_version(session: Session, keyspace: str) -> int | None:
    """The recorded schema version of ``keyspace``, or None when not initialised."""
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'meta'", (keyspace,)
    )
    if rows.one() is None:
        return None
    row = session.execute(f"SELECT value FROM {keyspace}.meta WHERE key = 'schema_version'").one()
    return int(row[0]) if row else None
