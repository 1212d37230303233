"""An expert group as a Ray Serve deployment: each replica loads only its group's experts.

Three ways in:
- `forward` through a Serve deployment handle (Serve's router picks the replica);
- `call_group` run inside the replica's actor by `__ray_call__`, for the router's direct-call transport,
  which skips Serve's request path on the per-layer hot path;
- the replica's Unix socket (socket_server.py), for the socket transport from a router on its node.

Both count in the replica's `LoadMeter`, which `record_autoscaling_stats` reports to Serve's autoscaler
(`autoscaling_policy.py` decides from it). A replica that Serve stops leaves the registry first, then waits
for the router to stop calling it (its graph rebuilt without it) and for its calls in flight to finish.

Re-placement while serving (cluster/replacement/replacer.py): `change_experts` loads or drops experts on a background
thread, building a new `ExpertGroup` while the old one serves, then swaps the one reference `forward` reads.
A replica that starts joins the registry holding what the registry's placement versions need now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from contextlib import nullcontext

import ray
import torch
from ray import serve

from switchyard.cluster.observability import tracing
from switchyard.cluster.autoscaling.load_meter import LoadMeter
from switchyard.cluster.deployments.registry import assignment_for, get_registry
from switchyard.cluster.deployments.socket_server import SocketServer, socket_path
from switchyard.cluster.observability.telemetry import GroupTelemetry
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
        self.ckpt = ckpt = Checkpoint.open(model)
        self.dtype = resolve_dtype(dtype, device)
        self.group = ExpertGroup.load(ckpt, {int(k): v for k, v in assignment.items()}, self.dtype, kernel,
                                      self.device)
        self.tensors_read = list(ckpt.tensors_read)
        self._changes: dict[str, str | None] = {}  # change token -> None while running, "ok" or the error
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

    # -- re-placement -------------------------------------------------------------------------------------
    def hold(self, assignment: dict[int, list[int]]) -> None:
        """Also hold `assignment`'s experts (read from the checkpoint); what is held already stays."""
        group = self.group.with_experts(self.ckpt, {int(k): v for k, v in assignment.items()}, self.dtype,
                                        self.device)
        self.group = group  # one reference: a forward in flight finishes on the group it started with
        self.tensors_read = list(self.ckpt.tensors_read)

    def retain(self, assignment: dict[int, list[int]]) -> None:
        """Hold only `assignment`'s experts."""
        self.group = self.group.restricted_to({int(k): v for k, v in assignment.items()})

    def start_change(self, token: str, op: str, assignment: dict[int, list[int]]) -> None:
        """Run `hold` or `retain` on a thread, so the replica keeps serving meanwhile; `change_status` polls it."""
        if op not in ("hold", "retain"):
            raise ValueError(f"op must be 'hold' or 'retain', got {op!r}")
        self._changes[token] = None

        def run():
            try:
                getattr(self, op)(assignment)
                self._changes[token] = "ok"
            except Exception as err:  # reported to the router, which aborts the switch
                log.exception("expert change %s failed", op)
                self._changes[token] = f"{type(err).__name__}: {err}"

        threading.Thread(target=run, daemon=True, name=f"switchyard-experts-{op}").start()


def call_group(_actor, request: ExpertRequest) -> ExpertResponse:
    """Runs inside an expert-group replica's actor (via `__ray_call__`)."""
    if _SERVING is None:
        raise RuntimeError("this actor serves no expert group")
    return _SERVING.forward(request)


def change_experts(_actor, token: str, op: str, assignment: dict[int, list[int]]) -> None:
    """Runs inside a replica's actor: start loading (`hold`) or dropping (`retain`) experts; returns at once."""
    if _SERVING is None:
        raise RuntimeError("this actor serves no expert group")
    _SERVING.start_change(token, op, assignment)


def change_status(_actor, token: str) -> str | None:
    """None while the change runs, then "ok" or its error."""
    if _SERVING is None:
        raise RuntimeError("this actor serves no expert group")
    return _SERVING._changes.get(token, "unknown change")


@serve.deployment
class ExpertGroupDeployment(ExpertGroupServer):
    def __init__(self, app_name: str, group_name: str, model: str, assignment: dict[int, list[int]],
                 dtype: str = "auto", device: str = "cpu", torch_threads: int | None = None,
                 kernel: str = "torch", group_names: list[str] | None = None, deploy_id: str = ""):
        self.registry = get_registry(app_name)
        self.group_names = group_names or [group_name]  # every group of the app, for the cost budget
        self.group_index = self.group_names.index(group_name)
        self.deploy_id = deploy_id
        bound = {int(k): v for k, v in assignment.items()}
        # Started after (or during) a re-placement: load what the registry's placement versions need now.
        state = ray.get(self.registry.placement_state.remote(deploy_id))
        super().__init__(model, assignment_for(state, state.needed(), bound, self.group_index), dtype, device,
                         torch_threads, kernel)
        tracing.configure("switchyard-experts")  # on when the replica's environment names an OTLP endpoint
        self.telemetry = GroupTelemetry.if_exported(app_name, group_name)
        # Serve ships this class by value (the module attribute is the Deployment, not the class), so a
        # `global` statement here would write to a copy; set the slot on the real module.
        import switchyard.cluster.deployments.expert_group as this_module

        this_module._SERVING = self
        self.group_name = group_name
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # before joining the registry: a router that finds this replica there may connect at once
        self.socket_server = SocketServer(socket_path(self.replica_id), self.forward)
        actor = ray.get_runtime_context().current_actor
        holds = state.needed()
        while True:  # a switch may have begun or ended while this replica loaded: join holding what it needs
            joined, now = ray.get(self.registry.register_holding.remote(group_name, self.replica_id, actor,
                                                                        deploy_id, holds))
            if joined:
                break
            self.hold(assignment_for(now, now.needed(), bound, self.group_index))
            holds = tuple(sorted(set(holds) | set(now.needed())))
        if set(holds) - set(now.needed()):  # the switch it loaded for was committed meanwhile
            self.retain(assignment_for(now, now.needed(), bound, self.group_index))

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
        self.socket_server.close()
