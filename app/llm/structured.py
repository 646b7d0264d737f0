"""Structured output: a task's `response_format` checked against its bounds, asked for (natively
or in the system message), and its answer validated with `jsonschema`.

The bounds (docs/structured-output.md), each a 422 `invalid_response_format` that names the rule
and never repeats the schema (nor a keyword or name the caller made up):

- `{"type": "text"}` (or no `response_format`): a plain answer, as before;
- `{"type": "json_object"}`: any JSON object;
- `{"type": "json_schema", "json_schema": {"name", "schema", "description"?, "strict"?}}`: the
  name matches NAME, the schema is at most MAX_SCHEMA_BYTES as JSON and MAX_SCHEMA_DEPTH levels
  deep, uses only ALLOWED_KEYWORDS, its `$ref`s point inside it, its patterns compile, and it is
  a valid JSON Schema (draft 2020-12).

The schema is never stored and never logged: it lives in memory with the task (its keyed hash is
part of the cache key and of the request hash) and goes to the provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, best_match

from app.domain import InvalidInput
from app.llm.base import CompletionRequest, Message, ResponseFormat

CODE = "invalid_response_format"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_DESCRIPTION_CHARS = 4096  # the `json_schema.description` beside the schema

# OpenAI's strict-mode subset of JSON Schema (what its structured outputs accept), plus `title`
# and `definitions`. Keywords that hold schemas are walked into; the rest hold plain values.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions"})  # name -> schema
_SCHEMA_LISTS = frozenset({"anyOf"})  # [schema, ...]
_SCHEMA_VALUES = frozenset({"items", "additionalProperties"})  # a schema (or a boolean)
_PLAIN = frozenset(
    {
        "type",
        "required",
        "enum",
        "const",
        "$ref",
        "title",
        "description",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)
ALLOWED_KEYWORDS = _SCHEMA_MAPS | _SCHEMA_LISTS | _SCHEMA_VALUES | _PLAIN
_FIELDS = {"json_schema": {"name", "schema", "description", "strict"}}
_KINDS = ("text", "json_object", "json_schema")


def _refused(rule: str) -> InvalidInput:
    return InvalidInput(f"response_format: {rule}", code=CODE)


def parse_response_format(raw: Mapping[str, Any] | None) -> ResponseFormat | None:
    """The task's `response_format` as a ResponseFormat (None for a plain-text answer), or a 422
    `invalid_response_format` naming the broken rule."""
    if raw is None:
        return None
    kind = raw.get("type")
    if kind not in _KINDS:
        raise _refused("type must be one of text, json_object, json_schema")
    if set(raw) - {"type", "json_schema"} or (kind != "json_schema" and "json_schema" in raw):
        raise _refused(f"an unknown field is not allowed beside type {kind}")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    spec = raw.get("json_schema")
    if not isinstance(spec, Mapping):
        raise _refused("json_schema must be an object with name and schema")
    if set(spec) - _FIELDS["json_schema"]:
        raise _refused("json_schema takes only name, schema, description and strict")
    name, schema = spec.get("name"), spec.get("schema")
    description, strict = spec.get("description"), spec.get("strict")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _refused(f"json_schema.name must match {NAME.pattern}")
    if not isinstance(schema, Mapping):
        raise _refused("json_schema.schema must be a JSON object (a JSON Schema)")
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS):
        raise _refused(f"json_schema.description must be text of at most {MAX_DESCRIPTION_CHARS} characters")
    if strict is not None and not isinstance(strict, bool):
        raise _refused("json_schema.strict must be true, false or null")
    check_schema(schema)
    return ResponseFormat("json_schema", name, schema, description, strict)


def check_schema(schema: Mapping[str, Any]) -> None:
    """The schema's bounds: size, depth, keywords, local `$ref`s, patterns, and JSON Schema itself."""
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except ValueError:
        raise _refused("the schema must be standard JSON: no NaN or Infinity, no lone surrogates") from None
    if size > MAX_SCHEMA_BYTES:
        raise _refused(f"the schema is {size} bytes as JSON; the limit is {MAX_SCHEMA_BYTES}")
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise _refused(f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    pending: list[Any] = [schema]
    while pending:  # a loop, not recursion: the shape is the caller's
        node = pending.pop()
        if isinstance(node, bool):
            continue  # `true` / `false` are schemas too (e.g. additionalProperties: false)
        if not isinstance(node, Mapping):
            raise _refused("every subschema must be a JSON object or a boolean")
        if set(node) - ALLOWED_KEYWORDS:
            raise _refused("the schema uses a keyword outside the allowed list: " + ", ".join(sorted(ALLOWED_KEYWORDS)))
        for keyword, value in node.items():
            if keyword in _SCHEMA_MAPS:
                if not isinstance(value, Mapping):
                    raise _refused(f"{keyword} must map names to schemas")
                pending.extend(value.values())
            elif keyword in _SCHEMA_LISTS:
                if not isinstance(value, list) or not value:
                    raise _refused(f"{keyword} must be a non-empty list of schemas")
                pending.extend(value)
            elif keyword in _SCHEMA_VALUES:
                pending.append(value)
            elif keyword == "$ref":
                _check_ref(schema, value)
            elif keyword == "pattern":
                _check_pattern(value)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:  # its message quotes the schema: the rule's keyword only
        raise _refused(f"the schema is not a valid JSON Schema (draft 2020-12): rule {exc.validator}") from None


def _depth(value: Any) -> int:
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping | list):
            deepest = max(deepest, depth)
            if depth > MAX_SCHEMA_DEPTH:
                return depth
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, Mapping) else item))
    return deepest


