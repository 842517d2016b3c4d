"""Page time windows: presets on a step grid, custom from/to in a zone, bad input reported."""

from __future__ import annotations

import datetime as dt

from web.timerange import choose_step_s, format_duration_s, parse_duration_s, parse_time_range

NOW = dt.datetime(2026, 11, 25, 16, 0, 7, tzinfo=dt.UTC).timestamp()


def test_presets_end_on_the_last_step_boundary_and_keep_their_span():
    for key, span_s, step_s in (("1h", 3600, 15), ("6h", 21600, 120), ("24h", 86400, 600), ("7d", 604800, 3600),
                                ("30d", 2592000, 10800), ("1y", 31536000, 172800)):  # fmt: skip
        tr = parse_time_range({"range": key}, now_s=NOW)
        assert tr.errors == [] and tr.range_key == key
        assert tr.step_ms == step_s * 1000 and tr.end_ms - tr.start_ms == span_s * 1000
        assert tr.end_ms % tr.step_ms == 0 and 0 <= NOW * 1000 - tr.end_ms < tr.step_ms  # never in the future
        assert tr.now_ms == NOW * 1000  # charts add their last point here
    # Two refreshes a few seconds apart evaluate the same grid.
    a = parse_time_range({"range": "1h"}, now_s=NOW)
    b = parse_time_range({"range": "1h"}, now_s=NOW + 5)
    assert (a.start_ms, a.end_ms) == (b.start_ms, b.end_ms)


def test_custom_window_in_a_zone_and_unix_seconds():
    tr = parse_time_range({"range": "custom", "from": "2026-01-02T10:00", "to": "2026-01-02T12:30",
                           "tz": "Europe/Berlin"}, now_s=NOW)  # fmt: skip
    start = dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.UTC).timestamp() * 1000
    assert tr.errors == [] and tr.start_ms == start and tr.end_ms - tr.start_ms == 150 * 60_000
    assert tr.tz_name == "Europe/Berlin" and tr.local_input(tr.start_ms) == "2026-01-02T10:00"
    tr = parse_time_range({"from": "1767340800", "to": "1767344400"}, now_s=NOW)
    assert (tr.start_ms, tr.end_ms) == (1767340800_000, 1767344400_000)
    assert tr.query_params() == {"range": "custom", "from": "1767340800", "to": "1767344400"}
    # from/to are ignored when a preset is chosen in the same form.
    assert parse_time_range({"range": "6h", "from": "2026-01-02T10:00"}, now_s=NOW).range_key == "6h"


def test_bad_input_falls_back_and_says_so():
    tr = parse_time_range({"range": "forever", "tz": "Nowhere/City", "refresh": "1ms"}, now_s=NOW)
    assert tr.range_key == "1h" and tr.tz_name == "UTC" and tr.refresh == "off"
    assert len(tr.errors) == 3 and "range: not a duration: 'forever'" in tr.errors[2]
    tr = parse_time_range(
        {"range": "custom", "from": "2026-01-02T12:00", "to": "2026-01-02T10:00"}, now_s=NOW
    )
    assert tr.range_key == "1h" and "'to' must be after 'from'" in tr.errors[0]
    tr = parse_time_range({"range": "custom", "from": "yesterday"}, now_s=NOW)
    assert "not a time: 'yesterday'" in tr.errors[0]
    assert "at most 5 years" in parse_time_range({"range": "10y"}, now_s=NOW).errors[0]


def test_durations_and_steps():
    assert parse_duration_s("1h30m") == 5400 and format_duration_s(5400) == "1h30m"
    assert format_duration_s(60) == "1m" and format_duration_s(86400 * 2) == "2d"
    assert (
        choose_step_s(3600) == 15
        and choose_step_s(60) == 15
        and choose_step_s(10 * 365 * 86400) == 16 * 86400
    )
    tr = parse_time_range({"range": "24h", "refresh": "30s"}, now_s=NOW)
    assert tr.rate_window == "10m" and tr.refresh_s == 30
    assert tr.preset_params("7d", {"expr": "up"}) == {"expr": "up", "range": "7d", "refresh": "30s"}
