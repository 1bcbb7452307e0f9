"""Scripted responses: matching, answers, validation errors and reloading a changed file."""

from __future__ import annotations

import logging
import os
import re
import textwrap
import time
from pathlib import Path

import pytest

from llmsim.script import Answer, ErrorSpec, Script, ScriptError, ToolCallSpec

EXAMPLE = Path(__file__).parent.parent / "examples" / "script.yaml"

RULES = """
rules:
  - message: "weather in (?P<city>\\\\w+)"
    tool_call: {name: get_weather, arguments: {city: "{city}", note: "{unknown} {city}", days: [1, "{city}"]}}
  - message: "compare (?P<a>\\\\w+) and (?P<b>\\\\w+)"
    tool_call:
      - {name: get_weather, arguments: {city: "{a}"}}
      - {name: get_weather, arguments: {city: "{b}"}}
  - model: "gpt-4o-mini"
    header: {x-tenant: "acme"}
    text: "Hello Acme"
  - model: "o[0-9].*"
    text: "reasoning"
  - message: "overload"
    error: {status: 503, message: "The engine is currently overloaded, please try again later.", type: "server_error", code: null}
  - message: "limit (?P<n>\\\\d+)"
    error: {status: 429, message: "Limit {n} reached", code: 42}
  - message: "^shout"
    ignore_case: true
    text: "first"
  - message: "shout"
    text: "second"
default:
  text: "I am a scripted llmsim."
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return Script(write(tmp_path / "script.yaml", RULES))


def test_text_and_default(script: Script) -> None:
    assert script.answer("hello", "gpt-4o", {}) == Answer(text="I am a scripted llmsim.")


def test_tool_call_with_named_groups(script: Script) -> None:
    answer = script.answer("What's the weather in Lisbon today?", "gpt-4o", {})
    arguments = {"city": "Lisbon", "note": "{unknown} Lisbon", "days": [1, "Lisbon"]}
    assert answer == Answer(tool_calls=(ToolCallSpec("get_weather", arguments),))


def test_parallel_tool_calls(script: Script) -> None:
    answer = script.answer("compare Paris and Rome", "gpt-4o", {})
    assert answer is not None
    assert [c.arguments["city"] for c in answer.tool_calls] == ["Paris", "Rome"]


def test_errors(script: Script) -> None:
    overloaded = ErrorSpec(
        503, "The engine is currently overloaded, please try again later.", "server_error", None
    )
    assert script.answer("overload please", "gpt-4o", {}) == Answer(error=overloaded)
    assert script.answer("limit 7", "gpt-4o", {}) == Answer(
        error=ErrorSpec(429, "Limit 7 reached", None, "42")
    )


def test_model_and_header_must_both_match(script: Script) -> None:
    assert script.answer("hi", "gpt-4o-mini", {"X-Tenant": "acme"}) == Answer(text="Hello Acme")
    assert script.answer("hi", "gpt-4o-mini", {"x-tenant": "team-acme-eu"}) == Answer(text="Hello Acme")
    default = Answer(text="I am a scripted llmsim.")
    assert script.answer("hi", "gpt-4o-mini", {"x-tenant": "globex"}) == default
    assert script.answer("hi", "gpt-4o-mini", {}) == default
    assert script.answer("hi", "gpt-4o", {"x-tenant": "acme"}) == default
    assert script.answer("hi", "gpt-4o-mini-2024", {"x-tenant": "acme"}) == default  # no prefix match


def test_model_regex_matches_the_whole_name(script: Script) -> None:
    assert script.answer("hi", "o3-mini", {}) == Answer(text="reasoning")
    assert script.answer("hi", "gpt-o3", {}) == Answer(text="I am a scripted llmsim.")


def test_first_match_wins_and_ignore_case(script: Script) -> None:
    assert script.answer("SHOUT it", "gpt-4o", {}) == Answer(text="first")
    assert script.answer("please shout", "gpt-4o", {}) == Answer(text="second")
    assert script.answer("weather in Oslo, overload", "gpt-4o", {}).tool_calls  # type: ignore[union-attr]


def test_no_default_gives_none(tmp_path: Path) -> None:
    script = Script(write(tmp_path / "s.yaml", "rules:\n  - {message: hi, text: hello}\n"))
    assert script.answer("hi there", "m", {}) == Answer(text="hello")
    assert script.answer("bye", "m", {}) is None


def test_default_only_and_rule_without_conditions(tmp_path: Path) -> None:
    script = Script(write(tmp_path / "s.yaml", "default:\n  tool_call: {name: ping}\n"))
    assert script.answer("x", "m", {}) == Answer(tool_calls=(ToolCallSpec("ping", {}),))
    script = Script(write(tmp_path / "t.yaml", "rules:\n  - text: always\n"))
    assert script.answer("x", "m", {}) == Answer(text="always")


def test_example_file_loads() -> None:
    script = Script(EXAMPLE)
    answer = script.answer("What is the weather in Lisbon?", "gpt-4o", {})
    assert answer is not None and answer.tool_calls[0].arguments["city"] == "Lisbon"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "rules:\n  - {message: hi}\n",
            r"rules\[0\]: give exactly one of text, tool_call or error \(found none\)",
        ),
        (
            "rules:\n  - {text: a}\n  - {text: a, error: {status: 500, message: x}}\n",
            r"rules\[1\]: .*found text and error",
        ),
        (
            "rules:\n  - {text: a}\n  - {massage: hi, text: a}\n",
            r"rules\[1\]: its key 1 is not a known field",
        ),
        (
            "rules:\n  - {message: '(unclosed', text: a}\n",
            r"rules\[0\]\.message: not a valid regular expression \(missing \), unterminated subpattern",
        ),
        (
            "rules:\n  - {header: {x-a: '['}, text: a}\n",
            r"rules\[0\]\.header: not a valid regular expression \(unterminated character set",
        ),
        (
            "rules:\n  - error: {status: 200, message: ok}\n",
            r"rules\[0\]\.error\.status: Input should be greater than or equal to 400",
        ),
        ("rules:\n  - error: {status: 500}\n", r"rules\[0\]\.error\.message: Field required"),
        ("rules:\n  - tool_call: [{arguments: {}}]\n", r"rules\[0\]\.tool_call\[0\]\.name: Field required"),
        ("rules:\n  - tool_call: []\n", r"rules\[0\]: tool_call needs at least one call"),
        ("default: {text: a, message: hi}\n", r"default\.message: Extra inputs are not permitted"),
        ("", r"the script has no rules and no default"),
        ("- text: a\n", r"the file should be a mapping with `rules` and `default`"),
        ("rules: [\n", r"not valid YAML at line 2"),
    ],
)
def test_invalid_files(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "bad.yaml", content)
    with pytest.raises(ScriptError, match=rf"^{re.escape(str(path))}: {expected}"):
        Script(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="cannot read the script"):
        Script(tmp_path / "nope.yaml")


def rewrite(path: Path, text: str, bump: int) -> None:
    """New content with an mtime in the future, so the change shows even on coarse clocks."""
    write(path, text)
    stamp = time.time() + bump
    os.utime(path, (stamp, stamp))


def poll(script: Script, expected: Answer, timeout: float = 5.0) -> Answer | None:
    deadline = time.monotonic() + timeout
    while True:
        answer = script.answer("hello", "m", {})
        if answer == expected or time.monotonic() > deadline:
            return answer
        time.sleep(0.01)


def test_reload_on_change_and_keep_rules_on_a_bad_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "s.yaml", "default: {text: one}\n")
    script = Script(path, check_interval=0)
    assert script.answer("hello", "m", {}) == Answer(text="one")

    rewrite(path, "default: {text: two}\n", bump=10)
    assert poll(script, Answer(text="two")) == Answer(text="two")

    with caplog.at_level(logging.WARNING, logger="llmsim"):
        rewrite(path, "default: {text: three, error: {status: 500, message: x}}\n", bump=20)
        assert script.answer("hello", "m", {}) == Answer(text="two")
    assert "keeping the previous rules" in caplog.text and "default" in caplog.text

    rewrite(path, "default: {text: four}\n", bump=30)
    assert poll(script, Answer(text="four")) == Answer(text="four")

    path.unlink()
    with caplog.at_level(logging.WARNING, logger="llmsim"):
        assert script.answer("hello", "m", {}) == Answer(text="four")
    write(path, "default: {text: five}\n")
    assert poll(script, Answer(text="five")) == Answer(text="five")


def test_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "default: {text: one}\n")
    script = Script(path, check_interval=3600)
    rewrite(path, "default: {text: two}\n", bump=10)
    assert script.answer("hello", "m", {}) == Answer(text="one")  # not looked at yet
    script.reload()  # the explicit reload does not wait
    assert script.answer("hello", "m", {}) == Answer(text="two")
    rewrite(path, "rules: [\n", bump=20)
    with pytest.raises(ScriptError, match="not valid YAML"):
        script.reload()
    assert script.answer("hello", "m", {}) == Answer(text="two")
