"""`null` in a request means "not given" wherever OpenAI's spec allows it: the field then takes its default.

Clients send explicit nulls (the `openai` SDK's models dumped whole, LiteLLM filling every field, an assistant
message given back with `refusal: null`); refusing them, or reading `"n": null` as anything but 1, would fail
requests that OpenAI's API takes. A null elsewhere is left to the field's own type: a 400 for most
(`"model": null`), taken where the field's default is null anyway (`top_logprobs`, which one part of the spec's
`allOf` makes nullable and another does not).

The sets are the fields of OpenAI's OpenAPI document (github.com/openai/openai-openapi) whose schema accepts
null; tests/test_openai_spec.py reads them again from the schemas kept in tests/data/openai_spec/ and fails if
they differ.
"""

from __future__ import annotations

COMPLETION_NULLABLE = frozenset({
    "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
    "prompt", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p",
})
CHAT_NULLABLE = frozenset({
    "audio", "frequency_penalty", "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata",
    "modalities", "moderation", "n", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_retention",
    "reasoning_effort", "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
    "temperature", "top_p", "verbosity",
})
# of any chat message (the spec's message kinds together: an assistant message's are the only ones)
CHAT_MESSAGE_NULLABLE = frozenset({"content", "refusal", "audio", "function_call"})


def unset_nulls(data, nullable: frozenset[str]):
    """`data` (a request body, before validation) without the null values of `nullable` fields."""
    if not isinstance(data, dict):
        return data
    return {key: value for key, value in data.items() if not (value is None and key in nullable)}
