"""Scripted responses (``--response-mode script --script FILE``): YAML rules, first match wins.

A gateway test often needs one exact answer for one exact request: a tool call for the weather
question, a 503 for the overload probe, a greeting for one tenant. Rules say so without code::

    rules:
      - message: "weather in (?P<city>\\w+)"          # re.search on the last user message
        tool_call: {name: get_weather, arguments: {city: "{city}"}}
      - model: "gpt-4o-mini"                          # the exact name, or a regex for the whole name
        header: {x-tenant: "acme"}                    # re.search on the value; names in any case
        text: "Hello Acme"
      - message: "overload"
        error: {status: 503, message: "The engine is currently overloaded, please try again later.", type: "server_error", code: null}
    default:
      text: "I am a scripted llmsim."

Matching: a rule matches when all its conditions hold (a rule with none matches everything);
``message`` and header values are searched (``re.search``), ``model`` must equal the name or
fully match it as a regex (so ``gpt-4o`` does not catch ``gpt-4o-mini``); a missing header fails
the rule. ``ignore_case: true`` makes the rule's regexes case-insensitive (or write ``(?i)``).

Answers: exactly one of ``text``, ``tool_call`` (one call, or a list for parallel calls) or
``error`` (``status`` 400-599, ``message``, optional ``type`` and ``code``); a text or tool call
may add ``usage: {prompt: 1200, completion: 40, cached: 1024, reasoning: 0}`` (any of the keys),
the usage reported exactly, as the ``x-llmsim-usage`` header asks (which wins). ``{name}``
placeholders in the answer's strings are filled from the named groups of the rule's regexes;
other braces are left alone. Without a ``default``, an unmatched request gets ``None`` and the
caller falls back to its usual response mode.

The file is watched: :meth:`Script.answer` stats it at most once per ``check_interval`` seconds
and reloads it when it changed (on a server, in a worker thread: the event loop never waits for a
parse); a broken edit keeps the previous rules and logs a warning. The same rules can also come
inline (:meth:`Script.inline`, from ``--script-rules`` or a PATCH), without a file.

Errors name the file and a position (``rules[2].error.status``, a line and column), never the
file's text: the file is the operator's, but a typo can point ``--script`` at any file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmsim.generation import MAX_USAGE_COMPLETION, MAX_USAGE_PROMPT, UsageOverride, check_usage
from llmsim.settings import FileError, describe_invalid, parse_yaml, read_file, schema_names
from llmsim.workers import in_thread

logger = logging.getLogger("llmsim")

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class ScriptError(FileError):
    """The script cannot be used; the message names the file and the rule, not their text."""


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    message: str
    type: str | None
    code: str | None


@dataclass(frozen=True)
class Answer:
    text: str | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    error: ErrorSpec | None = None
    usage: UsageOverride | None = None


# --- the file's shape ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class _ToolCall(_Strict):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = {}


class _Error(_Strict):
    status: int = Field(ge=400, le=599)
    message: str
    type: str | None = None
    code: str | None = None


class _Usage(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prompt: int | None = Field(None, ge=0, le=MAX_USAGE_PROMPT)
    completion: int | None = Field(None, ge=0, le=MAX_USAGE_COMPLETION)
    cached: int | None = Field(None, ge=0, le=MAX_USAGE_PROMPT)
    reasoning: int | None = Field(None, ge=0, le=MAX_USAGE_COMPLETION)

    @model_validator(mode="after")
    def _consistent(self) -> _Usage:
        problem = check_usage(self.override())
        if problem is not None:
            raise ValueError(problem)
        return self

    def override(self) -> UsageOverride:
        return UsageOverride(self.prompt, self.completion, self.cached, self.reasoning)


class _Reply(_Strict):
    text: str | None = None
    tool_call: list[_ToolCall] | None = None
    error: _Error | None = None
    usage: _Usage | None = None

    @field_validator("tool_call", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> _Reply:
        given = [k for k in ("text", "tool_call", "error") if getattr(self, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) or "none"
            raise ValueError(f"give exactly one of text, tool_call or error (found {found})")
        if self.tool_call == []:
            raise ValueError("tool_call needs at least one call")
        if self.error is not None and self.usage is not None:
            raise ValueError("an error has no usage: give usage with a text or a tool_call")
        return self

    def answer(self) -> Answer:
        calls = tuple(ToolCallSpec(c.name, dict(c.arguments)) for c in self.tool_call or ())
        e = self.error
        error = None if e is None else ErrorSpec(e.status, e.message, e.type, e.code)
        usage = None if self.usage is None else self.usage.override()
        return Answer(text=self.text, tool_calls=calls, error=error, usage=usage)


class _Rule(_Reply):
    message: str | None = None
    model: str | None = None
    header: dict[str, str] = {}
    ignore_case: bool = False

    @field_validator("message", "model")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value, 0)
        return value

    @field_validator("header")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            _compile(pattern, 0)
        return value


class _File(_Strict):
    rules: list[_Rule] = []
    default: _Reply | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> _File:
        if not self.rules and self.default is None:
            raise ValueError("the script has no rules and no default")
        return self


def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:  # re's own message says what is wrong and where, without the pattern
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"not a valid regular expression ({exc.msg}{where})") from None


_NAMES = schema_names(_File, _Rule, _Reply, _Error, _ToolCall, _Usage)
Rules = tuple[tuple["_Compiled", ...], "Answer | None"]


def parse_rules(raw: Any, source: str = "") -> Rules:
    """Compiled rules and default from parsed data; ScriptError names ``source`` and the rule."""
    try:
        parsed = _File.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        problem = _describe(exc, raw)
        raise ScriptError(f"{source}: {problem}" if source else problem) from None
    rules = tuple(_Compiled.of(rule) for rule in parsed.rules)
    return rules, parsed.default.answer() if parsed.default else None


# --- matching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    message: re.Pattern[str] | None
    model: str | None
    model_re: re.Pattern[str] | None
    headers: tuple[tuple[str, re.Pattern[str]], ...]
    answer: Answer

    @classmethod
    def of(cls, rule: _Rule) -> _Compiled:
        flags = re.IGNORECASE if rule.ignore_case else 0
        return cls(
            message=None if rule.message is None else _compile(rule.message, flags),
            model=rule.model,
            model_re=None if rule.model is None else _compile(rule.model, flags),
            headers=tuple((name.lower(), _compile(p, flags)) for name, p in rule.header.items()),
            answer=rule.answer(),
        )

    def match(self, text: str, model: str, headers: Mapping[str, str]) -> dict[str, str] | None:
        """The named groups of a match (empty when there are none), or None."""
        groups: dict[str, str] = {}
        if self.model_re is not None and model != self.model:
            found = self.model_re.fullmatch(model)
            if found is None:
                return None
            groups.update(_groups(found))
        for name, pattern in self.headers:
            value = headers.get(name)
            found = None if value is None else pattern.search(value)
            if found is None:
                return None
            groups.update(_groups(found))
        if self.message is not None:
            found = self.message.search(text)
            if found is None:
                return None
            groups.update(_groups(found))
        return groups


def _groups(found: re.Match[str] | None) -> dict[str, str]:
    return {} if found is None else {k: v or "" for k, v in found.groupdict().items()}


def _fill(value: Any, groups: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: groups.get(m[1], m[0]), value)
    if isinstance(value, dict):
        return {k: _fill(v, groups) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, groups) for v in value]
    return value


def _filled(answer: Answer, groups: Mapping[str, str]) -> Answer:
    if not groups:
        return answer
    error = answer.error
    if error is not None:
        error = ErrorSpec(error.status, _fill(error.message, groups), error.type, error.code)
    calls = tuple(ToolCallSpec(c.name, _fill(c.arguments, groups)) for c in answer.tool_calls)
    return Answer(text=_fill(answer.text, groups), tool_calls=calls, error=error, usage=answer.usage)


# --- the script ----------------------------------------------------------------------------------


class Script:
    """The rules of one YAML file, reloaded when the file changes; or rules given inline."""

    def __init__(self, path: str | os.PathLike[str], check_interval: float = 1.0) -> None:
        self.path: Path | None = Path(path)
        self.check_interval = check_interval
        self._stamp: tuple[int, int, int] | None = self._stat()
        self._state = self._load()  # (rules, default), swapped whole so readers see one pair
        self._next_check = time.monotonic() + check_interval
        self._loading = False

    @classmethod
    def inline(cls, raw: Any) -> Script:
        """Rules from data already parsed (a PATCH's JSON, --script-rules): no file to watch."""
        script = cls.__new__(cls)
        script.path, script.check_interval, script._stamp = None, 0.0, None
        script._state = parse_rules(raw, "script_rules")
        script._next_check, script._loading = float("inf"), False
        return script

    def answer(self, last_user_text: str, model: str, headers: Mapping[str, str]) -> Answer | None:
        """The first matching rule's answer, else the default's; None without either."""
        self._maybe_reload()
        rules, default = self._state
        lowered: dict[str, str] | None = None
        for rule in rules:
            if rule.headers and lowered is None:
                lowered = {k.lower(): v for k, v in headers.items()}
            groups = rule.match(last_user_text, model, lowered or {})
            if groups is not None:
                return _filled(rule.answer, groups)
        return default

    def reload(self) -> None:
        """Load the file now; on ScriptError the previous rules stay. Inline rules have no file."""
        if self.path is None:
            return
        stamp = self._stat()
        self._state = self._load()
        self._stamp = stamp

    # -- internals ---------------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check or self._loading:
            return
        self._next_check = now + self.check_interval
        try:
            stamp = self._stat()
        except ScriptError as exc:
            if self._stamp is not None:
                logger.warning("%s; keeping the previous rules", exc)
            self._stamp = None
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp  # stat before reading: a write racing the read triggers one more load
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop here (a test, a tool): load now
            self._loaded(self._load)
            return
        # On the server, read and parse in a worker thread: requests keep the old rules meanwhile.
        self._loading = True
        in_thread(self._load).add_done_callback(lambda done: self._loaded(done.result))

    def _loaded(self, result: Any) -> None:
        """Swap in the rules ``result()`` returns; on ScriptError keep the previous ones."""
        self._loading = False
        try:
            self._state = result()
        except ScriptError as exc:
            logger.warning("%s; keeping the previous rules", exc)
        else:
            logger.info("script %s reloaded: %d rules", self.path, len(self._state[0]))

    def _stat(self) -> tuple[int, int, int]:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ScriptError(f"{self.path}: cannot read the script ({exc.strerror})") from None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self) -> Rules:
        assert self.path is not None
        try:
            raw = parse_yaml(read_file(self.path, "script"), self.path)
        except FileError as exc:
            raise ScriptError(str(exc)) from None
        return parse_rules(raw, str(self.path))


def _describe(exc: ValidationError, raw: Any) -> str:
    """The first error as `rules[2].error.status: message`, keys written in the file by position."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "model_type" and not first["loc"]:
        return "the file should be a mapping with `rules` and `default`"
    return describe_invalid(exc, raw, _NAMES)
