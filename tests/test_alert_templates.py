"""The Go-template interpreter for alert labels and annotations."""

from __future__ import annotations

import pytest

from alerting.template import (
    TemplateError,
    alert_template_data,
    expand_alert_template,
    go_float,
    go_sprintf,
    parse_template,
)

LABELS = {"instance": "web-1:9100", "job": "node", "severity": "page"}


def run(text: str, value: float = 0.5, labels: dict[str, str] = LABELS) -> str:
    data, variables = alert_template_data(labels, value)
    return parse_template(text).expand(data, variables)


@pytest.mark.parametrize(
    "text, value, want",
    [
        ("{{ $labels.instance }} is down", 0, "web-1:9100 is down"),
        ("{{ $value }}", 0.5, "0.5"),
        ("{{ $value }}", 1234567.0, "1.234567e+06"),
        ("{{ $labels.missing }}", 0, ""),
        ('{{ $labels.job | printf "job=%s" }}', 0, "job=node"),
        ("{{ humanize $value }}", 1234567.0, "1.235M"),
        ("{{ humanize $value }}", 0.000123, "123u"),
        ("{{ $value | humanize1024 }}", 1048576.0, "1Mi"),
        ("{{ humanizeDuration $value }}", 93784.0, "1d 2h 3m 4s"),
        ("{{ humanizeDuration $value }}", 0.25, "250ms"),
        ("{{ humanizePercentage $value }}", 0.4567, "45.67%"),
        ("{{ humanizeTimestamp $value }}", 1.5, "1970-01-01 00:00:01.5 +0000 UTC"),
        ('{{ printf "%.2f" $value }}', 2.0 / 3, "0.67"),
        ("{{ toUpper $labels.job }}/{{ toLower \"ABC\" }}/{{ title \"disk full\" }}", 0, "NODE/abc/Disk Full"),
        ("{{ if gt $value 1.0 }}high{{ else if eq $value 1.0 }}one{{ else }}low{{ end }}", 1.0, "one"),
        ("{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}", 0, "instance=web-1:9100 job=node severity=page "),
        ("{{ range $labels }}[{{ . }}]{{ end }}", 0, "[web-1:9100][node][page]"),
        ("a {{- /* note */ -}} b {{- \" c\" }}", 0, "ab c"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", 0, "2"),
        ("{{ with $labels.job }}{{ . }}{{ end }}{{ with $labels.none }}x{{ else }}none{{ end }}", 0, "nodenone"),
        ("{{ .Labels.job }} {{ $.Value }}", 3.0, "node 3"),
        ("{{ len $labels }} {{ index $labels \"job\" }}", 0, "3 node"),
        ("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}", 0, "web-1"),
    ],
)
def test_expand(text: str, value: float, want: str) -> None:
    assert run(text, value) == want


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{{ $label.foo }}", 'undefined variable "$label"'),
        ("{{ nosuch 1 }}", 'function "nosuch" not defined'),
        ("{{ if true }}x", "unexpected EOF"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ \"open }}", "unterminated quoted string"),
        ("{{ $x }}", 'undefined variable "$x"'),
        ("line1\n{{ if }}", "missing value"),
    ],
)
def test_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(text)
    assert reason in str(info.value)


def test_parse_error_line_number() -> None:
    with pytest.raises(TemplateError) as info:
        parse_template("ok\nstill ok\n{{ $nope }}")
    assert info.value.line == 3


def test_variable_scope_ends_with_block() -> None:
    with pytest.raises(TemplateError, match="undefined variable"):
        parse_template("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_runtime_error_becomes_text_not_exception() -> None:
    out = expand_alert_template("{{ index $labels 5 }}", "t", LABELS, 1.0)
    assert out.startswith("<error expanding template:")


def test_no_python_evaluation() -> None:
    with pytest.raises(TemplateError):
        parse_template("{{ __import__ \"os\" }}")
    assert run("{{ \"__class__\" }}") == "__class__"


def test_go_formatting_helpers() -> None:
    assert go_float(100000.0) == "100000" and go_float(1e-5) == "1e-05" and go_float(float("inf")) == "+Inf"
    assert go_sprintf("%s=%v %d%%", "a", 1.5, 3) == "a=1.5 3%"
    assert go_sprintf("%q", 'x"y') == '"x\\"y"'
    assert go_sprintf("%s") == "%!s(MISSING)"
