"""`switchyard bench faults`: each fault on each transport, under load and idle; what the clients saw and how
long serving took to resume.

On a local Ray, one app per transport (2 expert groups of one replica each, the built-in model by default),
deployed once and reused across its faults; each run waits until the app serves right again before the next
fault. The runs themselves are cluster/bench/fault_runs.py's (the fault tests, tests/test_faults.py, run the
same). Prints the table docs/operations.md shows: fault x transport x when -> requests completed (the
single-process engine's greedy text), failed with a 503 and Retry-After, cut (a stream whose router process
died), hung, wrong or other; the time from the fault until a new request came back right.
"""

from __future__ import annotations

from switchyard.cluster.bench.fault_runs import FAULTS, HEADERS, reference_texts, run_fault, wait_until_serving
from switchyard.cluster.bench.table import format_table
from switchyard.configs.serve import TRANSPORTS
MODEL = "bench"


def app_config(model, transport: str, streams: int) -> dict:
    return {"model": str(model), "served_model_name": MODEL, "name": f"bench-faults-{transport}", "num_groups": 2,
            "router": {"transport": transport, "max_num_seqs": streams, "max_model_len": 256,
                       "max_waiting_requests": 2 * streams, "expert_timeout_s": 20},
            "router_pool": {"num_cpus": 0.5, "torch_threads": 1, "max_ongoing_requests": 4 * streams},
            "expert_pool": {"num_cpus": 0.25, "torch_threads": 1}}


def run(model, transports, faults, modes, streams: int, max_tokens: int, log) -> list:
    import ray
    from ray import serve

    from switchyard.cluster.app import build_app
    from switchyard.cluster.cli.serve import free_port

    log("greedy reference on a single-process engine ...")
    want = reference_texts(model, streams, max_tokens)
    port = free_port("127.0.0.1")
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    runs = []
    try:
        for transport in transports:
            config = app_config(model, transport, streams)
            name = config["name"]
            log(f"deploying {name} ...")
            serve.run(build_app(config), name=name, route_prefix=f"/{name}")
            url = f"http://127.0.0.1:{port}/{name}"
            for fault in faults:
                for mode in modes:
                    if not wait_until_serving(url, MODEL, want, max_tokens):
                        raise RuntimeError(f"{name} did not serve again after the last fault")
                    log(f"{fault}, {transport}, {mode} ...")
                    runs.append(run_fault(fault, transport, mode, url, MODEL, want, name, f"{name}-experts-1",
                                          streams=streams, max_tokens=max_tokens))
                    log(f"  {runs[-1].ends}, recovered in {runs[-1].recover_s} s")
            serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()
    return runs


def register(benchmarks) -> None:
    """Add `switchyard bench faults` to the `bench` subparsers."""
    p = benchmarks.add_parser("faults", help="replica deaths and engine failures on every transport: what clients "
                                             "see, and the time to recover",
                              description="Deploy 2 expert groups on a local Ray per transport, then for each fault "
                                          "(SIGKILL of an expert-group replica, SIGKILL of the router replica, an "
                                          "exception on the engine thread), under streaming load and idle: "
                                          "requests completed right, failed with a 503, cut, hung; seconds until a "
                                          "new request came back right.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=TRANSPORTS)
    p.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    p.add_argument("--modes", nargs="+", default=["load", "idle"], choices=["load", "idle"])
    p.add_argument("--streams", type=int, default=32, help="streaming requests in flight at the fault (load)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    print(f"model: {model}; 2 expert groups of 1 replica; {args.streams} streams of {args.max_tokens} greedy tokens "
          f"under load; idle: 4 s without a request")
    runs = run(model, args.transports, args.faults, args.modes, args.streams, args.max_tokens, log_to_stderr)
    print(format_table(HEADERS, [r.row() for r in runs]))
    bad = [r for r in runs if r.ends["hung"] or r.ends["wrong"] or r.recover_s is None]
    return 1 if bad else 0
