"""The `switchyard` command line without Ray: --version, and what `serve` prints once ready."""

import argparse
from importlib import metadata

import pytest

from switchyard.cluster import cli
from switchyard.cluster.cli.serve import app_args, describe_dashboard, ready_message
from switchyard.configs.serve import AppConfig


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"switchyard {metadata.version('switchyard')}"


def serve_args(*argv) -> argparse.Namespace:
    return cli.build_parser().parse_args(["serve", *argv])


def lines_of(message: str) -> dict[str, str]:
    return {line.split()[0]: line.split(None, 1)[1] for line in message.splitlines()[1:]}


def test_serve_ready_message_one_process():
    args = serve_args("--port", "8123")
    message = ready_message(AppConfig.model_validate(app_args(args)), args, {"temperature": 0.8, "top_k": 40})
    first = message.splitlines()[0]
    assert "`demo-model`" in first and "http://127.0.0.1:8123/v1" in first
    fields = lines_of(message)
    assert fields["model"].endswith("demo-model")
    assert fields["experts"].startswith("one process") and fields["transport"].startswith("none")
    assert fields["device"] == "cpu, float32, expert kernel torch"
    assert fields["ingress"].startswith("direct")
    assert fields["sampling"] == "generation_config.json: temperature 0.8, top_k 40"


def test_serve_ready_message_expert_groups():
    args = serve_args("--groups", "2", "--transport", "actor", "--ingress", "proxy", "--served-model-name", "m")
    fields = lines_of(ready_message(AppConfig.model_validate(app_args(args)), args, {}))
    assert fields["experts"] == "2 expert groups, placement contiguous"
    assert fields["transport"] == "direct actor calls"
    assert fields["ingress"] == "through Serve's HTTP proxy"
    assert fields["sampling"].startswith("OpenAI's defaults")


def test_serve_ready_message_says_where_rays_dashboard_is_only_when_started():
    plain = serve_args()
    assert "dashboard" not in lines_of(ready_message(AppConfig.model_validate(app_args(plain)), plain, {}))
    args = serve_args("--dashboard", "--dashboard-host", "0.0.0.0", "--dashboard-port", "9265")
    config = AppConfig.model_validate(app_args(args))
    with_token = lines_of(ready_message(config, args, {}, dashboard=describe_dashboard(args, token_auth=True)))
    assert with_token["dashboard"].startswith("http://0.0.0.0:9265 ") and "ray get-auth-token" in with_token["dashboard"]
    open_one = lines_of(ready_message(config, args, {}, dashboard=describe_dashboard(args, token_auth=False)))
    assert open_one["dashboard"] == "http://0.0.0.0:9265"
    assert (plain.dashboard, plain.dashboard_host, plain.dashboard_port) == (False, "127.0.0.1", 8265)


def test_generate_on_a_gpu_that_is_not_there_fails_in_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["generate", "--device", "cuda", "--max-tokens", "2", "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device 'cuda'" in err and "--device cpu" in err


def test_serve_ready_message_names_devices_and_the_kv_cache():
    args = serve_args("--groups", "2", "--device", "cuda", "--expert-device", "cpu", "--kv-cache-memory", "1GiB")
    raw = app_args(args)
    raw["router_pool"] = {"num_gpus": 1}
    fields = lines_of(ready_message(AppConfig.model_validate(raw), args, {}))
    assert fields["device"] == "router cuda, expert groups cpu, bfloat16, expert kernel torch"
    assert fields["kv-cache"] == "1.00 GiB (router.kv_cache_memory), in blocks of 16 tokens"
