"""common.regex: RE2 semantics (Go's syntax, anchoring), Go's Expand/ReplaceAll, errors, cache."""

from __future__ import annotations

import pickle

import pytest

from common import regex as R
from common.regex import RegexBudgetError, RegexError, compile_regex, expand
from storage.matchers import Matcher, MatchOp


def test_anchored_like_prometheus() -> None:
    rx = compile_regex("api|web")
    assert rx.matches("api") and rx.matches("web")
    assert not rx.matches("api2") and not rx.matches("xapi")
    assert compile_regex("a.c").matches("a\nc")  # (?s): dot matches newline
    assert not compile_regex("abc").matches("abc\n")  # $ is the end of text, not before a newline
    assert compile_regex("").matches("") and not compile_regex("").matches("x")


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        (r"\d+", "123", True),
        (r"\d+", "١٢٣", False),  # Arabic-Indic digits: \d is ASCII in RE2/Go, not in Python's re
        (r"\w+", "héllo", False),
        (r"(?i)API", "api", True),
        (r"a(?i)b", "aB", True),
        (r"a(?i)b", "AB", False),
        (r"(?P<x>a)(?<y>b)", "ab", True),
        (r"[[:alpha:]]+", "abc", True),
        (r"\pL+", "héllo", True),
        (r"\Qa.b\E", "a.b", True),
        (r"\Qa.b\E", "axb", False),
        (r"(?U)a+", "aaa", True),
    ],
)
def test_go_syntax(pattern: str, text: str, hit: bool) -> None:
    assert compile_regex(pattern).matches(text) is hit


@pytest.mark.parametrize("pattern", [".*", ".+", "foo", "a|b|", "foo.*", ".*foo", ".*foo.*"])
@pytest.mark.parametrize("text", ["", "foo", "xfoo", "foox", "xfoox", "a", "b", "a\nfoo"])
def test_fast_paths_agree_with_re2(pattern: str, text: str) -> None:
    fast = compile_regex(pattern)
    assert fast._fast is not None
    slow = R.Regex(pattern, True, fast._prog)
    assert fast.matches(text) is slow.matches(text)


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("(?=a)", "no lookahead"),
        ("(?<=a)b", "no lookahead"),
        (r"(a)\1", "no backreferences"),
        ("(a", "missing )"),
        ("a{1001}", "invalid repetition size"),
        (r"\Z", "invalid escape"),
        (r"\pL{1000}\pL{1000}\pL{1000}", "budget"),
    ],
)
def test_clear_errors(pattern: str, hint: str) -> None:
    with pytest.raises(RegexError) as info:
        compile_regex(pattern)
    msg = str(info.value)
    assert msg.startswith("error parsing regexp:") and hint in msg and pattern in msg


def test_nested_quantifiers_are_linear() -> None:
    """The shapes that backtracking engines take exponential time on answer at once: counted
    in RE2 program steps is not possible, so the text is long enough that backtracking could
    not finish at all (2^5000)."""
    for pattern in ["(.*.*)*X", "(a+)+$", "(x+x+)+y", "(a|a)*b", "(a|aa)+$"]:
        rx = compile_regex(pattern)
        assert not rx.matches("a" * 5000 + "!")
        assert not compile_regex(pattern, anchored=False).matches("x" * 5000 + "!")


def test_groups_and_expand_follow_go() -> None:
    rx = compile_regex(r"(?P<host>[^:]+):(\d+)")
    groups = rx.groups_of("db-1:9100")
    assert groups == ["db-1:9100", "db-1", "9100"]
    names = rx.groupindex
    assert expand("$host-$2", groups, names) == "db-1-9100"
    assert expand("${host}x", groups, names) == "db-1x"
    assert expand("$hostx", groups, names) == ""  # the name runs to the last word character
    assert expand("$$1 $9 ${nope} $", groups, names) == "$1   $"
    assert expand("${1", groups, names) == "${1"  # malformed: the $ stays literal
    assert expand("$01", groups, names) == ""  # leading zero: a name, not a number
    assert compile_regex("(a)|b").groups_of("b") == ["b", None]


def test_replace_all_is_gos() -> None:
    # Go: an empty match right after a match is not replaced (Python's re.sub differs)
    assert compile_regex("x*", anchored=False).replace_all("abxd", "-") == "-a-b-d-"
    assert compile_regex("(a)(b)?", anchored=False).replace_all("ab a", "[$1$2]") == "[ab] [a]"
    assert compile_regex("é", anchored=False).replace_all("héé", "e") == "hee"
    assert compile_regex("^", anchored=False).replace_all("ab", ">") == ">ab"
    with pytest.raises(RegexBudgetError):
        compile_regex("a", anchored=False).replace_all("a" * 1000, "$0" * 1000, max_size=10_000)


def test_memo_keeps_only_short_texts() -> None:
    rx = compile_regex("a+b", anchored=False)
    long_text = "x" * (R.MEMO_MAX_TEXT + 1) + "aab"
    assert rx.matches(long_text) and rx.matches("aab")
    assert long_text not in rx._memo and rx._memo["aab"] is True


def test_cache_is_bounded_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "CACHE_SIZE", 8)
    for i in range(50):
        compile_regex(f"x{i}")
    assert len(R._cache) <= 8
    assert compile_regex("shared-(.*)") is compile_regex("shared-(.*)")


def test_matchers_pickle_and_compare() -> None:
    m = Matcher("job", MatchOp.RE, "api|w.b")
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.matches_value("web") and not back.matches_value("db")
    with pytest.raises(ValueError, match="invalid regex for label 'job'.*lookahead"):
        Matcher("job", MatchOp.RE, "(?!x)")


def test_re2_loaded_at_the_first_compile() -> None:
    """A process that compiles no regex (a scraper without relabelling) never loads RE2 and
    the C++ libraries it brings; the first compile does."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import scraper.loop, storage.cassandra, storage.matchers\n"
        "from common.regex import compile_regex\n"
        "print('re2' in sys.modules)\n"
        "print(compile_regex('a|b').matches('b'), 're2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "True"]
