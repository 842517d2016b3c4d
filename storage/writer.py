"""Lossless batching writer from scrapers to Cassandra, with a disk spool for outages.

``BatchingWriter.append(batch)`` first appends the batch to the local spool (write-ahead:
nothing appended is lost when the process dies), then:

- DIRECT mode: sends it (``CassandraStorage.write_frames``: a scrape is one ``raw_frames``
  row, encoded by the writer before it is spooled so the record IS the frame; other samples
  are single-partition UNLOGGED batches of rows per (target, hour); index rows for new series
  batched per index partition), with at most ``max_in_flight`` requests in flight. A record of
  frames only (a scrape of known series) waits up to ``group_s`` for the others of that moment:
  they go together (``CassandraStorage.write_frame_sets``: a few UNLOGGED batches instead of a
  request per scrape; the node's CPU is per request). When ``max_in_flight`` requests are in
  flight, ``append`` waits: that wait is the backpressure to the scraper. A record is
  acknowledged when Cassandra stored it (a group's records when all of the group is stored;
  on a failure every one of them is replayed); a spool segment is deleted when all its
  records are acknowledged.
- SPOOLING mode (entered when a write fails because Cassandra is down or times out, when a
  free slot takes longer than ``slow_after_s``, or at start when the spool holds a backlog):
  ``append`` only writes to disk and returns. A replay task reads the spool in order from the
  oldest unacknowledged record and sends it (consecutive frames-only records of a segment
  as one group; bounded in flight, retrying every
  ``retry_interval_s`` while Cassandra is unreachable); once it has caught up with the end
  of the spool the writer goes back to DIRECT, in the same event-loop step, so no record is
  skipped. Writes are idempotent upserts, so a record sent twice (replay after a partial
  failure or a restart) is stored once.

A spooled frame may be XOR'd with a frame already stored (its chain's base, ``storage.
cassandra_frames``); the rollup job drops the raw input of sealed hours, and a replay after
such a drop could not resolve the frame. So the writer publishes a *raw floor* every
``FLOOR_EVERY_S`` (``CassandraStorage.publish_raw_floor``, under an id kept in the spool
directory): no frame it has yet to store needs a base older than that, and the job drops no
hour at or after it (``RollupJob.drop_sealed_raw``). A writer cut off from Cassandra cannot
move its floor on, so the hours of its spool stay. Until its first floor is published every
frame is whole; a spool left by an earlier run holds the floor at 0 until it is replayed; a
writer that closes with nothing left to store clears its floor.

``queue_depth()`` is the number of appended records not yet stored in Cassandra.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storage.base import DAY_MS, SampleWriter, StorageError
from storage.cassandra import CassandraStorage, TransientStorageError
from storage.cassandra_frames import KEY_SPAN_MS, Frame, FrameEncoder, split_frames
from storage.idsets import TargetIds
from storage.model import LayoutSeries, SampleBatch, Series, same_series
from storage.spool import Position, Spool, SpooledBatch, decode_batch, decode_defs, encode_batch

log = logging.getLogger(__name__)
INDEXING_IN_FLIGHT = 1  # records carrying series to index, sent at once (issue #20 memory)
GROUP_S = 1.0  # a frames-only record waits at most this long for others to go with (0: alone)
GROUP_MAX_RECORDS = 512  # records per group; a full group goes at once
FLOOR_EVERY_S = 60.0  # how often the writer publishes its raw floor (module docstring)
WRITER_ID_FILE = "writer-id"  # in the spool directory: the writer's id for its raw floor
LAST_LAYOUT_KEEP_MS = 600_000  # a target not appended to for this long: its last layout is forgotten
_NO_IDS = np.empty(0, dtype=np.int64)  # the rows of a scrape that is all one frame (never written to)
_NO_VALUES = np.empty(0, dtype=np.float64)
_NO_IDS.flags.writeable = _NO_VALUES.flags.writeable = False
_SERIES_ID = operator.attrgetter("id")  # map() of it walks a batch's series at C speed


@dataclass
class WriterStats:
    """Counters for /metrics and tests."""

    appended_batches: int = 0
    appended_samples: int = 0
    stored_batches: int = 0
    replayed_batches: int = 0
    failed_writes: int = 0
    dropped_batches: int = 0  # permanent errors (bad data); logged with the reason
    mode_changes: list[tuple[float, str]] = field(default_factory=list)
    last_error: str = ""


@dataclass(slots=True)
class _LastLayout:
    """A target's last scrape that was one frame: its series (the scrape loop's list, shared),
    their ids (distinct) and layout id."""

    series: list[Series] | LayoutSeries
    ids: np.ndarray
    layout: int
    used_ms: int  # when a batch last matched it


class _Slots:
    """A counting semaphore whose timed acquire never leaks a slot (unlike wait_for on 3.11)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self, timeout_s: float | None = None) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout_s)
        finally:
            if not fut.done():
                fut.cancel()
        if fut.cancelled():
            return False
        return True  # release() handed its slot to us

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.free += 1


