"""The pools of replicas an app runs: the router's, every expert group's (`expert_pool`), and groups on a node
type of their own (`expert_pools`), each with its resources, nodes, autoscaling and price. Typed and validated;
no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchyard.configs.node_placement import NodePlacement


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Autoscaling(Strict):
    """Ray Serve autoscaling of one pool (see `ray.serve.config.AutoscalingConfig`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self

    def to_serve(self) -> dict:
        out = self.model_dump(exclude_none=True)
        return out


class ExpertAutoscaling(Autoscaling):
    """Autoscaling of each expert group on what its replicas really compute (busy share, rows/s), by the policy
    in `cluster/autoscaling/policy.py`: the router's per-layer calls bypass Serve's request counts, so
    `target_ongoing_requests` would do nothing here and is refused. Defaults react in seconds on a local Ray;
    the Helm chart's values are a GPU cluster's."""

    min_replicas: int = Field(1, ge=1, description="an expert group with no replica cannot serve a token")
    max_replicas: int = Field(3, ge=1)
    target_ongoing_requests: None = Field(None, description="not used by expert groups: see target_utilization")
    target_utilization: float = Field(0.6, gt=0, le=1, description="busy share of each replica's time to aim for")
    hysteresis: float = Field(0.2, ge=0, lt=1, description="remove a replica only when the rest would stay this "
                                                           "share below target_utilization (no flapping)")
    capacity_rows_per_s: float | None = Field(
        None, gt=0, description="token rows per second one replica computes when never idle (`switchyard bench "
                                "autoscale` measures it); default: measured live as rows per busy second")
    max_cost_per_hour: float | None = Field(
        None, gt=0, description="dollars per hour of every replica together (router and expert groups, at "
                                "`prices`): caps how far the groups scale")
    forecast: bool = Field(
        False, description="also scale on the router's forecast of each group's load, from every running and "
                           "waiting request's routing (docs/operations.md: Forecast-led scaling)")
    replica_start_s: float = Field(
        0.0, ge=0, description="seconds a new replica takes to serve once Serve adds it (its experts loaded); with "
                               "`forecast`, the router looks its floor's trend ahead by upscale_delay_s plus this "
                               "plus forecast_lead_s (docs/operations.md: Forecast-led scaling)")
    forecast_lead_s: float = Field(
        0.0, ge=0, description="with `forecast`: seconds by which a replica asked for on the floor's trend should "
                               "serve before the load it was asked for (added to the look-ahead)")
    metrics_interval_s: float = Field(0.5, gt=0, description="how often each replica reports its load")
    look_back_period_s: float = Field(2.0, gt=0, description="window the load is averaged over")
    upscale_delay_s: float = Field(1.0, ge=0)
    downscale_delay_s: float = Field(6.0, ge=0)

    @property
    def forecast_horizon_s(self) -> float:
        """How far ahead the floor's trend is looked: a replica asked for now serves after Serve's upscale delay
        and its start, and should serve forecast_lead_s before the load; 0 with the forecast off."""
        if not self.forecast:
            return 0.0
        return self.upscale_delay_s + self.replica_start_s + self.forecast_lead_s

    @model_validator(mode="before")
    @classmethod
    def _no_request_target(cls, data):
        if isinstance(data, dict) and data.get("target_ongoing_requests") is not None:
            raise ValueError("target_ongoing_requests: expert groups scale on their busy share, not on Serve's "
                             "request count (their per-layer calls bypass it); use target_utilization (0..1)")
        return data

    @model_validator(mode="after")
    def _look_ahead_needs_the_forecast(self):
        for name in ("replica_start_s", "forecast_lead_s"):
            if getattr(self, name) and not self.forecast:
                raise ValueError(f"{name}: only the forecast's look-ahead uses it; set forecast: true, or leave it 0")
        return self

    @model_validator(mode="after")
    def _window(self):
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(f"look_back_period_s ({self.look_back_period_s}) must be greater than "
                             f"metrics_interval_s ({self.metrics_interval_s})")
        return self

    def to_serve(self) -> dict:
        """Serve's own fields; the policy and its arguments are added per group (`cluster/app.py`)."""
        return self.model_dump(include={"min_replicas", "max_replicas", "initial_replicas", "upscale_delay_s",
                                        "downscale_delay_s", "metrics_interval_s", "look_back_period_s"},
                               exclude_none=True)


class Pool(Strict):
    """Resources and replica count of one deployment (the router, or every expert group)."""

    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_bytes: int | None = Field(None, ge=0)
    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per replica (default: a "
                                      "router's one per core but one, left to its HTTP server; an expert group's "
                                      "one per core)")
    max_ongoing_requests: int = Field(64, ge=1)
    nodes: NodePlacement = Field(default_factory=NodePlacement,
                                 description="which nodes the replicas may run on (configs/node_placement.py)")

    def ray_actor_options(self, group: int | None = None) -> dict:
        options: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        return options | self.nodes.for_group(group).ray_actor_options()

    def deployment_options(self, group: int | None = None) -> dict:
        """Serve's options of the pool's deployment; `group`: the expert group's, `{group}` filled in."""
        options: dict = {"ray_actor_options": self.ray_actor_options(group),
                         "max_ongoing_requests": self.max_ongoing_requests, **self.nodes.deployment_options()}
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.to_serve()
        else:
            options["num_replicas"] = self.num_replicas
        return options


class ExpertPool(Pool):
    """The pool of every expert group: autoscaled on its replicas' own load (ExpertAutoscaling)."""

    autoscaling: ExpertAutoscaling | None = None


class GroupPool(ExpertPool):
    """Expert groups that run on a node type of their own (cold groups on cheaper hardware than hot ones): the
    settings that differ from `expert_pool`. A field left out is `expert_pool`'s; `nodes` and `autoscaling`, when
    given, replace the whole block. Groups named in no pool are `expert_pool`'s."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]*$", description="the pool's name (costs, metrics, the Helm "
                                                                         "worker group)")
    groups: list[int] = Field(..., min_length=1, description="indices of the expert groups in this pool")
    device: Literal["cpu", "cuda"] | None = Field(None, description="where this pool's groups run; unset: "
                                                                    "expert_device, else device")
    replica_per_hour: float | None = Field(None, ge=0, description="dollars per replica-hour of this pool; unset: "
                                                                   "prices.expert_replica_per_hour")

    def over(self, base: ExpertPool) -> ExpertPool:
        """`base` with this pool's own settings in place."""
        own = self.model_fields_set & set(ExpertPool.model_fields)
        return base.model_copy(update={name: getattr(self, name) for name in own})


@dataclass(frozen=True)
class ResolvedPool:
    """What one expert group runs with: its pool's name, settings, device and price."""

    name: str
    pool: ExpertPool
    device: str
    replica_per_hour: float


DEFAULT_POOL = "experts"  # the name of `expert_pool` where pools are listed
