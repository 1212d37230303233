"""The performance model: one decode step of a deployment, from FLOPs, bytes and transport costs (a roofline).

Every kernel takes max(FLOPs / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency)).

Layouts
- `groups` (Switchyard): router replicas hold attention, the KV cache, gates, shared experts and dense layers;
  each expert group is its own deployment of `group_replicas` replicas, a replica spanning
  `gpus_per_group_replica` devices. Per MoE layer a router's micro-batch goes out to the groups and back:
      [attention on the router] -> [dispatch: transport] -> [experts on the busiest group] -> [combine]
  With m micro-batches (ping-pong) one's attention overlaps another's trip, so a layer takes
      max(attention + trip + experts          (one micro-batch's own chain),
          m x attention                       (the router is busy),
          m x routers/replicas x experts      (a group replica serves every router's calls, one at a time),
          m x bytes on the router's link)
- `expert-parallel` (SGLang, DeepSeek, vLLM wide-EP): every device runs attention for its own batch (data
  parallel) and holds (experts + redundant) / devices experts; dispatch and combine are all-to-all (DeepEP):
      max(m x (attention + experts), m x bytes on the link, attention + experts + trip)
- `single`: one process holds everything (this machine's one-process engine); no dispatch.

Imbalance: the busiest group (or device) gets `imbalance` x its fair share of (token, expert) pairs; the step
waits for it. Distinct experts hit: with a assignments over n experts, n·(1 - (1 - 1/n)^a) are read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape

Layout = Literal["groups", "expert-parallel", "single"]
MEMORY_FRACTION = 0.9  # of a device's memory that weights and KV cache may use


@dataclass(frozen=True)
class Deployment:
    layout: Layout
    routers: int  # router replicas (expert-parallel: devices in the EP group)
    batch_per_router: int  # sequences decoding together on one router (or EP device)
    context_tokens: int  # mean KV length of a sequence while it decodes
    transport: str = "rdma"
    num_groups: int = 1
    group_replicas: int = 1  # replicas of every group
    gpus_per_group_replica: int = 1
    gpus_per_router: int = 1
    micro_batches: int = 1
    fan_out: float = 1.0  # mean groups a token is sent to per layer
    imbalance: float = 1.0  # busiest group's (or device's) load over the mean
    redundant_experts: int = 0  # expert-parallel: extra expert slots (EPLB)
    # groups: a group replica merges the calls of the routers it serves in one layer into one expert pass (one
    # weight read for all of them). Switchyard's groups serve each call on its own today (False).
    coalesce_calls: bool = False

    def __post_init__(self) -> None:
        if min(self.routers, self.batch_per_router, self.num_groups, self.group_replicas,
               self.gpus_per_group_replica, self.gpus_per_router, self.micro_batches) < 1:
            raise ValueError(f"every count of a deployment must be >= 1: {self}")
        if self.imbalance < 1.0 or self.fan_out <= 0:
            raise ValueError(f"imbalance must be >= 1 and fan_out > 0: {self}")

    @property
    def devices(self) -> int:
        if self.layout == "groups":
            return self.routers * self.gpus_per_router + self.num_groups * self.group_replicas * self.gpus_per_group_replica
        return self.routers * self.gpus_per_router


@dataclass(frozen=True)
class StepBreakdown:
    """One decode step, in seconds. The parts are each stage's own time summed over layers; the step is shorter
    than their sum by what micro-batch overlap hides (`overlap_hidden_s`)."""

    attention_s: float  # router (or EP device) work: attention, KV reads, shared experts, gates
    experts_s: float  # routed experts at a fair share of the load
    imbalance_s: float  # extra expert time on the busiest group
    dispatch_s: float  # transport: fixed latency and bytes, out and back
    dense_s: float  # dense layers and the LM head
    overhead_s: float  # per-layer launches and per-step host work
    overlap_hidden_s: float
    step_s: float
    tokens_per_s: float
    devices: int

    def to_json(self) -> dict:
        return asdict(self)


def distinct_experts(assignments: float, experts: float) -> float:
    """Expected distinct experts among `experts` hit by `assignments` uniform picks."""
    if experts <= 0 or assignments <= 0:
        return 0.0
    if experts <= 1:  # a device holding one expert (or a share of one) reads it whole
        return float(experts)
    return experts * (1.0 - (1.0 - 1.0 / experts) ** assignments)


def kernel_s(hw: HardwareProfile, flops_8bit: float, flops_16bit: float, bytes_read: float, devices: int = 1) -> float:
    compute = (flops_8bit / hw.peak_flops_8bit + flops_16bit / hw.peak_flops_16bit) / hw.compute_efficiency
    memory = bytes_read / (hw.memory_bandwidth_bytes_per_s * hw.memory_efficiency)
    return max(compute, memory) / devices


def _split_flops(m: ModelShape, flops: float) -> tuple[float, float]:
    """Weight matmul FLOPs run on the 8-bit units when the weights are 8-bit."""
    return (flops, 0.0) if m.weight_bytes <= 1.0 else (0.0, flops)


def attention_s(m: ModelShape, hw: HardwareProfile, tokens: float, context: float, devices: int = 1,
                with_shared: bool = True) -> float:
    """Attention (+ shared experts and gate) of one MoE layer for `tokens` decoding tokens."""
    params = m.attention_params + (m.shared_expert_params + m.gate_params if with_shared else 0)
    f8, f16 = _split_flops(m, 2.0 * tokens * params)
    f16 += tokens * context * m.attention_flops_per_position
    kv = tokens * context * m.kv_elements_per_token * m.kv_bytes
    return kernel_s(hw, f8, f16, params * m.weight_bytes + kv, devices)


def experts_s(m: ModelShape, hw: HardwareProfile, assignments: float, experts_held: float, devices: int = 1) -> float:
    """Routed experts of one layer: `assignments` (token, expert) pairs over `experts_held` experts."""
    f8, f16 = _split_flops(m, 2.0 * assignments * m.expert_params)
    hit = distinct_experts(assignments, experts_held)
    return kernel_s(hw, f8, f16, hit * m.expert_params * m.weight_bytes, devices) + hw.expert_overhead_s * hit / devices


def dense_and_head_s(m: ModelShape, hw: HardwareProfile, tokens: float, context: float, devices: int = 1) -> float:
    dense = attention_s(m, hw, tokens, context, devices, with_shared=False)
    f8, f16 = _split_flops(m, 2.0 * tokens * m.dense_mlp_params)
    dense += kernel_s(hw, f8, f16, m.dense_mlp_params * m.weight_bytes, devices)
    head = kernel_s(hw, 0.0, 2.0 * tokens * m.lm_head_params, m.lm_head_params * 2.0, devices)  # head kept 16-bit
    return m.num_dense_layers * dense + head


def router_side_s(m: ModelShape, hw: HardwareProfile, d: Deployment) -> tuple[float, float, float]:
    """A router's part of one MoE layer for one micro-batch (groups layout): its attention, its trip to the groups
    and back (fixed latency and bytes), and the bytes' time alone on its link."""
    b = d.batch_per_router / d.micro_batches
    link = hw.transport(d.transport)
    att = attention_s(m, hw, b, d.context_tokens, d.gpus_per_router)
    wire = b * d.fan_out * m.hidden_size * m.activation_bytes  # each way
    bytes_s = 2.0 * wire / (link.bandwidth_bytes_per_s * hw.network_efficiency)
    return att, link.latency_s + bytes_s, bytes_s