def _check_ref(root: Mapping[str, Any], ref: Any) -> None:
    """Only references inside the schema (`#` or `#/$defs/...`): nothing is ever fetched."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        raise _refused("$ref must point inside the schema (#/$defs/...)")
    node: Any = root
    for part in ref[2:].split("/") if ref != "#" else ():
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise _refused("a $ref points at nothing in the schema")


def _check_pattern(pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise _refused("pattern must be a regular expression")
    try:
        re.compile(pattern)
    except re.error:
        raise _refused("a pattern is not a valid regular expression") from None


# -- asking -------------------------------------------------------------------------------


def instructions(fmt: ResponseFormat) -> str:
    """What the system message says when the provider does not enforce the format itself."""
    if fmt.kind == "json_object":
        return "Answer with a single JSON object and nothing else: no prose, no code fence."
    about = f" ({fmt.description})" if fmt.description else ""
    schema = json.dumps(fmt.schema, separators=(",", ":"), ensure_ascii=False)
    return (
        f"Answer with a single JSON value and nothing else (no prose, no code fence) that is valid against "
        f"the JSON Schema named {fmt.name}{about}:\n{schema}"
    )


def with_instructions(messages: tuple[Message, ...], text: str) -> tuple[Message, ...]:
    """The messages with `text` appended to the system message (one is put first if there is none)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        return (Message("system", f"{first.content}\n\n{text}"), *messages[1:])
    return (Message("system", text), *messages)


def prepared(request: CompletionRequest, fmt: ResponseFormat | None, *, native: bool) -> CompletionRequest:
    """The request as the provider gets it: with `response_format` set when it enforces the format
    itself (`native`), else with the instructions in its system message (the prompted fallback).
    A native `json_object` is named in the system message too: OpenAI refuses that mode unless the
    messages mention JSON."""
    if fmt is None:
        return request
    if not native:
        return replace(request, messages=with_instructions(request.messages, instructions(fmt)))
    messages = with_instructions(request.messages, instructions(fmt)) if fmt.kind == "json_object" else request.messages
    return replace(request, messages=messages, response_format=fmt)


# -- checking -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Valid:
    """An answer that validates: its JSON text (what `output` is) and its value (`output_json`)."""

    text: str
    value: Any

    def __repr__(self) -> str:  # never the answer
        return f"Valid(<{len(self.text)} chars>)"


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why an answer does not validate. `rule` is safe to store (a fixed phrase or a schema
    keyword of the allowed list); `problem` is for the model's re-ask only: it names where in
    the answer the rule broke (a JSON path), never the answer's values."""

    rule: str
    problem: str


_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\r?\n(?P<body>.*?)\r?\n?```\Z", re.DOTALL)


def json_text(answer: str) -> str:
    """The answer without surrounding whitespace and without a Markdown code fence around it
    (models asked in the prompt often add one)."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    return fenced.group("body").strip() if fenced else text


def check_answer(answer: str, fmt: ResponseFormat) -> Valid | Invalid:
    """Parse and validate the answer against the format."""
    text = json_text(answer)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Invalid("not JSON", f"it is not JSON (line {exc.lineno}, column {exc.colno})")
    except RecursionError:
        return Invalid("not JSON", "it is nested too deeply")
    if fmt.kind == "json_object" and not isinstance(value, dict):
        return Invalid("type", "it must be a JSON object")
    try:
        error = best_match(Draft202012Validator(fmt.schema, format_checker=FormatChecker()).iter_errors(value))
    except RecursionError:
        return Invalid("not JSON", "it is nested too deeply")
    if error is None:
        return Valid(text, value)
    rule = str(error.validator)
    rule = rule if rule in ALLOWED_KEYWORDS else "schema"
    return Invalid(rule, f"at {error.json_path} it breaks the schema's `{rule}` rule")


def reask(problem: str) -> Message:
    """The user message that asks again after an invalid answer: what was wrong, never the content."""
    return Message(
        "user",
        f"Your answer is not valid: {problem}. Answer again with only the JSON value, valid against the schema.",
    )
