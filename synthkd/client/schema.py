"""Pydantic models as JSON schemas for structured outputs (computed once per model)."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from typing import Any, cast

from pydantic import BaseModel

from synthkd.client.wire import ResponseFormat
from synthkd.tools.wire import JSONSchema


def _close_objects(node: Any) -> None:
    """Strict structured outputs want every object closed and every property required."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for item in node:
            _close_objects(item)


@lru_cache(maxsize=None)
def strict_schema(model: type[BaseModel]) -> JSONSchema:
    """The model's JSON schema, with objects closed (OpenAI strict mode, xgrammar)."""
    schema = copy.deepcopy(model.model_json_schema())
    _close_objects(schema)
    # pydantic's schema as it wrote it: JSONSchema names the keywords synthkd reads; the others ($defs, $ref, title,
    # ...) stay as they are, sent and hashed unchanged.
    return cast(JSONSchema, schema)


@lru_cache(maxsize=None)
def schema_digest(model: type[BaseModel]) -> str:
    """Short hash of the schema: part of every cache key that asked for it."""
    return hashlib.sha256(json.dumps(strict_schema(model), sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def response_format_for(model: type[BaseModel]) -> ResponseFormat:
    """The `response_format` argument of a chat completion that asks for this model."""
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": strict_schema(model), "strict": True}}