def group_pass_s(m: ModelShape, hw: HardwareProfile, d: Deployment, assignments: float, replicas: int,
                 gpus: int) -> tuple[float, float]:
    """One expert group's work in one MoE layer, on its own hardware (`hw`, `gpus` a replica, `replicas` sharing
    the routers' calls): `assignments` (token, expert) pairs from one router's micro-batch. Returns (the pass a
    micro-batch's chain waits for, one replica's busy time over every call and micro-batch of the layer)."""
    per_group = m.num_experts / d.num_groups
    calls = d.routers / replicas
    if d.coalesce_calls:  # one pass over every router's micro-batch: the chain waits for the merged pass
        one = experts_s(m, hw, assignments * calls, per_group, gpus)
        return one, d.micro_batches * one
    one = experts_s(m, hw, assignments, per_group, gpus)
    return one, d.micro_batches * calls * one


def groups_layer_s(d: Deployment, att: float, trip: float, bytes_s: float, chain: float, busy: float) -> float:
    """A MoE layer of the groups layout: one micro-batch's own chain, or the busiest shared resource (router,
    group replica, link), whichever is longest. `chain` and `busy` are the slowest group's."""
    mb = d.micro_batches
    return max(att + trip + chain, mb * att, busy, mb * bytes_s)


def overhead_s(m: ModelShape, hw: HardwareProfile, d: Deployment) -> float:
    """Launches and synchronisation per layer and micro-batch, and the host's work per step and per sequence."""
    return (m.num_layers * hw.layer_overhead_s * d.micro_batches + hw.step_overhead_s
            + hw.sequence_overhead_s * d.batch_per_router)


