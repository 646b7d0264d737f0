"""Structured output through the native providers: the schema goes to each vendor (natively where
the model has a JSON-schema mode, else in pydantic-ai's prompted instructions), the answer is
validated into `output_json`, and a wrong one is re-asked and then fails `invalid_output`."""

from __future__ import annotations

import json

import pytest

from tests.support.fake_vendors import MODELS, VENDORS, VendorReply
from tests.support.providers import run_task, serve

ENTITIES = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "kind": {"enum": ["person", "place"]}},
                "required": ["name", "kind"],
            },
        }
    },
    "required": ["entities"],
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "kg_entities", "schema": ENTITIES}}
ANSWER = {"entities": [{"name": "Ada", "kind": "person"}, {"name": "London", "kind": "place"}]}


@pytest.mark.parametrize("kind", VENDORS)
async def test_every_vendor_gets_the_schema_and_its_answer_is_validated_json(
    database_url, vendors, vendor_settings, kind
):
    text = json.dumps(ANSWER)
    vendors.enqueue(VendorReply(pieces=[text[:20], text[20:]]))
    async with serve(database_url, **vendor_settings) as (http, caller):
        done = await run_task(http, caller, model=f"{kind}-test:{MODELS[kind]}", response_format=FORMAT)
        catalog = (await http.get("/models", headers=caller.headers)).json()

    assert done["status"] == "succeeded", done
    assert done["output_json"] == ANSWER
    assert json.loads(done["output"]) == ANSWER
    _, sent = vendors.requests[0]
    assert "kg_entities" in json.dumps(sent) or '"place"' in json.dumps(sent), "the vendor was given the schema"
    provider = next(p for p in catalog["providers"] if p["name"] == f"{kind}-test")
    assert provider["capabilities"]["structured_output"] is True


@pytest.mark.parametrize("kind", ["google", "mistral"])  # a native JSON-schema mode, and a prompted one
async def test_a_wrong_answer_is_asked_again_then_the_task_fails_invalid_output(
    database_url, vendors, vendor_settings, kind
):
    vendors.enqueue(VendorReply(pieces=['{"entities": "Ada"}']), VendorReply(pieces=["not json at all"]))
    async with serve(database_url, structured_output_retries=1, **vendor_settings) as (http, caller):
        failed = await run_task(http, caller, model=f"{kind}-test:{MODELS[kind]}", response_format=FORMAT)

    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_output"
    assert failed["output"] is None
    assert vendors.count == 2  # one answer and one re-ask
    _, reask = vendors.requests[1]
    assert "Your answer is not valid: at $.entities" in json.dumps(reask)  # where it broke, never what was said


async def test_gemini_gets_the_schema_in_its_native_mode(database_url, vendors, vendor_settings):
    vendors.enqueue(VendorReply(pieces=[json.dumps(ANSWER)]))
    async with serve(database_url, **vendor_settings) as (http, caller):
        await run_task(http, caller, model=f"google-test:{MODELS['google']}", response_format=FORMAT)

    _, sent = vendors.requests[0]
    config = sent.get("generationConfig", {})
    assert config.get("responseMimeType") == "application/json"
    assert "place" in json.dumps(config)
