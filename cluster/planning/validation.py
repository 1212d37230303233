"""`switchyard plan --validate`: the performance model against published systems (and this machine).

Each published row is configured as the system ran (plain expert parallelism: every GPU runs attention for its
own batch and holds its share of the experts, DeepEP low-latency all-to-all over 400 Gb/s InfiniBand, two
micro-batches overlapped, EPLB's redundant experts), and the model predicts its per-GPU decode throughput. The
model's constants are the hardware profiles' (the same for every row); nothing here is fitted per row. Imbalance
after EPLB is taken as 1.2 for every row (an assumption: none of the sources states it for its run).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.performance import Deployment, decode_step

EPLB_IMBALANCE = 1.2
PUBLISHED_TOLERANCE = 0.30


@dataclass(frozen=True)
class PublishedRow:
    system: str
    hardware: str
    ep_size: int
    batch_per_gpu: int
    context_tokens: int
    redundant_experts: int
    published_tokens_per_gpu_s: float
    source: str
    notes: str


PUBLISHED = [
    PublishedRow(
        "SGLang, 96 H100 (decode on 9 nodes, EP72)", "H100", 72, 256, 2050, 32, 22_300 / 8,
        "https://lmsys.org/blog/2025-05-05-large-scale-ep/ (22.3k output tok/s per node at 2,000-token inputs); "
        "decode flags from the post's reproduction instructions "
        "(--tp-size 72 --dp-size 72, --max-running-requests 18432 = 256 per GPU, --cuda-graph-bs 256, "
        "--ep-num-redundant-experts 32, two-batch overlap, DeepEP low_latency)",
        "2,000 input and 100 output tokens: mean context about 2,050"),
    PublishedRow(
        "DeepSeek's online service (decode, EP144, H800)", "H800", 144, 88, 4989, 32, 14_800 / 8,
        "https://gh.072103.xyz/deepseek-ai/open-infra-index/blob/main/202502OpenSourceWeek/"
        "day_6_one_more_thing_deepseekV3R1_inference_system_overview.md (14.8k output tok/s per H800 node, "
        "decode EP144 with 32 redundant experts, mean KV length 4,989, 20-22 output tok/s per user)",
        "batch per GPU not stated: 88 = 1,850 tok/s per GPU x 1/21 s per token (the per-user speed); a day's "
        "average with multi-token prediction, which the model does not have"),
    PublishedRow(
        "vLLM wide-EP (H200, CoreWeave, InfiniBand CX-7)", "H200", 16, 256, 2050, 16, 2_200,
        "https://blog.vllm.ai/2025/12/17/large-scale-serving.html (2.2k tok/s per H200, CoreWeave, InfiniBand CX-7)",
        "EP size, batch and context not stated in the post: EP16, 256 per GPU and 2K context assumed"),
]


def predict(row: PublishedRow) -> float:
    shape = load_shape(reference_model("deepseek-v3"))
    d = Deployment("expert-parallel", row.ep_size, row.batch_per_gpu, row.context_tokens, "rdma", micro_batches=2,
                   imbalance=EPLB_IMBALANCE, redundant_experts=row.redundant_experts)
    return decode_step(shape, BUILTIN_PROFILES[row.hardware], d).tokens_per_s / row.ep_size


def published_rows() -> list[dict]:
    out = []
    for row in PUBLISHED:
        predicted = predict(row)
        error = predicted / row.published_tokens_per_gpu_s - 1.0
        out.append({"row": row.system, "measured": row.published_tokens_per_gpu_s, "predicted": predicted,
                    "unit": "output tok/s per GPU", "error": error, "tolerance": PUBLISHED_TOLERANCE,
                    "ok": abs(error) <= PUBLISHED_TOLERANCE, "source": row.source, "notes": row.notes})
    return out


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'row':58} {'measured':>10} {'predicted':>10} {'error':>7}  ok"]
    for r in rows:
        lines.append(f"{r['row'][:58]:58} {r['measured']:>10,.1f} {r['predicted']:>10,.1f} {r['error']:>+7.0%}  "
                     f"{'yes' if r['ok'] else 'NO'}  ({r['unit']}, tolerance {r['tolerance']:.0%})")
    return "\n".join(lines)
