"""Hostile exposition bodies (the shapes of issue #17 and the lexer corners of Prometheus's
parsers): seeds of the fast-path/parser differential and bodies of the real-Prometheus one.

Each entry is ``(name, body, format)``; ``{now}`` (``{now-1}``, ``{now-2}``: seconds earlier) in a body
is replaced by the current time in milliseconds (text) or seconds (OpenMetrics) by ``render``,
so timestamp cases stay in bounds.
"""

from __future__ import annotations

import time

T, OM = "text", "openmetrics"

HOSTILE: list[tuple[str, bytes, str]] = [
    ("escape_tab", b'esc{v="a\\tb"} 1\n', T),
    ("escape_unknown", b'esc{v="\\z\\q"} 2\n', T),
    ("windows_path", b'esc{path="C:\\Program Files\\exporter\\x.exe"} 3\n', T),
    ("escape_known", b'esc{q="say \\"hi\\"",n="l1\\nl2",b="back\\\\slash"} 4\n', T),
    ("escape_unknown_om", b'esc{v="a\\tb"} 1\n# EOF\n', OM),
    ("overflow", b"big 1e309\n", T),
    ("overflow_neg", b"big -1e309\n", T),
    ("underflow", b"tiny 1e-400\n", T),
    ("plus_nan", b"nan_sign +NaN\n", T),
    ("minus_nan", b"nan_sign -nan\n", T),
    ("nan_spellings", b"n1 nan\nn2 NaN\nn3 NAN\ni1 inf\ni2 +Inf\ni3 -infinity\ni4 iNf\n", T),
    ("arabic_digit", "digits \u0661\n".encode(), T),
    ("fullwidth_digit", "digits 1\uff10\n".encode(), T),
    ("hex_float", b"hex 0x1p-2\n", T),
    ("hex_int", b"hex 0x10\n", T),
    ("underscore", b"under 1_0\n", T),
    ("underscore_om", b"under 1_0\n# EOF\n", OM),
    ("crlf", b"# TYPE crlf gauge\r\ncrlf 1\r\ncrlf2 2\r\n", T),
    ("crlf_om", b"crlf 1\r\n# EOF\r\n", OM),
    ("trailing_tab_text", b"tab 1\t\n", T),
    ("trailing_tab_om", b"tab 1\t\n# EOF\n", OM),
    ("trailing_space_om", b"tab 1 \n# EOF\n", OM),
    ("ts_1970", b"old 1 0\nold_ok 2\n", T),
    ("ts_1969", b"old 1 1000\n", T),
    ("ts_negative", b"neg 1 -1000\n", T),
    ("ts_recent", b"recent 1 {now}\n", T),
    ("ts_two_in_order", b"two 1 {now-2}\ntwo 2 {now-1}\n", T),
    ("ts_two_out_of_order", b"ooo 1 {now-1}\nooo 2 {now-2}\n", T),
    ("ts_same_twice", b"same 1 {now-1}\nsame 2 {now-1}\n", T),
    ("ts_om_1970", b"old 1 0.5\nold_ok 2\n# EOF\n", OM),
    ("ts_om_recent", b"recent 1 {now}\n# EOF\n", OM),
    ("no_commas", b'nc{a="1" b="2"} 1\n', T),
    ("blanks_everywhere", b'sp { a = "1" , b = "2" , } \t 5 \t\n', T),
    ("leading_blanks", b" \t lead 5\n", T),
    ("label_value_line_break", b'ml{a="x\ny"} 1\nafter 2\n', T),
    ("nul_in_comment", b"a 1\n#x\x00y\nb 2\n", T),
    ("nul_in_label_value", b'a{b="x\x00y"} 1\n', T),
    ("nul_after_value", b"a 1\x00\n", T),
    ("value_after_brace", b'vb{b="c"}1\n', T),
    ("two_timestamps", b"tt 1 {now} {now}\n", T),
    ("hex_timestamp", b"ht 1 0x10\n", T),
    ("fraction_timestamp", b"ft 1 1.5\n", T),
    ("ts_overflow", b"to 1 9223372036854775808\n", T),
    ("hash_after_value", b"hv 1 # no comments here\n", T),
    ("tab_after_hash", b"#\tHELP th help\n#\tTYPE th gauge\nth 1\n", T),
    ("help_cr", b"# HELP hc help\r\nhc 1\n", T),
    ("type_cr", b"# TYPE tc gauge\r\ntc 1\n", T),
    ("comment_bad_utf8", b"# \xff\xfe\ncb 1\n", T),
    ("help_bad_utf8", b"# HELP hb \xff\nhb 1\n", T),
    ("label_bad_utf8", b'lb{x="\xff"} 1\n', T),
    ("om_exponent_timestamp", b"oe 1 1.7e9\n# EOF\n", OM),
    ("om_unit_not_suffix", b"# UNIT ou_bytes seconds\nou_bytes 1\n# EOF\n", OM),
    ("om_unit_ok", b"# TYPE ou_seconds gauge\n# UNIT ou_seconds seconds\nou_seconds 1\n# EOF\n", OM),
    ("om_exemplar_no_ts", b'# TYPE oc counter\noc_total 1 # {t="x"} 2\n# EOF\n', OM),
    ("help_nul_before_name", b"# HELP \x00hn help\nhn 1\n", T),
    ("help_nul_after_name", b"hn 1\n# HELP hn\x00 help\n", T),
    ("comment_blank_nul", b"cb 1\n# \x00HELP x\nlost 2\n", T),
    ("label_value_nul_after_quote", b'lq{b="c"\x00} 1\n', T),
    ("om_type_nul", b"# T\x00YPE ot gauge\not 1\n# EOF\n", OM),
    ("om_label_value_nul_after_quote", b'lq{b="c"\x00,d="e"} 1\n# EOF\n', OM),
    ("om_exemplar_nul", b'# TYPE oc counter\noc_total 1 # {t="x\x00y"} 2\n# EOF\n', OM),
    ("om_label_nul", b'ol{t="x\x00y"} 2\n# EOF\n', OM),
    ("om_exemplar_nan_ts", b'# TYPE oc counter\noc_total 1 # {t="x"} 2 NaN\n# EOF\n', OM),
    ("om_gaugehistogram", b'# TYPE gh gaugehistogram\ngh_bucket{le="1"} 1\ngh_bucket{le="+Inf"} 2\n'
     b"gh_gcount 2\ngh_gsum 3\n# EOF\n", OM),
    ("om_histogram_le_forms", b'# TYPE oh histogram\noh_bucket{le="1"} 1\noh_bucket{le="1e3"} 2\n'
     b'oh_bucket{le="+Inf"} 3\noh_count 3\noh_sum 4\n# EOF\n', OM),
    ("value_glued", b"glued-1\n", T),
    ("double_type", b"# TYPE dt counter\n# TYPE dt gauge\ndt 1\n", T),
    ("type_after_samples", b"late 1\n# TYPE late counter\n", T),
    ("type_two_blanks", b"# TYPE tb  counter\ntb 1\n", T),
    ("type_trailing_blank", b"# TYPE tb counter \ntb 1\n", T),
    ("type_missing", b"# TYPE tm\ntm 1\n", T),
    ("help_empty", b"# HELP he\nhe 1\n", T),
    ("comment_no_blank", b"#TYPE cn bogus\ncn 1\n", T),
    ("no_final_newline_comment", b"nf 1\n# the end", T),
    ("no_final_newline_sample", b"nf 1", T),
    ("nul_line", b"nul 1\n\x00rest is ignored\n", T),
    ("le_int", b'# TYPE hh histogram\nhh_bucket{le="1"} 1\nhh_bucket{le="+Inf"} 2\nhh_count 2\nhh_sum 3\n', T),
    ("quantile_forms", b'# TYPE ss summary\nss{quantile="0.50"} 1\nss{quantile="1"} 2\nss_count 2\nss_sum 3\n', T),
    ("duplicate_label", b'dl{a="1",a="2"} 1\n', T),
    ("name_label", b'nl{__name__="x"} 1\n', T),
    ("trailing_comma_om", b'tc{a="1",} 1\n# EOF\n', OM),
    ("om_metadata_anywhere", b"# TYPE om gauge\nom 1\n# HELP om late\nother 2\nom 3\n# EOF\n", OM),
    ("om_two_spaces", b"om  1\n# EOF\n", OM),
    ("om_help_no_text", b"# HELP om\n# EOF\n", OM),
    ("om_blank_line", b"om 1\n\n# EOF\n", OM),
    ("om_free_comment", b"# just a comment\nom 1\n# EOF\n", OM),
    ("om_exemplar_gauge", b'# TYPE g gauge\ng 1 # {t="x"} 2\n# EOF\n', OM),
    ("om_nan_timestamp", b"om 1 NaN\n# EOF\n", OM),
    ("om_text_after_eof", b"om 1\n# EOF\nmore 2\n", OM),
]


def render(body: bytes, fmt: str, now_ms: int | None = None) -> bytes:
    """``body`` with ``{now}`` replaced (ms for text, seconds for OpenMetrics)."""
    now_ms = int(time.time() * 1000) - 5_000 if now_ms is None else now_ms
    for k in (2, 1, 0):  # {now-k}: k seconds earlier
        t = now_ms - 1000 * k
        body = body.replace(b"{now-%d}" % k if k else b"{now}", (b"%d" % t) if fmt == T else (b"%.3f" % (t / 1000)))
    return body
