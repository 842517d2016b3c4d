"""SVG chart rendering: axes, units, gaps, stacking, thresholds, escaping, limits, thinning, tooltips."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
import zoneinfo

import numpy as np
import pytest

from web.chart import (
    ChartSeries,
    ChartSpec,
    humanize,
    humanize_many,
    legend_name,
    render_chart,
    series_from_result,
    time_ticks,
    y_ticks,
)

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = int(dt.datetime(2026, 11, 25, 7, 6, 40, tzinfo=dt.UTC).timestamp() * 1000)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # also proves the output is well-formed XML


def lines(root: ET.Element) -> dict[str, str]:
    return {
        p.get("data-name"): p.get("d")
        for p in root.iter("{http://www.w3.org/2000/svg}path")
        if p.get("class") == "line"
    }


def test_one_path_per_series_with_gaps_split_into_subpaths():
    ts = np.arange(T0, T0 + 60 * 15_000, 15_000)
    a = ChartSeries("a", ts, np.linspace(0, 1, len(ts)))
    vals = np.ones(len(ts))
    vals[10:13] = np.nan  # missing values
    b = ChartSeries("b", ts, vals)
    keep = np.r_[0:30, 40:60]  # missing timestamps
    c = ChartSeries("c", ts[keep], np.ones(len(keep)))
    root = parse(render_chart([a, b, c], ChartSpec(step_ms=15_000)))
    d = lines(root)
    assert set(d) == {"a", "b", "c"}
    assert d["a"].count("M") == 1 and d["b"].count("M") == 2 and d["c"].count("M") == 2
    # Without a step the median spacing detects the same gap.
    assert lines(parse(render_chart([c])))["c"].count("M") == 2


def test_isolated_points_are_visible_and_every_point_has_a_title():
    ts = np.array([T0, T0 + 15_000, T0 + 60_000, T0 + 120_000, T0 + 135_000])
    root = parse(render_chart([ChartSeries("x", ts, [1, 2, 3, 4, 5])], ChartSpec(step_ms=15_000)))
    circles = list(root.iter("{http://www.w3.org/2000/svg}circle"))
    assert len(circles) == 5
    assert [c.get("class") for c in circles].count("iso") == 1  # the lone point at T0+60s
    titles = [c.find("s:title", NS).text for c in circles]
    assert titles[2] == "x\n2026-11-25 07:07:40: 3"


def test_beyond_the_point_budget_one_tooltip_per_time_step_lists_every_series():
    ts = np.arange(T0, T0 + 100 * 1000, 1000)
    b = np.full(100, 2.5)
    b[50] = np.nan
    svg = render_chart(
        [ChartSeries("a", ts, np.ones(100)), ChartSeries("b", ts, b)], ChartSpec(max_point_titles=50)
    )
    assert "<circle" not in svg and len(lines(parse(svg))["a"]) > 100
    root = parse(svg)
    cols = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("s:title", NS) is not None]
    assert len(cols) == 100
    titles = [r.find("s:title", NS).text for r in cols]
    assert titles[0] == "2026-11-25 07:06:40\na: 1\nb: 2.5"
    assert titles[50] == "2026-11-25 07:07:30\na: 1"  # b has no value then
    widths = [float(r.get("width")) for r in cols]
    assert sum(widths) == pytest.approx(800 - 70 - 16, abs=3)  # the bands tile the plot (0.1 px rounding)


NUMBER = r"-?(?:\d+(?:\.\d)?|\.\d)"
SUBPATH = re.compile(rf"M{NUMBER},{NUMBER}(?:l{NUMBER},{NUMBER}(?: {NUMBER},{NUMBER})*)?")


def points_of(d: str) -> list[list[tuple[float, float]]]:
    """The absolute (x, y) points of each subpath ``M x,y l dx,dy dx,dy ...`` of a line's ``d``."""
    out = []
    for sub in d.split(" M"):
        sub = sub if sub.startswith("M") else "M" + sub
        assert SUBPATH.fullmatch(sub), sub  # one decimal at most, relative steps after the first
        nums = [float(v) for v in re.findall(NUMBER, sub)]
        points = [(nums[0], nums[1])]
        for dx, dy in zip(nums[2::2], nums[3::2], strict=True):
            points.append((round(points[-1][0] + dx, 1), round(points[-1][1] + dy, 1)))
        out.append(points)
    return out