def outside_moe_s(m: ModelShape, hw: HardwareProfile, d: Deployment) -> float:
    """What a step spends outside its MoE layers: dense layers, the LM head, launches and host work."""
    return dense_and_head_s(m, hw, d.batch_per_router, d.context_tokens, d.gpus_per_router) + overhead_s(m, hw, d)


def core_sharing(hw: HardwareProfile, d: Deployment) -> float:
    """How much longer every computation takes when the groups layout's processes share one host's CPU cores
    (`shared_cores`, this machine's profile; 1 elsewhere). Each process is busy all the time, computing or
    spinning on its channel (a Compiled Graph reader spins while it waits), so each gets cores / processes of
    a core. The transport's round trip is measured with them all running and is not stretched again."""
    if not hw.shared_cores or d.layout != "groups":
        return 1.0
    return max(1.0, (d.routers + d.num_groups * d.group_replicas) / hw.shared_cores)


def decode_step(m: ModelShape, hw: HardwareProfile, d: Deployment) -> StepBreakdown:
    mb = d.micro_batches
    b = d.batch_per_router / mb  # tokens of one micro-batch
    ctx = d.context_tokens
    stretch = core_sharing(hw, d)
    overhead = stretch * overhead_s(m, hw, d)
    if d.layout == "single":
        att = attention_s(m, hw, b, ctx, d.gpus_per_router)
        exp = experts_s(m, hw, b * m.top_k, m.num_experts, d.gpus_per_router)
        layer, parts = att + exp, (att, exp, 0.0, 0.0)
    elif d.layout == "groups":
        att, trip, bytes_s = router_side_s(m, hw, d)
        fair = b * m.top_k / d.num_groups
        exp_fair, _ = group_pass_s(m, hw, d, fair, d.group_replicas, d.gpus_per_group_replica)
        exp, busy = group_pass_s(m, hw, d, fair * d.imbalance, d.group_replicas, d.gpus_per_group_replica)
        att, exp_fair, exp, busy = (stretch * x for x in (att, exp_fair, exp, busy))
        layer = groups_layer_s(d, att, trip, bytes_s, exp, busy)
        parts = (att, exp_fair, exp - exp_fair, trip)
    elif d.layout == "expert-parallel":
        link = hw.transport(d.transport)
        att = attention_s(m, hw, b, ctx, d.gpus_per_router)
        held = (m.num_experts + d.redundant_experts) / d.routers
        exp_fair = experts_s(m, hw, b * m.top_k, held, d.gpus_per_router)
        exp = experts_s(m, hw, b * m.top_k * d.imbalance, held, d.gpus_per_router)
        targets = min(m.top_k, d.routers)  # DeepEP sends a token once per destination device
        dispatch_bytes = 1.0 if m.weight_bytes <= 1.0 else m.activation_bytes  # fp8 dispatch with fp8 experts
        wire = b * targets * m.hidden_size * (dispatch_bytes + m.activation_bytes) * d.imbalance
        bytes_s = wire / (link.bandwidth_bytes_per_s * hw.network_efficiency)
        trip = link.latency_s + bytes_s
        layer = max(mb * (att + exp), mb * bytes_s, att + exp + trip)
        parts = (att, exp_fair, exp - exp_fair, trip)
    else:
        raise ValueError(f"unknown layout {d.layout!r}")
    moe = m.num_moe_layers
    dense = stretch * dense_and_head_s(m, hw, d.batch_per_router, ctx, d.gpus_per_router)
    step = moe * layer + dense + overhead
    att, exp_fair, extra, trip = (moe * mb * p for p in parts)
    hidden = max(0.0, att + exp_fair + extra + trip + dense + overhead - step)
    return StepBreakdown(att, exp_fair, extra, trip, dense, overhead, hidden, step,
                         d.routers * d.batch_per_router / step, d.devices)


