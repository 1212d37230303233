"""OpenAI's published schemas, kept in tests/data/openai_spec/schemas.json, and the check of a body against them.

The file holds the schemas of https://github.com/openai/openai-openapi (`openapi.yaml`, at the commit named in
its `x-source`) that the API's requests and answers are checked against, with every `$ref` they make;
scripts/extract_openai_schemas.py writes it from a clone of that repository.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from jsonschema import Draft202012Validator

SPEC = json.loads((Path(__file__).parent / "data" / "openai_spec" / "schemas.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


@dataclass(frozen=True)
class Looser:
    """A place where OpenAI's own API is knowingly looser than its spec: it sends `null` where the schema has
    no null. Only a null at a JSON path matching `path` is let through, and only where a test names it."""

    path: str  # a regular expression on the JSON path of the null value, e.g. `$.choices[0].finish_reason`
    why: str


# Streamed completions: the spec gives streamed and whole answers one shape, whose `finish_reason` is a non-null
# enum; but a choice has no finish reason before its last chunk, and OpenAI's API (as vLLM's) sends null there.
STREAMED_FINISH_REASON = Looser(r"\$\.choices\[\d+\]\.finish_reason",
                                "a streamed completion chunk before its choice's last: finish_reason is null")
# Completions with `echo` and `logprobs`: the prompt's first token has no logprob (nothing comes before it);
# OpenAI's API sends null for it in `token_logprobs` and `top_logprobs`, where the spec's items are numbers and
# objects. lm-evaluation-harness reads it so.
ECHO_FIRST_TOKEN = Looser(r"\$\.choices\[\d+\]\.logprobs\.(token_logprobs|top_logprobs)\[0\]",
                          "the first echoed prompt token has no logprob: null")


def violations(body, schema: str, looser: tuple[Looser, ...] = ()) -> list[str]:
    """Every way `body` breaks the spec's `schema`, less the nulls that `looser` lets through."""
    def allowed(error) -> bool:
        return error.instance is None and any(re.fullmatch(x.path, error.json_path) for x in looser)

    def unexplained(error) -> bool:
        if error.validator in ("anyOf", "oneOf") and error.context:
            # the value fits the union if one branch fails only where a Looser allows it
            branches = defaultdict(list)
            for sub in error.context:
                branches[sub.relative_schema_path[0]].append(sub)
            return all(any(unexplained(sub) for sub in subs) for subs in branches.values())
        return not allowed(error)

    return [f"{error.json_path}: {error.message}" for error in validator(schema).iter_errors(body)
            if unexplained(error)]


def nullable_properties(schema: str, minimal: dict) -> set[str]:
    """The properties of `schema` that may be null: `minimal` (a body that fits it) with that one property null
    still fits. (Through `allOf` a property may be nullable in one part and not in another: then it is not.)"""
    def properties(name: str) -> set[str]:
        found = set()
        for part in SCHEMAS[name].get("allOf", [SCHEMAS[name]]):
            found |= properties(part["$ref"].rsplit("/", 1)[1]) if "$ref" in part else set(part.get("properties", {}))
        return found

    check = validator(schema)
    assert check.is_valid(minimal)
    return {name for name in properties(schema) if check.is_valid({**minimal, name: None})}


def sse_events(text: str) -> list:
    """The JSON payloads of a `text/event-stream` body, checking that it ends with `[DONE]`."""
    data = [line[len("data: "):] for line in text.split("\n\n") if line.strip()]
    assert data and data[-1] == "[DONE]", text[-300:]
    return [json.loads(d) for d in data[:-1]]