def test_dense_series_are_thinned_keeping_each_pixel_columns_extremes_and_the_gaps():
    n = 20_000
    ts = T0 + np.arange(n) * 1000
    rng = np.random.default_rng(3)
    vals = 1 + 0.5 * np.sin(np.arange(n) / 700) + rng.normal(0, 0.05, n)
    vals[4321], vals[15000] = 1.95, 0.02  # a one-sample spike and dip
    vals[9000:9400] = np.nan  # missing data
    spec = ChartSpec(y_min=0, y_max=2, start_ms=int(ts[0]), end_ms=int(ts[-1]), step_ms=1000)
    root = parse(render_chart([ChartSeries("x", ts, vals)], spec))
    subpaths = points_of(lines(root)["x"])
    assert len(subpaths) == 2  # the gap stays
    plot_w, plot_h, left, top = 800 - 70 - 16, 240 - 12 - 26, 70, 12
    drawn = [pt for sub in subpaths for pt in sub]
    assert len(drawn) <= 4 * (plot_w + 2)  # at most first, last, low, high per column and segment
    xs = left + (ts - ts[0]) / (ts[-1] - ts[0]) * plot_w
    ys = top + plot_h - vals / 2 * plot_h
    drawn_by_col: dict[int, set[float]] = {}
    for x, y in drawn:  # x is rounded to 0.1 px: a point at 74.0 may be from column 73
        for col in {int(np.floor(x + 1e-6)), int(np.floor(x - 0.05))}:
            drawn_by_col.setdefault(col, set()).add(y)
    ok = ~np.isnan(vals)
    for col in np.unique(np.floor(xs[ok]).astype(int)):
        in_col = ok & (np.floor(xs).astype(int) == col)
        want = {round(float(ys[in_col].min()), 1), round(float(ys[in_col].max()), 1)}
        assert want <= drawn_by_col.get(int(col), set()), f"column {col}"
    all_y = [y for _, y in drawn]
    assert min(all_y) == pytest.approx(top + plot_h - 1.95 / 2 * plot_h, abs=0.06)  # the spike
    assert max(all_y) == pytest.approx(top + plot_h - 0.02 / 2 * plot_h, abs=0.06)  # the dip


def test_sparse_series_are_drawn_point_for_point():
    ts = np.arange(T0, T0 + 240 * 15_000, 15_000)
    vals = np.sin(np.arange(240) / 10)
    root = parse(render_chart([ChartSeries("x", ts, vals)], ChartSpec(width=640)))
    assert sum(map(len, points_of(lines(root)["x"]))) == 240


def test_dense_steps_share_hover_bands_that_give_each_series_range():
    ts = np.arange(T0, T0 + 600 * 1000, 1000)  # 600 steps on 714 px: 1.2 px apart
    a = np.ones(600)
    a[300] = 7  # a spike inside one band
    b = np.full(600, 2.0)
    svg = render_chart([ChartSeries("a", ts, a), ChartSeries("b", ts, b)], ChartSpec())
    root = parse(svg)
    assert "<circle" not in svg  # 1200 points: over the per-point tooltip budget
    bands = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("s:title", NS) is not None]
    widths = [float(r.get("width")) for r in bands]
    assert sum(widths) == pytest.approx(714, abs=0.5) and len(bands) <= 714 / 6 + 1
    assert min(widths[1:-1]) >= 5.9
    titles = [r.find("s:title", NS).text for r in bands]
    assert titles[0].startswith("2026-11-25 07:06:40 – 07:06:4") and titles[0].endswith("\na: 1\nb: 2")
    spiked = [t for t in titles if "a: 1 – 7" in t]
    assert len(spiked) == 1 and "b: 2" in spiked[0]
    at_spike = dt.datetime.fromtimestamp((T0 + 300_000) / 1000, dt.UTC).strftime("%H:%M:%S")
    first, last = re.match(r"\S+ (\S+) – (\S+)", spiked[0]).groups()
    assert first <= at_spike <= last


