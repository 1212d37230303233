"""Request parsing, by property: whatever a client sends, the body either parses into a request that can run,
or is a 400 with an OpenAI error object naming what is wrong. Never another exception (a 500)."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.cluster.api.requests import (ApiError, ChatRequest, CompletionRequest, lone_surrogate,
                                                 parse_body)

MODEL = "m"
PARAMS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values of every kind, with odd text (surrogates, NUL, astral planes) and numbers past every bound
odd_text = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=8)
numbers = st.one_of(st.integers(), st.integers(min_value=-(2**200), max_value=2**200),
                    st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(st.none() | st.booleans() | numbers | odd_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
                           max_leaves=12)
FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop", "stream", "stream_options",
          "presence_penalty", "frequency_penalty", "logprobs", "echo", "best_of", "logit_bias", "suffix", "user",
          "messages", "top_logprobs", "max_completion_tokens", "ignore_eos", "unknown_field"]


def dumps(body) -> bytes:
    # surrogatepass: the bytes a client sends for "\ud800" are the JSON escape, which json.dumps writes as is
    return json.dumps(body).encode("utf-8", "surrogatepass")


def parse(body, model=CompletionRequest):
    """The parsed request, or the ApiError; any other exception fails the test."""
    try:
        return parse_body(body if isinstance(body, bytes) else dumps(body), model)
    except ApiError as err:
        assert 400 <= err.status < 500
        error = err.body()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        json.dumps(err.body())  # the error itself is valid JSON text (no surrogate echoed back)
        return err


@PARAMS
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), st.booleans())
def test_any_body_parses_or_is_a_400(fields, chat):
    body = {"model": MODEL, **({"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"}),
            **fields}
    parse(body, ChatRequest if chat else CompletionRequest)


@PARAMS
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_a_400(raw):
    parse(raw)


@PARAMS
@given(odd_text)
def test_odd_unicode_prompt_runs_or_names_the_prompt(text):
    got = parse({"model": MODEL, "prompt": text})
    if lone_surrogate(text) is None:
        assert isinstance(got, CompletionRequest) and got.prompts() == [text]
    else:
        assert isinstance(got, ApiError) and got.param == "prompt"


@pytest.mark.parametrize("body,param", [
    ({"prompt": "\ud800"}, "prompt"),
    ({"prompt": ["ok", "a\udfffb"]}, "prompt.1"),
    ({"prompt": "x", "stop": ["\udc00"]}, "stop.0"),
    ({"prompt": "x", "max_tokens": "3"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**30}, "max_tokens"),
    ({"prompt": "x", "temperature": float("nan")}, None),  # parses; SamplingParams refuses it (test_openai_api)
    ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "top_k": 2**40}, "top_k"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, None),  # parses; the engine refuses the empty prompt
    ({"prompt": ["a", [1, 2]]}, "prompt"),  # strings and token ids in one list: not one of OpenAI's forms
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 10**6}, "n"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "logit_bias": {"5": 10}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {}}, None),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "suffix": "tail"}, "suffix"),
    ({"prompt": "x", "frobnicate": 1}, "frobnicate"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options"),
    ({"prompt": "x", "user": "someone"}, None),
])
def test_completion_bodies(body, param):
    got = parse({"model": MODEL, **body})
    if param is None:
        assert isinstance(got, CompletionRequest), got
    else:
        assert isinstance(got, ApiError) and got.param == param, getattr(got, "message", got)


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages.0.extra"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
     "response_format"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}}, None),
])
def test_chat_bodies(body, param):
    got = parse({"model": MODEL, **body}, ChatRequest)
    if param is None:
        assert isinstance(got, ChatRequest), got
    else:
        assert isinstance(got, ApiError) and got.param == param, getattr(got, "message", got)


def test_non_text_content_parts_are_named():
    request = parse({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}, ChatRequest)
    with pytest.raises(ApiError) as err:
        request.messages[0].text(0)
    assert err.value.param == "messages.0.content.1"


def test_deep_nesting_and_huge_integers_are_400s():
    assert isinstance(parse(b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), ApiError)
    assert isinstance(parse(b'{"model": "m", "prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}"), ApiError)