class BatchingWriter(SampleWriter):
    """Spooling, batching, bounded-in-flight writer on a ``CassandraStorage``."""

    DIRECT = "direct"
    SPOOLING = "spooling"

    def __init__(
        self,
        storage: CassandraStorage,
        spool_dir: str | Path,
        *,
        max_in_flight: int = 64,
        slow_after_s: float = 2.0,
        retry_interval_s: float = 1.0,
        fsync_interval_s: float = 1.0,
        segment_bytes: int = 64 << 20,
        max_spool_bytes: int = 20 << 30,
        group_s: float = GROUP_S,
    ) -> None:
        self.storage = storage
        self.spool = Spool(spool_dir, segment_bytes=segment_bytes, fsync_interval_s=fsync_interval_s)
        self.max_in_flight = max_in_flight
        self.slow_after_s = slow_after_s
        self.retry_interval_s = retry_interval_s
        self.max_spool_bytes = max_spool_bytes
        self.group_s = group_s
        self.stats = WriterStats()
        self._slots = _Slots(max_in_flight)
        self._indexing = asyncio.Semaphore(INDEXING_IN_FLIGHT)
        self._unacked: dict[int, set[int]] = {}  # segment -> offsets of records not yet stored
        self._fully_known: set[int] = {self.spool.active}  # segments whose records are all in _unacked (or acked)
        self._labeled: dict[int, TargetIds] = {}  # day -> the series ids labeled in the spool, per target
        self._labeled_layouts: set[tuple[str, int, int]] = set()  # (target, layout id, day) all labeled
        self._frames = FrameEncoder()  # frames are encoded once, before they are spooled
        self._frames.whole_only = True  # until the first raw floor is published
        self.writer_id = _writer_id(Path(spool_dir))
        self._segment_first_ms: dict[int, int] = {}  # segment -> when this run first appended to it
        self._floor_task: asyncio.Task | None = None
        self._last_layout: dict[str, _LastLayout] = {}  # target -> its last scrape's series, as one frame
        self._last_layout_swept = 0
        self._group: list[tuple[Position, SpooledBatch]] | None = None  # frames-only records to send together
        self._group_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._progress = asyncio.Event()
        self._closed = False
        self._syncing = False
        backlog = [s for s in self.spool.backlog if self.spool.size(s) > 0]
        for s in self.spool.backlog:
            if self.spool.size(s) == 0:
                self.spool.delete(s)
        self.mode = self.SPOOLING if backlog else self.DIRECT
        self._cursor: Position | None = Position(backlog[0], 0) if backlog else None
        self._replayer: asyncio.Task | None = None
        if backlog:
            log.info("spool holds %d segment(s) from a previous run: replaying", len(backlog))
            self._start_replayer()

    # -- SampleWriter -----------------------------------------------------------------------

    def queue_depth(self) -> int:
        unacked = sum(len(v) for v in self._unacked.values())
        unknown = len([s for s in self.spool.segments() if s not in self._fully_known])
        return unacked + unknown

    async def append(self, batch: SampleBatch) -> None:
        if self._closed:
            raise StorageError("writer is closed")
        n = len(batch)
        if not n:
            return
        while self.spool.total_bytes() > self.max_spool_bytes:
            # Lossless backpressure: the disk budget is full, wait for replay to free it.
            await self._wait_progress(self.retry_interval_s)
        st = self.storage
        now = st.now_ms()
        if self._floor_task is None:
            self._floor_task = asyncio.get_running_loop().create_task(self._publish_floors())
        frames, ids, ts, vals, defs, layout_day = self._split(batch, now)
        encoded = self._frames.encode(batch.target, frames, now, with_ids=bool(defs))
        self._frames.remember(batch.target, frames, encoded, now)  # spooled: replay keeps the order
        payload = encode_batch(batch.target, ids, ts, vals, defs, encoded)
        pos = self.spool.append(payload)
        if layout_day is not None:
            self._labeled_layouts.add(layout_day)
        self._unacked.setdefault(pos.segment, set()).add(pos.offset)
        self._fully_known.add(pos.segment)
        self._segment_first_ms.setdefault(pos.segment, now)
        self.stats.appended_batches += 1
        self.stats.appended_samples += n
        self._maybe_sync()
        if self.mode != self.DIRECT:
            return
        # the series to index stay encoded in the payload until the record is sent
        rec = SpooledBatch(batch.target, ids, ts, vals, [], encoded, payload if defs else b"")
        del defs
        grouped = self._groups(rec)
        if grouped and self._group is not None:
            self._join_group(pos, rec)
            return
        if not await self._slots.acquire(self.slow_after_s):
            self._enter_spooling(pos, "Cassandra slow: no free write slot")
            return
        if self.mode != self.DIRECT:  # switched while we waited
            self._slots.release()
            return
        if not grouped:
            self._spawn(self._send(pos, rec, replay=False))
        elif self._group is not None:  # another append opened a group while we waited
            self._slots.release()
            self._join_group(pos, rec)
        else:  # a new group, holding the slot
            self._group = []
            self._group_timer = asyncio.get_running_loop().call_later(self.group_s, self._send_group)
            self._join_group(pos, rec)

    async def flush(self, timeout_s: float = 600.0) -> None:
        """Wait until every record appended so far is stored, or spooled while Cassandra is away."""
        self._send_group()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue_depth() == 0 or self.mode == self.SPOOLING:
                return
            await self._wait_progress(0.5)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the spool is fully replayed and stored; False on timeout."""
        self._send_group()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue_depth() == 0 and self.mode == self.DIRECT:
                return True
            await self._wait_progress(min(0.5, max(0.01, deadline - time.monotonic())))
        return False

    async def close(self) -> None:
        """Flush what can be sent now; the rest stays spooled for the next start."""
        if self._closed:
            return
        await self.flush(timeout_s=10.0)  # whatever is not stored by then stays in the spool
        self._closed = True
        if self._group_timer is not None:
            self._group_timer.cancel()
        extra = [t for t in (self._replayer, self._floor_task) if t is not None]
        for t in [*self._tasks, *extra]:
            t.cancel()
        await asyncio.gather(*self._tasks, *extra, return_exceptions=True)
        self._delete_done_segments()
        if self._floor_task is not None and self.queue_depth() == 0 and self.mode == self.DIRECT:
            try:  # nothing left to store: this writer holds no raw drop back
                await asyncio.wait_for(self.storage.clear_raw_floor(self.writer_id), self.slow_after_s)
            except (TimeoutError, StorageError) as exc:
                log.info("writer %s: raw floor not cleared (%s); it expires with the raw TTL", self.writer_id, exc)
        await asyncio.get_running_loop().run_in_executor(None, self.spool.close)

    def raw_floor_ms(self) -> int:
        """The oldest base a frame this writer has yet to store may need (module docstring):
        a frame is at most ``late_after_ms`` older than its append (else it is rows) and its
        base at most a key span older than it; 0 while a spool of an earlier run is pending."""
        now = self.storage.now_ms()
        oldest = now
        for seg in self.spool.segments():
            if seg in self._fully_known and not self._unacked.get(seg):
                continue
            first = self._segment_first_ms.get(seg)
            if first is None:
                return 0  # an earlier run's records: their times are not known here
            oldest = min(oldest, first)
        return max(0, oldest - self.storage.late_after_ms - KEY_SPAN_MS)

    async def publish_floor(self) -> int:
        """Publish ``raw_floor_ms``; from then on frames may be XOR'd with stored ones."""
        floor = self.raw_floor_ms()
        await self.storage.publish_raw_floor(self.writer_id, floor)
        self._frames.whole_only = False
        return floor

    # -- internals ----------------------------------------------------------------------------

    async def _publish_floors(self) -> None:
        """``publish_floor`` every ``FLOOR_EVERY_S`` (every retry interval until one lands)."""
        published = False
        while not self._closed:
            try:
                await self.publish_floor()
                published = True
            except StorageError as exc:
                log.debug("writer %s: raw floor not published: %s", self.writer_id, exc)
            await asyncio.sleep(FLOOR_EVERY_S if published else self.retry_interval_s)

    def _split(
        self, batch: SampleBatch, now: int
    ) -> tuple[list[Frame], np.ndarray, np.ndarray, np.ndarray, list[Series], tuple[str, int, int] | None]:
        """A batch as frames and the (ids, ts, values) rows left, the series whose labels its
        record carries, and (target, layout, day) when it is one frame of a whole layout."""
        st = self.storage
        n = len(batch)
        ids, known = self._series_ids(batch, now)
        stamps = batch.timestamps
        one_ts = len(stamps) == n and stamps.count(stamps[0]) == n  # a scrape's samples share its time
        vals = np.fromiter(batch.values, dtype=np.float64, count=n)  # (a list: ~15% less than asarray)
        rest: np.ndarray | None = None
        if known is not None and one_ts and n >= st.frame_min_samples and stamps[0] >= now - st.late_after_ms:
            # the target's last layout at one timestamp, not late: one frame of these very arrays
            frames = [Frame(int(stamps[0]), ids, vals, known)]
            layout_day: tuple[str, int, int] | None = (batch.target, known, frames[0].ts // DAY_MS)
        else:
            ts = np.full(n, stamps[0], dtype=np.int64) if one_ts else np.asarray(stamps, dtype=np.int64)
            frames, rest = split_frames(ids, ts, vals, now - st.late_after_ms, st.frame_min_samples)
            layout_day = None
            if len(frames) == 1 and not rest.any():  # a scrape of a layout whose series are labeled today
                if frames[0].ids.size == n:  # a new layout of the target, all one frame
                    self._last_layout[batch.target] = _LastLayout(batch.series, ids, frames[0].layout, now)
                layout_day = (batch.target, frames[0].layout, frames[0].ts // DAY_MS)
        if layout_day in self._labeled_layouts:
            defs: list[Series] = []
        else:
            ts_all = np.full(n, stamps[0], dtype=np.int64) if rest is None else ts
            defs = self._defs_to_spool(batch.target, batch.series, ids, ts_all)
        if rest is None:
            return frames, _NO_IDS, _NO_IDS, _NO_VALUES, defs, layout_day
        if frames:
            return frames, ids[rest], ts[rest], vals[rest], defs, layout_day
        return frames, ids, ts, vals, defs, layout_day

    def _series_ids(self, batch: SampleBatch, now_ms: int) -> tuple[np.ndarray, int | None]:
        """The batch's series ids, and their layout id when they are the target's last layout
        (a scrape of the same series as its last one: the usual case). The list comparison is
        C pointer compares when the scrape loop hands the same ``Series`` objects again.
        Targets not appended to for ``LAST_LAYOUT_KEEP_MS`` (gone to another scraper) are
        forgotten, with the ``Series`` their entry holds."""
        if now_ms - self._last_layout_swept >= LAST_LAYOUT_KEEP_MS:
            self._last_layout_swept = now_ms
            old = now_ms - LAST_LAYOUT_KEEP_MS
            self._last_layout = {t: v for t, v in self._last_layout.items() if v.used_ms >= old}
        last = self._last_layout.get(batch.target)
        series = batch.series
        if last is not None and same_series(last.series, series):
            last.used_ms = now_ms
            return last.ids, last.layout
        if isinstance(series, LayoutSeries):  # a scrape of a layout plan: its ids, no Series made
            ids = np.frombuffer(series.ids, dtype=np.int64)
            ids.flags.writeable = False
            return ids, None
        return np.fromiter(map(_SERIES_ID, series), dtype=np.int64, count=len(series)), None

    def _defs_to_spool(
        self, target: str, series: list[Series] | LayoutSeries, ids: np.ndarray, ts: np.ndarray
    ) -> list[Series]:
        """Series whose index rows may be missing for their day: their labels go in the record.

        Once a record carrying a series' labels for a day (and target) is in the spool, later
        records need not repeat them: replay always starts at or before that record, or that
        record was stored, index rows included.
        """
        days = ts // DAY_MS
        if not days.size:
            return []
        groups: list[tuple[int, np.ndarray | None]]
        if days[0] == days[-1] and bool((days == days[0]).all()):
            groups = [(int(days[0]), None)]
        else:
            groups = [(int(d), np.flatnonzero(days == d)) for d in np.unique(days)]
        wanted = np.zeros(ids.size, dtype=bool)
        for day, rows in groups:
            day_ids = ids if rows is None else ids[rows]
            labeled = self._labeled.setdefault(day, TargetIds())
            need = ~labeled.contains(target, day_ids)
            if not need.any():
                continue
            labeled.add(target, day_ids[need])
            need &= ~self.storage.indexed_mask(day_ids, day * DAY_MS, target)
            if rows is None:
                wanted |= need
            else:
                wanted[rows[need]] = True
        picked = np.flatnonzero(wanted).tolist()
        # a LayoutSeries makes the Series it is asked for (a new day, a take-over) and keeps none
        out = series.pick(picked) if isinstance(series, LayoutSeries) else [series[i] for i in picked]
        if len(self._labeled) > 3:
            for d in sorted(self._labeled)[:-3]:
                del self._labeled[d]
            oldest = min(self._labeled)
            self._labeled_layouts = {k for k in self._labeled_layouts if k[2] >= oldest}
        return out

    def _join_group(self, pos: Position, rec: SpooledBatch) -> None:
        assert self._group is not None
        self._group.append((pos, rec))
        if len(self._group) >= GROUP_MAX_RECORDS:
            self._send_group()

    def _send_group(self) -> None:
        """Send the open group (its time is up, it is full, or a flush wants it out)."""
        group, self._group = self._group, None
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None
        if group is None:
            return
        if len(group) == 1:
            self._spawn(self._send(*group[0], replay=False))
        else:
            self._spawn(self._send_set(group))

    async def _send_set(self, group: list[tuple[Position, SpooledBatch]], replay: bool = False) -> bool:
        """Store a group of frames-only records with one ``write_frame_sets`` (holding one slot);
        True when stored (or handed to ``_send`` record by record after a permanent error)."""
        held = True
        try:
            await self.storage.write_frame_sets([(rec.target, rec.frames) for _pos, rec in group])
        except TransientStorageError as exc:
            self.stats.last_error = str(exc)
            self.stats.failed_writes += 1
            self._enter_spooling(min(pos for pos, _rec in group), str(exc))  # all of them are replayed
            return False
        except StorageError as exc:
            self.stats.last_error = str(exc)
            st = self.storage
            if "too large" in str(exc).lower() and st.frame_batch_bytes > 8 << 10:
                st.frame_batch_bytes //= 2  # a node with a lower batch_size_fail_threshold
            log.warning("a group of %d records failed (%s): sending them one by one; frame batches "
                        "now at most %d bytes", len(group), exc, st.frame_batch_bytes)
            held = False
            self._slots.release()  # before taking one per record: max_in_flight may be 1
            # Which record is bad is not known: each goes alone, where a bad one is dropped.
            for pos, rec in group:
                await self._slots.acquire()
                self._spawn(self._send(pos, rec, replay=replay))
            return True
        finally:
            if held:
                self._slots.release()
            self._progress.set()
        if replay:
            self.stats.replayed_batches += len(group)
        self.stats.stored_batches += len(group)
        for pos, _rec in group:
            self._ack(pos)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _send(self, pos: Position, rec: SpooledBatch, replay: bool) -> bool:
        """Store one record (its caller holds a write slot for it); True when stored (or
        dropped as permanently bad)."""
        held = True  # the write slot
        try:
            if rec.series_defs or rec.defs_payload:
                # A record that indexes series (warm-up, take-over) builds thousands of index
                # rows, alive until Cassandra answers: one such record at a time keeps the
                # heap's peak, which the process keeps, low (module docstring). Its wait for
                # that turn holds no write slot, so frames-only records keep going meanwhile.
                self._slots.release()
                held = False
                async with self._indexing:
                    await self._slots.acquire()
                    held = True
                    defs = decode_defs(rec.defs_payload) if rec.defs_payload else rec.series_defs
                    await self.storage.write_frames(
                        rec.target, rec.frames, rec.series_ids, rec.timestamps, rec.values, defs
                    )
                    del defs
            else:
                await self.storage.write_frames(rec.target, rec.frames, rec.series_ids, rec.timestamps, rec.values)
        except TransientStorageError as exc:
            self.stats.last_error = str(exc)
            self.stats.failed_writes += 1
            self._enter_spooling(pos, str(exc))
            return False
        except StorageError as exc:
            self.stats.last_error = str(exc)
            self.stats.dropped_batches += 1
            log.error("dropping a batch of %d samples of target %s: %s", len(rec), rec.target, exc)
            self._frames.forget(rec.target)  # later frames of the target must not need this one
            self._ack(pos)
            return True
        finally:
            if held:
                self._slots.release()
            self._progress.set()
        if replay:
            self.stats.replayed_batches += 1
        self.stats.stored_batches += 1
        self._ack(pos)
        return True

    def _ack(self, pos: Position) -> None:
        offs = self._unacked.get(pos.segment)
        if offs is not None:
            offs.discard(pos.offset)
        self._delete_done_segments()

    def _delete_done_segments(self) -> None:
        for seg in list(self._unacked):
            if seg == self.spool.active or self._unacked[seg] or seg not in self._fully_known:
                continue
            if self._cursor is not None and self._cursor.segment <= seg:
                continue  # the replayer has yet to read past it
            del self._unacked[seg]
            self._segment_first_ms.pop(seg, None)
            self.spool.delete(seg)

    def _enter_spooling(self, pos: Position, why: str) -> None:
        if self._cursor is None or pos < self._cursor:
            self._cursor = pos
        if self.mode != self.SPOOLING:
            self.mode = self.SPOOLING
            self.stats.mode_changes.append((time.time(), self.SPOOLING))
            log.warning("writer spooling to %s: %s", self.spool.dir, why)
        self._start_replayer()
        self._progress.set()

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay())

    async def _replay(self) -> None:
        """Send spooled records in order from the cursor; go DIRECT once caught up."""
        while not self._closed:
            try:
                await self._replay_until_caught_up()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop replay for good: log, wait, go on
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("spool replay failed; retrying in %.1fs", self.retry_interval_s)
                await asyncio.sleep(self.retry_interval_s)

    async def _replay_until_caught_up(self) -> None:
        pending: set[asyncio.Task] = set()
        while not self._closed:
            done = {t for t in pending if t.done()}
            pending -= done
            if any(t.exception() is not None or not t.result() for t in done):
                # Cassandra still away: let the in-flight ones finish, wait, retry from the cursor.
                if pending:
                    await asyncio.wait(pending)
                    pending = set()
                await asyncio.sleep(self.retry_interval_s)
                continue
            cur = self._cursor
            assert cur is not None
            item = self.spool.read(cur)
            if item is None:
                nxt = self.spool.next_segment(cur.segment)
                if cur.segment != self.spool.active and nxt is not None:
                    self._fully_known.add(cur.segment)
                    self._unacked.setdefault(cur.segment, set())
                    self._cursor = Position(nxt, 0)
                    self._delete_done_segments()
                    continue
                if pending:
                    # At the end of the spool: wait for in-flight replays before switching.
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if self._cursor == cur and cur.segment == self.spool.active and self.spool.read(cur) is None:
                    # Caught up; no await between the check and the switch, so no append slips by.
                    self.mode = self.DIRECT
                    self._cursor = None
                    self.stats.mode_changes.append((time.time(), self.DIRECT))
                    log.info("writer spool replayed: back to direct writes")
                    self._delete_done_segments()
                    self._progress.set()
                    return
                continue
            payload, after = item
            self._unacked.setdefault(cur.segment, set()).add(cur.offset)
            try:
                rec = decode_batch(payload)
            except (ValueError, UnicodeDecodeError) as exc:
                log.error("spool record %s unreadable (%s): skipped", cur, exc)
                self._ack(cur)
                self._cursor = after
                continue
            group = [(cur, rec)]
            if self._groups(rec):
                group, after = self._read_group(group, after)
            await self._slots.acquire()
            if self._cursor != cur:  # rewound by a failure meanwhile
                self._slots.release()
                continue
            self._cursor = after
            send = self._send(cur, rec, replay=True) if len(group) == 1 else self._send_set(group, replay=True)
            pending.add(asyncio.get_running_loop().create_task(send))

    def _groups(self, rec: SpooledBatch) -> bool:
        """Whether a record may go in a group: frames only (no rows, no series to index)."""
        return (self.group_s > 0 and bool(rec.frames) and not rec.series_defs and not rec.defs_payload
                and not rec.series_ids.size)

    def _read_group(
        self, group: list[tuple[Position, SpooledBatch]], pos: Position
    ) -> tuple[list[tuple[Position, SpooledBatch]], Position]:
        """``group`` (a frames-only record) and the frames-only records from ``pos`` on in its
        segment, which a replay sends together; and the position after the last one."""
        while len(group) < GROUP_MAX_RECORDS:
            item = self.spool.read(pos)
            if item is None:
                break
            try:
                nxt = decode_batch(item[0])
            except (ValueError, UnicodeDecodeError):
                break  # the replay loop skips it with a log
            if not self._groups(nxt):
                break
            self._unacked.setdefault(pos.segment, set()).add(pos.offset)
            group.append((pos, nxt))
            pos = item[1]
        return group, pos

    def _maybe_sync(self) -> None:
        if self.spool.sync_due() and not self._syncing:
            self._syncing = True
            fut = asyncio.get_running_loop().run_in_executor(None, self.spool.sync)
            fut.add_done_callback(lambda _f: setattr(self, "_syncing", False))

    async def _wait_progress(self, timeout_s: float) -> None:
        self._progress.clear()
        try:
            await asyncio.wait_for(self._progress.wait(), timeout_s)
        except TimeoutError:
            pass


def _writer_id(spool_dir: Path) -> str:
    """The writer's id, kept in its spool directory: a restart with the same spool (whose
    records the floor protects) is the same writer."""
    path = spool_dir / WRITER_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if not text:
        text = uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
    return text