def test_hover_bands_place_values_by_timestamp_when_series_differ():
    a = ChartSeries("a", [T0, T0 + 1000, T0 + 2000], [1, 2, 3])
    b = ChartSeries("b", [T0, T0, T0 + 1000], [5, 6, 7])  # a repeated timestamp, none at T0 + 2 s
    root = parse(render_chart([a, b], ChartSpec(max_point_titles=1)))
    titles = [r.find("s:title", NS).text for r in root.iter("{http://www.w3.org/2000/svg}rect") if len(r)]
    assert [t.split("\n", 1)[1] for t in titles] == ["a: 1\nb: 5 – 6", "a: 2\nb: 7", "a: 3"]


def test_humanize_many_matches_humanize():
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            rng.normal(0, 1, 500) * 10.0 ** rng.integers(-12, 19, 500),
            [0, np.nan, np.inf, -np.inf, 999.5, 999.95, 1000, 1023.99 * 1024, 1e-4, 9.99e-5, 1e-9, 1e-10],
        ]
    )
    for unit in ("none", "bytes", "bytes/s", "seconds", "percent", "ratio", "/s", "cores"):
        assert humanize_many(values, unit) == [humanize(v, unit) for v in values.tolist()], unit


def test_stacked_mode_draws_areas_on_top_of_each_other():
    ts = np.arange(T0, T0 + 10 * 1000, 1000)
    spec = ChartSpec(mode="stacked", y_min=0, y_max=4, height=140)
    root = parse(
        render_chart([ChartSeries("a", ts, np.ones(10)), ChartSeries("b", ts, np.ones(10) * 2)], spec)
    )
    areas = [p for p in root.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "area"]
    assert len(areas) == 2
    ys = {name: {y for sub in points_of(d) for _, y in sub} for name, d in lines(root).items()}
    # plot: top 12, height 140-12-26 = 102; b's top is at 3 of 4, a's at 1 of 4.
    assert sorted(ys["a"]) == pytest.approx([12 + 102 * 3 / 4], abs=0.1)
    assert sorted(ys["b"]) == pytest.approx([12 + 102 * 1 / 4], abs=0.1)
    # Each area runs along its line and back along the top of the one below (the axis for a).
    for area, under in zip(areas, (12 + 102, 12 + 102 * 3 / 4), strict=True):
        d = area.get("d")
        assert d.endswith(" Z") and " L" in d
        along, back = d.removesuffix(" Z").split(" L")
        top_points = points_of(along)[0]
        back_points = points_of("M" + back)[0]
        assert [x for x, _ in back_points] == [x for x, _ in reversed(top_points)]
        assert [y for _, y in back_points] == pytest.approx([under] * len(back_points), abs=0.1)
    tips = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t and t.startswith("b\n") and t.endswith(": 2") for t in tips)  # own value, not cumulative


def test_threshold_line_and_range_include_it():
    ts = np.arange(T0, T0 + 10_000, 1000)
    svg = render_chart([ChartSeries("x", ts, np.ones(10))], ChartSpec(thresholds=[5.0]))
    root = parse(svg)
    th = [e for e in root.iter("{http://www.w3.org/2000/svg}line") if e.get("class") == "threshold"]
    assert len(th) == 1 and th[0].find("s:title", NS).text == "threshold 5"


def test_hostile_names_are_escaped_everywhere():
    hostile = '"><script>alert(1)</script><x y="'
    ts = np.arange(T0, T0 + 5000, 1000)
    svg = render_chart(
        [ChartSeries(hostile, ts, np.ones(5)), ChartSeries("L" * 10000, ts, np.ones(5))],
        ChartSpec(title=hostile),
    )
    assert "<script" not in svg and "<x " not in svg
    root = parse(svg)
    assert root.get("aria-label") == hostile
    assert hostile in lines(root)
    legend_texts = [
        t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text and t.text.startswith("LLL")
    ]
    assert legend_texts and len(legend_texts[0]) == 60  # truncated in the legend, full name in its title


def test_no_data_and_series_limit():
    assert "No data" in render_chart([], ChartSpec(start_ms=T0, end_ms=T0 + 3600_000))
    ts = np.arange(T0, T0 + 5000, 1000)
    many = [ChartSeries(f"s{i:03d}", ts, np.ones(5) * i) for i in range(60)]
    svg = render_chart(many, ChartSpec(max_series=40))
    assert len(lines(parse(svg))) == 40 and "showing 40 of 60 series" in svg


