"""An expert group as a Ray Serve deployment: each replica loads only its group's experts.

Two ways in:
- `forward` through a Serve deployment handle (Serve's router picks the replica);
- `call_group` run inside the replica's actor by `__ray_call__`, for the router's direct-call transport,
  which skips Serve's request path on the per-layer hot path.

Both count in the replica's `LoadMeter`, which `record_autoscaling_stats` reports to Serve's autoscaler
(`autoscaling_policy.py` decides from it). A replica that Serve stops leaves the registry first, then waits
for the router to stop calling it (its graph rebuilt without it) and for its calls in flight to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from contextlib import nullcontext

import ray
import torch
from ray import serve

from switchyard.cluster import tracing
from switchyard.cluster.load_meter import LoadMeter
from switchyard.cluster.registry import get_registry
from switchyard.cluster.telemetry import GroupTelemetry
from switchyard.configs.engine import resolve_dtype
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.group import ExpertGroup
from switchyard.experts.messages import ExpertRequest, ExpertResponse
from switchyard.router.devices import require_device

log = logging.getLogger(__name__)

# The group this process serves, for calls that arrive by `__ray_call__` rather than through Serve.
_SERVING: "ExpertGroupServer | None" = None

# Leaving, wait this long without a call before stopping: the router sees the registry change within its
# follower's refresh (1 s) and rebuilds its graph between steps.
DRAIN_QUIET_S = 2.0
DRAIN_TIMEOUT_S = 15.0  # below Serve's graceful_shutdown_timeout_s (20 s), after which it kills the replica


class ExpertGroupServer:
    """Plain class (no Ray): the deployment below only adds registration."""

    def __init__(self, model: str, assignment: dict[int, list[int]], dtype: str = "auto",
                 device: str = "cpu", torch_threads: int | None = None, kernel: str = "torch"):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = require_device(device)
        ckpt = Checkpoint.open(model)
        self.group = ExpertGroup.load(ckpt, {int(k): v for k, v in assignment.items()},
                                      resolve_dtype(dtype, device), kernel, self.device)
        self.tensors_read = list(ckpt.tensors_read)
        self.calls = 0
        self.load = LoadMeter()
        self.group_name, self.replica_id = "local", str(os.getpid())  # the deployment names them
        self.telemetry: GroupTelemetry | None = None  # with an OTLP metrics endpoint only

    def forward(self, request: ExpertRequest) -> ExpertResponse:
        if request.trace is None and self.telemetry is None:
            return self._metered_forward(request)
        start = time.perf_counter()
        span = tracing.group_span(request.trace, self.group_name, self.replica_id, request.layer,
                                  request.hidden.shape[0])
        with span or nullcontext():
            response = self._metered_forward(request)
        if self.telemetry is not None:
            self.telemetry.on_forward(request.layer, request.hidden.shape[0], time.perf_counter() - start)
        return response

    def _metered_forward(self, request: ExpertRequest) -> ExpertResponse:
        self.calls += 1
        with self.load.call(int(request.hidden.shape[0])):
            return self._forward(request)

    def _forward(self, request: ExpertRequest) -> ExpertResponse:
        with torch.inference_mode():
            if self.device.type == "cpu":
                return self.group.forward(request)
            # messages travel on the host; the rows go to the GPU once, and their results come back once
            request = ExpertRequest(request.layer, request.hidden.to(self.device, non_blocking=True),
                                    request.expert_ids.to(self.device, non_blocking=True),
                                    request.weights.to(self.device, non_blocking=True))
            response = self.group.forward(request)
            return ExpertResponse(response.layer, response.hidden.cpu())

    def info(self) -> dict:
        return {"held": {str(k): list(v) for k, v in self.group.held().items()},
                "tensors_read": self.tensors_read, "calls": self.calls, "pid": os.getpid()}


def call_group(_actor, request: ExpertRequest) -> ExpertResponse:
    """Runs inside an expert-group replica's actor (via `__ray_call__`)."""
    if _SERVING is None:
        raise RuntimeError("this actor serves no expert group")
    return _SERVING.forward(request)


@serve.deployment
class ExpertGroupDeployment(ExpertGroupServer):
    def __init__(self, app_name: str, group_name: str, model: str, assignment: dict[int, list[int]],
                 dtype: str = "auto", device: str = "cpu", torch_threads: int | None = None,
                 kernel: str = "torch", group_names: list[str] | None = None):
        super().__init__(model, assignment, dtype, device, torch_threads, kernel)
        tracing.configure("switchyard-experts")  # on when the replica's environment names an OTLP endpoint
        self.telemetry = GroupTelemetry.if_exported(app_name, group_name)
        # Serve ships this class by value (the module attribute is the Deployment, not the class), so a
        # `global` statement here would write to a copy; set the slot on the real module.
        import switchyard.cluster.expert_deployment as this_module

        this_module._SERVING = self
        self.group_name = group_name
        self.group_names = group_names or [group_name]  # every group of the app, for the cost budget
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.registry = get_registry(app_name)
        actor = ray.get_runtime_context().current_actor
        ray.get(self.registry.register.remote(group_name, self.replica_id, actor))

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """This replica's load (LoadMeter), the router's floor for the group, and every group's replica count
        (for the cost budget), as the policy reads them from `AutoscalingContext.aggregated_metrics`."""
        stats = self.load.sample()
        if stats["rows_per_s"] == 0 and stats["in_flight"] == 0:
            # idle: the router's floor for a group it sends nothing is 0, and the cost budget of an idle group
            # does not matter; skip the registry round trip, which Serve asks for every metrics_interval_s
            return stats
        try:
            floor, replicas = await asyncio.wait_for(self.registry.demand.remote(self.group_name, self.group_names),
                                                     timeout=2.0)
        except Exception:  # the registry is briefly unreachable: report the replica's own load alone
            return stats
        stats["floor_rows_per_s"] = floor
        stats.update({f"replicas_g{g}": float(n) for g, n in enumerate(replicas)})
        return stats

    async def __del__(self):
        """Serve stops this replica (scale-down): leave the registry, then drain the direct calls, which Serve's
        graceful shutdown does not see (it waits for handle requests only)."""
        try:
            await asyncio.wait_for(self.registry.unregister.remote(self.group_name, self.replica_id), timeout=5)
        except Exception:  # the cluster may be going down; the router drops dead replicas anyway
            return
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and self.load.idle_for() < DRAIN_QUIET_S:  # 0 while a call runs
            await asyncio.sleep(0.1)
        log.info("expert group %s replica %s drained (%d in flight)", self.group_name, self.replica_id,
                 self.load.in_flight)