def prefill_s(m: ModelShape, hw: HardwareProfile, d: Deployment, prompt_tokens: int) -> float:
    """Time to first token of one prompt with the deployment otherwise idle: the prompt's layers on its router
    (compute bound: all tokens at once), its experts spread over the groups (or EP devices), one trip a layer."""
    p = float(prompt_tokens)
    att = attention_s(m, hw, p, p / 2.0, d.gpus_per_router)  # causal: half the prompt on average
    if d.layout == "single":
        exp, trip = experts_s(m, hw, p * m.top_k, m.num_experts, d.gpus_per_router), 0.0
    else:
        link = hw.transport(d.transport)
        spread = d.num_groups * d.gpus_per_group_replica if d.layout == "groups" else d.routers
        held = m.num_experts / max(1, spread)
        exp = experts_s(m, hw, p * m.top_k * d.imbalance / spread, held)
        fan = d.fan_out if d.layout == "groups" else min(m.top_k, d.routers)
        trip = link.call_seconds(p * fan * m.hidden_size * m.activation_bytes, hw.network_efficiency)
    dense = dense_and_head_s(m, hw, p, p / 2.0, d.gpus_per_router)
    host = m.num_layers * hw.layer_overhead_s + hw.step_overhead_s + hw.sequence_overhead_s  # one sequence
    stretch = core_sharing(hw, d)  # the round trip was measured with the processes sharing the cores already
    return m.num_moe_layers * (stretch * (att + exp) + trip) + stretch * (dense + host)


def memory_fits(m: ModelShape, hw: HardwareProfile, d: Deployment) -> bool:
    """Weights and the KV cache of the batch at its mean context fit the devices that hold them."""
    budget = MEMORY_FRACTION * hw.memory_bytes
    kv = d.batch_per_router * d.context_tokens * m.kv_bytes_per_token()
    if d.layout == "groups":
        group_bytes = m.expert_bytes_all_layers / d.num_groups
        return (m.dense_bytes + kv <= budget * d.gpus_per_router
                and group_bytes <= budget * d.gpus_per_group_replica)
    per_device = m.expert_bytes_all_layers * (1 + d.redundant_experts / m.num_experts) / d.routers
    if d.layout == "single":
        per_device = m.expert_bytes_all_layers
    return m.dense_bytes + per_device + kv <= budget * d.gpus_per_router


def gpus_per_group_replica(m: ModelShape, hw: HardwareProfile, num_groups: int) -> int:
    return max(1, math.ceil(m.expert_bytes_all_layers / num_groups / (MEMORY_FRACTION * hw.memory_bytes)))


def cost_per_million(tokens_per_s: float, devices: int, price_per_hour: float) -> float:
    from switchyard.cluster.autoscaling.cost import cost_per_million_tokens

    value = cost_per_million_tokens(devices * price_per_hour, tokens_per_s)
    return math.inf if value is None else value