def test_humanized_units():
    assert humanize(0, "bytes") == "0 B"
    assert humanize(1536, "bytes") == "1.5 KiB"
    assert humanize(25 * 2**30, "bytes") == "25 GiB"
    assert humanize(2_500_000, "bytes/s") == "2.38 MiB/s"
    assert humanize(0.25, "seconds") == "250 ms"
    assert humanize(0.000012, "seconds") == "12 µs"
    assert humanize(5400, "seconds") == "1.5 h"
    assert humanize(42.123, "percent") == "42.1%"
    assert humanize(0.5, "ratio") == "50%"
    assert humanize(1234, "/s") == "1.23k/s"
    assert humanize(0.3, "none") == "0.3"
    assert humanize(0.0005, "none") == "500µ"
    assert humanize(2.5e9) == "2.5G"
    assert humanize(float("nan")) == "no value"


def test_y_ticks_are_round_and_cover_the_data():
    lo, hi, ticks = y_ticks(0, 0.37, "none")
    assert (lo, hi) == (0, 0.4) and len(ticks) == 5
    lo, hi, ticks = y_ticks(0, 25e9, "bytes")
    assert all(t % 2**30 == 0 for t in ticks) and hi >= 25e9  # whole GiB steps
    lo, hi, ticks = y_ticks(-3, 7, "none")
    assert lo <= -3 and hi >= 7 and 0 in ticks


def test_time_ticks_are_round_in_the_viewers_zone():
    end = T0 + 3600_000
    ticks = time_ticks(T0, end, dt.UTC, 8)
    assert [label for _, label in ticks][:2] == ["07:10", "07:20"]
    assert all(t % 600_000 == 0 for t, _ in ticks)
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")  # UTC+5:30: round local times are :30 UTC
    kt = time_ticks(T0, end, kolkata, 8)
    assert kt[0][1] == "12:40" and all(
        dt.datetime.fromtimestamp(t / 1000, kolkata).minute % 10 == 0 for t, _ in kt
    )
    day = time_ticks(T0 - 7 * 86400_000, T0, dt.UTC, 8)
    assert all(dt.datetime.fromtimestamp(t / 1000, dt.UTC).hour == 0 for t, _ in day)
    year = time_ticks(T0 - 365 * 86400_000, T0, dt.UTC, 8)
    assert all(dt.datetime.fromtimestamp(t / 1000, dt.UTC).day == 1 for t, _ in year)
    svg = render_chart([ChartSeries("x", [T0, end], [1, 2])], ChartSpec(start_ms=T0, end_ms=end, tz=kolkata))
    assert ">IST<" in svg


def test_legend_templates_and_results():
    assert legend_name({"__name__": "up", "job": "a", "instance": "h:1"}) == 'up{instance="h:1", job="a"}'
    assert legend_name({"mode": "idle", "cpu": "0"}, "cpu {{cpu}} {{ mode }} {{nope}}") == "cpu 0 idle "

    class R:
        type = "matrix"
        scalar = None
        series = [
            type("S", (), {"labels": {"mode": m}, "timestamps": [T0], "values": [1.0]}) for m in ("b", "a")
        ]

    assert [s.name for s in series_from_result(R(), "{{mode}}")] == ["a", "b"]


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="unit: expected one of"):
        ChartSpec(unit="furlongs")
    with pytest.raises(ValueError, match="mode: expected one of"):
        ChartSpec(mode="pie")


def colours(root: ET.Element) -> dict[str, str]:
    return {g.get("data-name"): g.get("fill") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "s"}


def test_a_series_keeps_its_colour_whatever_else_is_drawn():
    ts = np.arange(T0, T0 + 5000, 1000)

    def chart(names: list[str]) -> dict[str, str]:
        series = [ChartSeries(n, ts, np.full(5, float(i)), {"job": n}, n) for i, n in enumerate(names)]
        return colours(parse(render_chart(series)))

    pools = [f"pool{i}" for i in range(6)]
    alone = {n: chart([n])[n] for n in pools}  # each pool's own colour, from its name
    together = chart(pools)
    # With the others around, a pool keeps its colour unless two want the same one: then the
    # first in sorted order keeps it, the other moves; the same set gives the same colours.
    assert together == chart(list(reversed(pools)))
    assert len(set(together.values())) == len(pools)
    keeps = {n for n in pools if together[n] == alone[n]}
    wanted = [alone[n] for n in sorted(pools)]
    assert keeps == {n for i, n in enumerate(sorted(pools)) if alone[n] not in wanted[:i]}
    # series_from_result keys series by legend text, so the same pool matches across panels.
    from query.result import QueryResult, ResultSeries

    res = QueryResult("matrix", [ResultSeries({"__name__": "x", "job": "web"}, ts, np.ones(5))])
    assert series_from_result(res, "{{job}}")[0].key == "web"
    assert series_from_result(res)[0].key == '{job="web"}'


