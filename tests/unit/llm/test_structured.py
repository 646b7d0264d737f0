"""Structured output's pure parts: the answer's JSON text, its validation, the re-ask and the
request each kind of provider gets."""

from __future__ import annotations

import pytest

from app.domain import InvalidInput
from app.llm.base import CompletionRequest, Message, ResponseFormat
from app.llm.structured import (
    ALLOWED_KEYWORDS,
    Invalid,
    Valid,
    check_answer,
    json_text,
    parse_response_format,
    prepared,
    reask,
)

PERSON = ResponseFormat(
    "json_schema",
    "person",
    {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]},
)


@pytest.mark.parametrize(
    "answer",
    ['{"age": 3}', '  {"age": 3}\n', '```json\n{"age": 3}\n```', '```\n{"age": 3}\n```', ' ```JSON\r\n{"age": 3}```'],
)
def test_the_json_text_drops_whitespace_and_a_code_fence(answer):
    assert json_text(answer) == '{"age": 3}'


def test_a_valid_answer_is_its_text_and_value():
    checked = check_answer('{"age": 3}', PERSON)
    assert checked == Valid('{"age": 3}', {"age": 3})
    assert "3" not in repr(checked)


@pytest.mark.parametrize(
    ("answer", "rule", "where"),
    [
        ("age: three", "not JSON", "line 1"),
        ('{"age": -1}', "minimum", "$.age"),
        ('{"age": "secret-value"}', "type", "$.age"),
        ("{}", "required", "at $ "),
    ],
)
def test_an_invalid_answer_says_which_rule_broke_where_never_the_value(answer, rule, where):
    checked = check_answer(answer, PERSON)
    assert isinstance(checked, Invalid)
    assert checked.rule == rule
    assert where in checked.problem
    assert "secret-value" not in checked.problem
    assert "secret-value" not in reask(checked.problem).content


def test_json_object_takes_any_object_only():
    fmt = ResponseFormat("json_object")
    assert isinstance(check_answer('{"a": [1]}', fmt), Valid)
    assert isinstance(check_answer("[1]", fmt), Invalid)


def test_an_answer_nested_past_the_recursion_limit_is_invalid_not_a_crash():
    checked = check_answer("[" * 100_000 + "]" * 100_000, ResponseFormat("json_object"))
    assert isinstance(checked, Invalid)


def test_a_native_provider_gets_the_format_and_a_prompted_one_the_instructions():
    request = CompletionRequest("m", (Message("system", "Be brief."), Message("user", "hi")))
    native = prepared(request, PERSON, native=True)
    prompted = prepared(request, PERSON, native=False)

    assert native.response_format == PERSON
    assert native.messages == request.messages
    assert prompted.response_format is None
    assert prompted.messages[0].content.startswith("Be brief.\n\nAnswer with a single JSON value")
    assert '"minimum":0' in prompted.messages[0].content
    assert prompted.messages[1:] == request.messages[1:]
    assert prepared(request, None, native=True) is request


def test_text_is_no_format_and_the_allow_list_is_openais_strict_subset():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    assert {"allOf", "oneOf", "not", "if", "patternProperties", "$schema"}.isdisjoint(ALLOWED_KEYWORDS)
    with pytest.raises(InvalidInput) as refused:
        parse_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {"oneOf": []}}})
    assert refused.value.code == "invalid_response_format"
