"""`/v1/switchyard/placement`: see and change the placement of a serving app (behind the API key, as every /v1/).

    GET   the current placement (version, strategy), the routing window, and since the last switch the fan-out
          the router recorded next to what the placement predicts on the same tokens
    POST  {"dry_run": true, "min_gain": 0.0, "placement": null}
          fits a placement on the window (router/affinity/rolling.py), or takes `placement` (the JSON of
          `switchyard place -o`), and answers the current and the proposed placement's predicted fan-out and
          imbalance; unless `dry_run`, applies it (cluster/replacement/replacer.py) when its gain passes `min_gain`
          (null: whatever the gain)

Plain FastAPI with no Ray in it: the router deployment gives the service its pieces, tests give their own.
Errors are OpenAI error objects (4xx); a switch that fails before the tables change is a 503 and nothing moved.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import FastAPI, Request
from pydantic import Field

from switchyard.cluster.api.requests import ApiError, _Body, parse_body
from switchyard.cluster.deployments.registry import PlacementConflict
from switchyard.cluster.replacement.replacer import Replacer, SwitchFailed
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.placement import Placement, PlacementError
from switchyard.router.affinity.rolling import check_compatible, compare, propose, replayed_fan_out, worth_applying
from switchyard.router.trace_recorder import RoutingWindow

MAX_BODY_BYTES = 8 << 20  # a placement of a DeepSeek-size model is a few MB of JSON


class PlacementBody(_Body):
    dry_run: bool = True
    min_gain: float | None = Field(0.0, allow_inf_nan=False, description="apply only if 1 - proposed / current "
                                   "busiest-group load (fan-out x imbalance) is at least this; null: always")
    placement: dict[str, Any] | None = None


@dataclass
class SwitchMark:
    """Where the last switch happened, in the window and in the dispatch counters (read on the engine thread)."""

    window_mark: int
    group_messages: int
    token_layers: int
    in_flight: int  # sequences submitted and not finished: the requests the switch happened under


@dataclass
class PlacementService:
    window: RoutingWindow | None  # None: the app keeps no routing (window_tokens 0)
    replacer: Replacer | None  # None: refused (no expert groups, or several router replicas)
    counters: Callable[[], tuple[int, int]]  # (group messages, token layers) dispatched so far
    min_tokens: int = 256
    refused: str = ""  # why `replacer` is None
    # compute(fn, *args) -> awaitable of fn(*args): the fits and scores, away from the event loop. The router
    # runs them in a Ray task: in a thread of its own process they would hold the GIL the engine thread needs.
    compute: Callable = asyncio.to_thread
    last_switch: SwitchMark | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def placement(self) -> Placement:
        return self.replacer.placement

    def describe(self) -> dict:
        out: dict = {"object": "switchyard.placement", "window": self._window_summary()}
        if self.replacer is None:
            return {**out, "version": None, "strategy": None, "refused": self.refused}
        out |= {"version": self.replacer.version, "strategy": self.placement.strategy, "switching": self.replacer.busy,
                "num_groups": self.placement.num_groups, "switches": self.history}
        out["since_switch"] = self._since_switch()
        return out

    async def handle(self, raw: bytes) -> dict:
        body = parse_body(raw, PlacementBody)
        if self.replacer is None:
            raise ApiError(400, f"re-placement is not available: {self.refused}", code="replacement_unavailable")
        explicit = _parse_placement(body.placement) if body.placement is not None else None
        if explicit is not None:
            try:
                check_compatible(self.placement, explicit)
            except ValueError as err:
                field_name = str(err).split(":", 1)[0]
                raise ApiError(400, f"placement.{err}", f"placement.{field_name}") from err
        tokens = self._window_tokens()
        if explicit is None and tokens < self.min_tokens:
            raise ApiError(409, f"the router has seen the routing of {tokens} tokens, fewer than the "
                                f"{self.min_tokens} a proposal needs (replacement.min_tokens); serve some traffic "
                                "first, or send an explicit `placement`", code="not_enough_routing")
        if not body.dry_run and self.replacer.busy:
            raise ApiError(409, "a switch is under way; try again when it is done", code="switch_in_progress")
        current = self.placement
        trace = await asyncio.to_thread(self.window.trace) if tokens else None
        if trace is None:
            proposal = None
        elif explicit is not None:
            proposal = await self.compute(compare, trace, current, explicit)
        else:
            proposal = await self.compute(propose, trace, current)
        placement = explicit if proposal is None else proposal.placement
        out = {"object": "switchyard.placement", "dry_run": body.dry_run, "min_gain": body.min_gain,
               "current": {"version": self.replacer.version, "strategy": current.strategy},
               "proposed": {"strategy": placement.strategy}, "window": self._window_summary()}
        if proposal is None:  # an explicit placement and no routing to score it on
            apply = body.min_gain is None
            reason = ("min_gain null: applied whatever the gain" if apply else
                      "no routing to score it on: an explicit placement then needs min_gain null")
        else:
            apply, reason = worth_applying(proposal.current, proposal.proposed, body.min_gain)
            out["current"] |= proposal.current.to_dict()
            out["proposed"] |= proposal.proposed.to_dict() | {"experts_to_load": proposal.experts_moved}
            out |= {"gain": round(proposal.gain, 4), "scored_tokens": proposal.scored_tokens,
                    "held_out": proposal.held_out,
                    "candidates": {name: score.to_dict() for name, score in proposal.candidates.items()}}
        out["placement"] = placement.to_json()
        out |= {"would_apply": apply, "reason": reason}
        if body.dry_run or not apply:
            return out | {"applied": False}
        try:
            report = await self.replacer.apply(placement)
        except PlacementConflict as err:
            raise ApiError(409, str(err), code="switch_in_progress") from err
        except SwitchFailed as err:
            raise ApiError(503, str(err), kind="server_error", code="switch_failed") from err
        record = {"version": report.version, "strategy": placement.strategy, **report.to_dict(),
                  "sequences_in_flight": self.last_switch.in_flight if self.last_switch else None}
        self.history.append(record)
        return out | {"applied": True, "switch": record}

    # -- called on the engine thread, between two steps -----------------------------------------------------
    def marked(self, in_flight: int = 0) -> None:
        messages, token_layers = self.counters()
        self.last_switch = SwitchMark(self.window.mark() if self.window is not None else 0, messages, token_layers,
                                      in_flight)

    # -- helpers ------------------------------------------------------------------------------------------
    def _window_tokens(self) -> int:
        if self.window is None:
            return 0
        return len(self.window) // max(1, len(self.window.metadata.layers))

    def _window_summary(self) -> dict:
        if self.window is None:
            return {"tokens": 0, "capacity_tokens": 0}
        return {"tokens": self._window_tokens(),
                "capacity_tokens": self.window.max_rows // max(1, len(self.window.metadata.layers))}

    def _since_switch(self) -> dict | None:
        """Fan-out the router recorded since the last switch, the current placement's prediction on the same
        tokens (exact for a placement without replicas: with replicas the dispatcher's batches matter), and its
        dispatch replayed call by call (exact with replicas too, while the window holds every call since)."""
        mark = self.last_switch
        if mark is None:
            return None
        messages, token_layers = self.counters()
        out = {"token_layers": token_layers - mark.token_layers,
               "recorded_fan_out": (messages - mark.group_messages) / max(1, token_layers - mark.token_layers),
               "predicted_fan_out": None, "predicted_imbalance": None}
        if self.window is not None:
            trace = self.window.trace(since=mark.window_mark)
            if trace.num_rows:
                report = evaluate_placement(self.placement, trace.aligned(), hidden_size=1)
                out |= {"predicted_fan_out": report.mean_fan_out, "predicted_imbalance": report.mean_imbalance,
                        "replayed_fan_out": replayed_fan_out(self.window.calls(since=mark.window_mark),
                                                             self.placement),
                        "window_tokens": int(trace.num_rows // max(1, len(self.placement.layers))),
                        "window_holds_all": self.window.holds_since(mark.window_mark)}
        return out


def _parse_placement(document: dict) -> Placement:
    try:
        return Placement.from_json(json.dumps(document))
    except PlacementError as err:
        raise ApiError(400, f"placement.{err}", f"placement.{err.field}") from err
    except (ValueError, TypeError) as err:
        raise ApiError(400, f"placement: {err}", "placement") from err


def add_placement_routes(app: FastAPI) -> None:
    """Mount GET and POST /v1/switchyard/placement; they read `app.state.placement` (a PlacementService)."""

    def service(request: Request) -> PlacementService:
        found = getattr(request.app.state, "placement", None)
        if found is None:
            raise ApiError(503, "the model is still loading", kind="server_error")
        return found

    @app.get("/v1/switchyard/placement")
    async def placement_state(request: Request):
        return await asyncio.to_thread(service(request).describe)

    @app.post("/v1/switchyard/placement")
    async def placement_change(request: Request):
        served = service(request)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
        return await served.handle(raw)