def test_a_line_under_another_is_drawn_wider_and_its_legend_says_so():
    ts = np.arange(T0, T0 + 10_000, 1000)
    same = np.ones(10)
    root = parse(render_chart([ChartSeries("db", ts, same), ChartSeries("web", ts, same.copy()),
                               ChartSeries("api", ts, same * 5)]))  # fmt: skip
    widths = {p.get("data-name"): float(p.get("stroke-width")) for p in root.iter("{http://www.w3.org/2000/svg}path")
              if p.get("class") == "line"}  # fmt: skip
    assert widths["db"] > widths["web"] == widths["api"]
    legend = [t.text for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "legend-item"
              for t in g.iter("{http://www.w3.org/2000/svg}text")]  # fmt: skip
    assert legend == ["db (under web)", "web", "api"]


def test_thresholds_are_labelled_at_their_line():
    ts = np.arange(T0, T0 + 10_000, 1000)
    spec = ChartSpec(unit="ratio", thresholds=[0.9, 0.5], threshold_names={0.9: "HighCPU"})
    root = parse(render_chart([ChartSeries("x", ts, np.full(10, 0.2))], spec))
    labels = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "threshold-label"]
    lines_y = sorted(float(e.get("y1")) for e in root.iter("{http://www.w3.org/2000/svg}line") if e.get("class") == "threshold")
    assert sorted(t.text for t in labels) == ["50%", "HighCPU 90%"]
    for t in labels:  # each label sits within a few pixels of its own line
        assert min(abs(float(t.get("y")) - y) for y in lines_y) <= 12


@pytest.mark.parametrize(
    "lo, hi, unit, labels",
    [
        (0, 500, "seconds", ["0 s", "2 min", "4 min", "6 min", "8 min", "10 min"]),  # not 4.17 min
        (0, 7000, "seconds", ["0 s", "30 min", "1 h", "1.5 h", "2 h"]),
        (0, 0.37, "seconds", ["0 s", "100 ms", "200 ms", "300 ms", "400 ms"]),
        (0, 0, "bytes", ["0 B", "1 B"]),  # never "0.2 B"
        (0, 3, "bytes", ["0 B", "1 B", "2 B", "3 B"]),
        (0, 25 * 2**30, "bytes", ["0 B", "5 GiB", "10 GiB", "15 GiB", "20 GiB", "25 GiB"]),
        (0, 0.37, "none", ["0", "0.1", "0.2", "0.3", "0.4"]),
        (0, 23, "none", ["0", "5", "10", "15", "20", "25"]),  # 1, 2, 5 x 10^n: no 2.5 steps
        (0, 0.93, "ratio", ["0%", "20%", "40%", "60%", "80%", "100%"]),
    ],
)
def test_y_ticks_are_round_values_of_the_unit(lo, hi, unit, labels):
    assert [humanize(t, unit) for t in y_ticks(lo, hi, unit)[2]] == labels


def test_an_axis_without_unit_in_its_ticks_is_captioned_and_empty_text_is_the_callers():
    root = parse(render_chart([], ChartSpec(unit="cores", empty_text="No alert fired in this range")))
    texts = {t.get("class"): t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert texts["unit"] == "cores" and texts["no-data"] == "No alert fired in this range"


def test_a_stacked_band_too_thin_to_see_says_so():
    ts = np.arange(T0, T0 + 10_000, 1000)
    series = [ChartSeries("idle", ts, np.full(10, 1.5)), ChartSeries("irq", ts, np.zeros(10)),
              ChartSeries("user", ts, np.full(10, 0.5))]  # fmt: skip
    root = parse(render_chart(series, ChartSpec(mode="stacked")))
    legend = [t.text for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "legend-item"
              for t in g.iter("{http://www.w3.org/2000/svg}text")]  # fmt: skip
    assert legend == ["idle", "irq (too thin to see)", "user"]  # and idle is not "under" irq
