"""An expert group: the routed experts of a set of (layer, expert) pairs, and their compute.

The single-process engine runs one group that holds every expert; the cluster runs one group per Serve
deployment, each loading only its own pairs from the checkpoint.

Two kernels compute a group's experts: "torch" (`compute.expert_forward`) and "vllm" (vLLM's fused-MoE op for
the weights' device, optional, `vllm_kernel`: the CPU op prepacks the weights once here at load, the CUDA kernel
reads them as they are).
"""

from __future__ import annotations

import torch

from switchyard.configs.engine import EXPERT_KERNELS, ExpertKernel
from switchyard.experts import vllm_kernel  # imports vllm only when the "vllm" kernel is asked for
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.compute import expert_forward
from switchyard.experts.layout import LayerExperts, load_layer_experts
from switchyard.experts.messages import ExpertRequest, ExpertResponse


class ExpertNotHeld(KeyError):
    """A request names an expert this group does not hold: its rows would come back zero, a wrong answer."""


class ExpertGroup:
    def __init__(self, layers: dict[int, LayerExperts], num_experts: int, kernel: ExpertKernel = "torch"):
        if kernel not in EXPERT_KERNELS:
            raise ValueError(f"expert kernel must be one of {EXPERT_KERNELS}, got {kernel!r}")
        if kernel == "vllm":  # the packed weights replace the plain ones: the experts are held once
            layers = {layer: vllm_kernel.prepack(experts) for layer, experts in layers.items()}
        self.layers = layers
        self.kernel = kernel
        self.num_experts = num_experts
        # Per layer, global expert id -> row in the stacked weights, -1 where this group does not hold it.
        self.local_index: dict[int, torch.Tensor] = {}
        for layer, experts in layers.items():
            table = torch.full((num_experts + 1,), -1, dtype=torch.long)  # last entry maps id -1 to -1
            table[list(experts.expert_ids)] = torch.arange(len(experts.expert_ids))
            table = table.to(experts.w13.device)  # indexed by the routing, which is where the weights are
            self.local_index[layer] = table

    @classmethod
    def load(cls, ckpt: Checkpoint, assignment: dict[int, list[int]], dtype: torch.dtype = torch.float32,
             kernel: ExpertKernel = "torch", device: torch.device | str = "cpu") -> "ExpertGroup":
        """Load only the experts in `assignment` ({layer: [expert ids]}) from the checkpoint, onto `device`."""
        if kernel == "vllm":
            vllm_kernel.load_ops(device)  # fail before reading any weights
        layers = {layer: load_layer_experts(ckpt, layer, sorted(ids), dtype, device) for layer, ids in assignment.items()}
        return cls(layers, ckpt.config.num_experts, kernel)

    @classmethod
    def load_all(cls, ckpt: Checkpoint, dtype: torch.dtype = torch.float32,
                 kernel: ExpertKernel = "torch", device: torch.device | str = "cpu") -> "ExpertGroup":
        every = list(range(ckpt.config.num_experts))
        return cls.load(ckpt, {layer: every for layer in ckpt.config.moe_layers}, dtype, kernel, device)

    def held(self) -> dict[int, tuple[int, ...]]:
        return {layer: experts.expert_ids for layer, experts in self.layers.items()}

    def forward(self, request: ExpertRequest) -> ExpertResponse:
        experts = self.layers.get(request.layer)
        if experts is None:
            raise KeyError(f"this expert group holds no experts of layer {request.layer}")
        local = self.local_index[request.layer][request.expert_ids]  # [T, k]; -1 indexes the sentinel
        missing = (local < 0) & (request.expert_ids >= 0)  # [T, k] asked of this group, not held by it
        if bool(missing.any()):  # the compute would skip them: fail loudly instead (a stale placement)
            ids = sorted(set(request.expert_ids[missing].tolist()))
            raise ExpertNotHeld(f"layer {request.layer}: experts {ids} are not held by this group "
                                f"(it holds {list(experts.expert_ids)})")
        hidden = request.hidden.to(experts.w13.dtype)
        if self.kernel == "vllm":
            out = vllm_kernel.fused_moe(hidden, local, request.weights, experts)
        else:
            out = expert_forward(hidden, local, request.weights, experts.w13, experts.w2)
        return ExpertResponse(request.layer, out.to(request.hidden.dtype))

    # -- re-placement (cluster/replacement/replacer.py): a new group, built while this one keeps serving ---------------
    def with_experts(self, ckpt: Checkpoint, add: dict[int, list[int]], dtype: torch.dtype,
                     device: torch.device | str = "cpu") -> "ExpertGroup":
        """A group holding this group's experts and `add` ({layer: expert ids}), the new ones read from `ckpt`
        onto `device` (where this group's weights are).
        The rows already held keep their place, so this group's `local_index` stays right for the new weights;
        layers with nothing to add share this group's tensors."""
        self._check_replaceable()
        layers = dict(self.layers)
        for layer, ids in add.items():
            old = layers.get(layer)
            held = set(old.expert_ids) if old is not None else set()
            new_ids = sorted(set(ids) - held)
            if not new_ids:
                continue
            loaded = load_layer_experts(ckpt, layer, new_ids, dtype, device)
            if old is None:
                layers[layer] = loaded
                continue
            layers[layer] = LayerExperts(layer, old.expert_ids + loaded.expert_ids,
                                         torch.cat([old.w13, loaded.w13.to(old.w13.device, old.w13.dtype)]),
                                         torch.cat([old.w2, loaded.w2.to(old.w2.device, old.w2.dtype)]))
        return ExpertGroup(layers, self.num_experts, self.kernel)

    def restricted_to(self, keep: dict[int, list[int]]) -> "ExpertGroup":
        """A group holding only the experts of `keep` ({layer: expert ids}) that this one holds; other layers
        are dropped. Rows are copied, so the dropped experts' memory goes with this group."""
        self._check_replaceable()
        layers = {}
        for layer, ids in keep.items():
            old = self.layers.get(layer)
            if old is None:
                continue
            wanted = set(ids)
            rows = [i for i, e in enumerate(old.expert_ids) if e in wanted]
            if len(rows) == len(old.expert_ids):
                layers[layer] = old
                continue
            index = torch.tensor(rows, dtype=torch.long, device=old.w13.device)
            layers[layer] = LayerExperts(layer, tuple(old.expert_ids[i] for i in rows),
                                         old.w13.index_select(0, index), old.w2.index_select(0, index))
        return ExpertGroup(layers, self.num_experts, self.kernel)

    def _check_replaceable(self) -> None:
        if self.kernel != "torch":  # the vllm kernel's prepacked rows are not re-packed here
            raise ValueError(f"re-placement while serving needs expert kernel 'torch', this group runs {self.kernel!r}")
