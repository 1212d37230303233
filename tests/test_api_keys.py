"""API keys: every /v1/ route needs `Authorization: Bearer KEY` once keys are set; /health stays open; keys
come from the config, the CLI and SWITCHYARD_API_KEY, and are never shown."""

import asyncio
import types

import httpx
import pytest

from switchyard.cluster.api.keys import key_accepted, keys_from_env, resolve_api_keys
from switchyard.cluster.cli import build_parser
from switchyard.cluster.cli.serve import app_args
from switchyard.cluster.api.openai_routes import build_openai_app
from switchyard.configs.serve import AppConfig
from served_app import served_app

MODEL = "tiny"


@pytest.fixture(scope="module")
def app(checkpoints):
    with served_app(checkpoints["qwen3_moe"], MODEL, max_num_seqs=2, max_model_len=64) as app:
        app.state.api_keys = ("key-one", "key-two")
        yield app


def call(app, method: str, path: str, key: str | None = None, **kwargs):
    async def go():
        headers = {} if key is None else {"Authorization": key}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            return await http.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


COMPLETION = {"model": MODEL, "prompt": "The", "max_tokens": 2}


@pytest.mark.parametrize("key", [None, "Bearer wrong", "key-one", "Bearer ", "Basic key-one", "Bearer key-one2"])
def test_missing_or_wrong_keys_get_401_on_every_v1_route(app, key):
    for method, path, body in [("POST", "/v1/completions", COMPLETION), ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {}), ("GET", "/v1/anything", None)]:
        r = call(app, method, path, key, json=body)
        assert r.status_code == 401, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and set(error) == {"message", "type", "param", "code"}
        assert "key-one" not in r.text


def test_right_keys_pass_and_health_stays_open(app):
    for key in ("Bearer key-one", "Bearer key-two"):
        r = call(app, "POST", "/v1/completions", key, json=COMPLETION)
        assert r.status_code == 200, r.text
        streamed = call(app, "POST", "/v1/completions", key, json={**COMPLETION, "stream": True})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert call(app, "GET", "/health").status_code == 200


def test_no_keys_no_check(checkpoints):
    app = build_openai_app()
    assert call(app, "GET", "/v1/models").status_code == 503  # reached the route: no model yet, but no 401


def test_keys_from_config_cli_and_environment():
    assert keys_from_env({"SWITCHYARD_API_KEY": " a, b ,,"}) == ["a", "b"]
    assert resolve_api_keys(["c", "a"], {"SWITCHYARD_API_KEY": "a,b"}) == ("c", "a", "b")
    assert resolve_api_keys([], {}) == ()
    assert key_accepted("Bearer b", ("a", "b")) and not key_accepted("Bearer c", ("a", "b"))
    args = build_parser().parse_args(["serve", "--api-key", "k1", "--api-key", "k2"])
    config = AppConfig.model_validate(app_args(args))
    assert [k.get_secret_value() for k in config.api_keys] == ["k1", "k2"]
    shown = f"{config!r} {config} {config.model_dump_json()}"
    assert "k1" not in shown and "k2" not in shown


@pytest.mark.parametrize("bad", ["", "two words", "a,b"])
def test_bad_keys_are_refused_at_start_without_showing_them(bad):
    with pytest.raises(ValueError) as err:
        AppConfig(model="m", api_keys=[bad])
    assert "api_keys[0]" in str(err.value)
    assert bad == "" or bad not in str(err.value).split("input_value")[0]


def test_app_args_without_the_flag():
    args = types.SimpleNamespace(config=None, model=None, groups=None, placement=None, served_model_name=None,
                                 expert_kernel=None, torch_threads=None, transport=None, max_model_len=None,
                                 max_num_seqs=None)
    assert "api_keys" not in app_args(args)
