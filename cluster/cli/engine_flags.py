"""The engine's flags, shared by `generate`, `trace` and `bench`: named as `vllm serve` names them where they
mean the same thing (--device, --dtype, --max-model-len, --max-num-seqs, --block-size,
--gpu-memory-utilization; vLLM's --kv-cache-memory-bytes is --kv-cache-memory here and takes units)."""

from __future__ import annotations

import argparse

from switchyard.configs.engine import AdaptiveRouting, EngineConfig, parse_bytes


def engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="Hugging Face model folder (default: the built-in demo model)")
    device_flags(parser, defaults=True)
    parser.add_argument("--max-model-len", type=int, default=1024, help="prompt + output tokens per sequence")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="sequences decoded together")
    parser.add_argument("--adaptive-routing", default=None, choices=["threshold", "cumulative"],
                        help="token-adaptive routing: per token, drop the experts whose share of its gate weight is "
                             "below --adaptive-routing-value (threshold), or keep the fewest whose shares add up to it "
                             "(cumulative); default: off, every token uses all top-k experts")
    parser.add_argument("--adaptive-routing-value", type=float, default=None, metavar="X",
                        help="the share threshold, or the cumulative p, in (0, 1]")
    parser.add_argument("--adaptive-min-experts", type=int, default=1, metavar="N",
                        help="with --adaptive-routing, experts kept per token at least (default 1)")
    expert_kernel_flag(parser)


def device_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--device, --dtype and the KV cache's memory. `defaults`: the engine's own; else None (= the config's)."""
    parser.add_argument("--device", default="cpu" if defaults else None,
                        help="where the dense model, KV cache and sampling run: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="auto" if defaults else None,
                        choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--block-size", type=int, default=16 if defaults else None,
                        help="tokens per KV-cache block (default 16)")
    parser.add_argument("--kv-cache-memory", default=None, metavar="SIZE",
                        help="memory of the KV cache, e.g. 4GiB or 2e9 bytes; default: room for --max-num-seqs "
                             "sequences of --max-model-len (or, on a GPU, --gpu-memory-utilization)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="FRACTION",
                        help="on a GPU: size the KV cache so the device's whole use stays under this share of its "
                             "memory once the weights are loaded (as vLLM's flag)")


def expert_kernel_flag(parser: argparse.ArgumentParser, **kwargs) -> None:
    options = dict(default="torch", help="what computes the routed experts: torch, or vLLM's fused-MoE op "
                                         "(needs vLLM; README: vLLM kernel (optional))")
    parser.add_argument("--expert-kernel", choices=["torch", "vllm"], **(options | kwargs))


def engine_config(args: argparse.Namespace, **overrides) -> EngineConfig:
    """The EngineConfig of `engine_flags`; raises ConfigError naming the bad field."""
    adaptive = None
    if getattr(args, "adaptive_routing", None):
        adaptive = AdaptiveRouting(args.adaptive_routing, args.adaptive_routing_value, args.adaptive_min_experts)
    fields = dict(max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len, device=args.device,
                  dtype=args.dtype, block_size=args.block_size, kv_cache_memory=parse_bytes(args.kv_cache_memory),
                  gpu_memory_utilization=args.gpu_memory_utilization, adaptive_routing=adaptive,
                  expert_kernel=args.expert_kernel)
    return EngineConfig(**(fields | overrides))
