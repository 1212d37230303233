"""Which Ray nodes a pool's replicas may run on: custom resources, node labels, and how far they spread.

One block per pool (`router_pool.nodes`, `expert_pool.nodes`). In the expert pool, `{group}` in a resource name,
a label key or a label value stands for the group's index, so each expert group can ask for its own node type
(`expert-group-{group}: 1`, or a label `switchyard.io/expert-group: "{group}"`) and lands there. The Helm chart
gives each worker group the matching `resources` / `labels` (docs/kubernetes.md). Checked here, at start-up,
with Ray's own label syntax: a replica whose option Ray would refuse, or that no node could ever take, fails
before any replica starts, naming the field.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP = "{group}"
# Ray's built-in resources have fields of their own (num_cpus, num_gpus, memory_bytes): a custom resource of the
# same name would be reserved twice, or refused by Ray only once a replica starts.
_BUILT_IN = {"CPU", "GPU", "memory", "object_store_memory"}
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_.:/{}-]+$")


class NodePlacement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each replica reserves, e.g. {'expert-node': 1}: "
                                          "only nodes started with them (`ray start --resources`, a KubeRay worker "
                                          "group's `resources`) take the replica")
    label_selector: dict[str, str] = Field(
        default_factory=dict, description="Ray node labels the replica's node must match (`ray start --labels`, a "
                                          "KubeRay worker group's `labels`); values take Ray's operators: "
                                          "'v', '!v', 'in(a,b)', '!in(a,b)'")
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="spread: at most this many replicas of one deployment on a node (Serve's own "
                                "option; 1 puts each replica of a group on a different node)")

    @field_validator("resources")
    @classmethod
    def _resources(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if name in _BUILT_IN:
                raise ValueError(f"{name!r} is Ray's own resource: set it with the pool's num_cpus / num_gpus / "
                                 "memory_bytes, not as a custom resource")
            if not _RESOURCE_NAME.match(name):
                raise ValueError(f"resource name {name!r}: use letters, digits and - _ . : /")
            if not amount > 0:
                raise ValueError(f"resources[{name!r}] is {amount}: a custom resource a replica asks for must be "
                                 "> 0 (remove it to ask for none)")
        return resources

    @field_validator("label_selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        from ray._private.label_utils import validate_label_selector

        # with {group} as it will be once filled in: checked here rather than by Ray in a starting replica
        problem = validate_label_selector({k.replace(GROUP, "0"): v.replace(GROUP, "0") for k, v in selector.items()})
        if problem:
            raise ValueError(problem)
        return selector

    def uses_group(self) -> bool:
        return any(GROUP in text for text in (*self.resources, *self.label_selector, *self.label_selector.values()))

    def for_group(self, group: int | None) -> "NodePlacement":
        """These options with `{group}` filled in (`group` None: there must be none to fill)."""
        if group is None:
            return self
        fill = lambda text: text.replace(GROUP, str(group))  # noqa: E731
        return NodePlacement(resources={fill(k): v for k, v in self.resources.items()},
                             label_selector={fill(k): fill(v) for k, v in self.label_selector.items()},
                             max_replicas_per_node=self.max_replicas_per_node)

    def ray_actor_options(self) -> dict:
        """What goes into Serve's `ray_actor_options` (merged with num_cpus and the rest by the pool)."""
        options: dict = {}
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        return options

    def deployment_options(self) -> dict:
        return {} if self.max_replicas_per_node is None else {"max_replicas_per_node": self.max_replicas_per_node}
