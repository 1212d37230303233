"""DeepSeek's expert-parallelism load balancer (EPLB), re-implemented with numpy.

The baseline placement to beat: it balances expected load by replicating hot experts and packing the
physical experts onto GPUs, but ignores which experts are picked together. Same algorithm and tie
breaking as deepseek-ai/EPLB `rebalance_experts` (golden test: tests/affinity/test_eplb.py), written from
its description:

1. (hierarchical only) pack the model's expert groups (contiguous blocks of E / num_expert_groups
   experts, as in DeepSeek-V3's group-limited routing) onto nodes, balancing their summed load;
2. within each node, give the extra physical slots one by one to the expert whose load per replica is
   highest;
3. pack each node's physical experts onto its GPUs, heaviest first, each to the least loaded GPU that
   still has room.
The global policy is the same with one node and one expert group.

Terms: "logical" = the model's expert ids; "physical" = slots after replication, GPU-major (GPU g owns
physical slots g * P/num_gpus ... (g+1) * P/num_gpus - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EplbResult:
    phy2log: np.ndarray  # [X, P] int64: logical expert of each physical slot
    log2phy: np.ndarray  # [X, E, max_replicas] int64: physical slots of each expert, -1 padded
    logcnt: np.ndarray  # [X, E] int64: replicas of each logical expert


def _inverse(perm: np.ndarray) -> np.ndarray:
    """Row-wise inverse permutation, [X, n] -> [X, n]."""
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.arange(perm.shape[1])[None, :].repeat(len(perm), 0), axis=1)
    return inv


def balanced_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Split n items into num_packs packs of exactly n / num_packs items with balanced summed weight.

    weight [X, n] -> (pack_index [X, n], rank_in_pack [X, n]). Greedy: heaviest item first, into the
    lightest pack that is not full (lowest pack index on ties).
    """
    rows, n = weight.shape
    if n % num_packs:
        raise ValueError(f"{n} items do not split evenly into {num_packs} packs")
    per_pack = n // num_packs
    if per_pack == 1:
        return np.tile(np.arange(n), (rows, 1)), np.zeros((rows, n), np.int64)
    pack_index = np.full((rows, n), -1, np.int64)
    rank_in_pack = np.full((rows, n), -1, np.int64)
    for x in range(rows):
        pack_weight = np.zeros(num_packs)
        pack_items = np.zeros(num_packs, np.int64)
        for item in np.argsort(-weight[x], kind="stable"):
            open_weight = np.where(pack_items < per_pack, pack_weight, np.inf)
            pack = int(np.argmin(open_weight))
            pack_index[x, item] = pack
            rank_in_pack[x, item] = pack_items[pack]
            pack_weight[pack] += weight[x, item]
            pack_items[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight: np.ndarray, num_physical: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give num_physical - n extra slots, one at a time, to the expert with the most load per replica.

    weight [X, n] -> (phy2log [X, num_physical], rank [X, num_physical] = which replica of its expert
    the slot is, logcnt [X, n]). The first n slots are the experts themselves, in order.
    """
    rows, n = weight.shape
    if num_physical < n:
        raise ValueError(f"{num_physical} physical slots cannot hold {n} experts")
    phy2log = np.tile(np.arange(num_physical), (rows, 1))
    rank = np.zeros((rows, num_physical), np.int64)
    logcnt = np.ones((rows, n), np.int64)
    every_row = np.arange(rows)
    for slot in range(n, num_physical):
        hottest = np.argmax(weight / logcnt, axis=1)  # first index on ties, like torch.max
        phy2log[:, slot] = hottest
        rank[:, slot] = logcnt[every_row, hottest]
        logcnt[every_row, hottest] += 1
    return phy2log, rank, logcnt


def rebalance_hierarchical(
    weight: np.ndarray, num_physical: int, num_expert_groups: int, num_nodes: int, num_gpus: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [X, E] -> (phy2log [X, P], phyrank [X, P], logcnt [X, E]); see the module docstring."""
    rows, num_logical = weight.shape
    if num_logical % num_expert_groups or num_expert_groups % num_nodes:
        raise ValueError(f"{num_logical} experts / {num_expert_groups} expert groups / {num_nodes} nodes do not nest")
    if num_gpus % num_nodes or num_physical % num_gpus:
        raise ValueError(f"{num_physical} physical slots / {num_gpus} GPUs / {num_nodes} nodes do not nest")
    group_size = num_logical // num_expert_groups
    groups_per_node = num_expert_groups // num_nodes
    per_node_logical = num_logical // num_nodes
    per_gpu_physical = num_physical // num_gpus

    # 1: expert groups to nodes. "mlog" numbers experts node-major: node 0's experts come first.
    group_load = weight.reshape(rows, num_expert_groups, group_size).sum(-1)  # [X, num_expert_groups]
    group_node, group_rank = balanced_packing(group_load, num_nodes)
    first_mlog = (group_node * groups_per_node + group_rank) * group_size  # [X, num_expert_groups]
    log2mlog = (first_mlog[:, :, None] + np.arange(group_size)).reshape(rows, num_logical)
    mlog2log = _inverse(log2mlog)

    # 2: replicas inside each node; one row per (layer, node).
    mlog_load = np.take_along_axis(weight, mlog2log, axis=1).reshape(-1, per_node_logical)
    phy2mlog, phyrank, mlogcnt = replicate_experts(mlog_load, num_physical // num_nodes)

    # 3: each node's physical experts onto its GPUs; "pphy" is the final, GPU-major slot order.
    phy_load = np.take_along_axis(mlog_load / mlogcnt, phy2mlog, axis=1)
    gpu, rank_on_gpu = balanced_packing(phy_load, num_gpus // num_nodes)
    pphy2phy = _inverse(gpu * per_gpu_physical + rank_on_gpu)

    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=1)  # node-local mlog ids
    node_offset = np.arange(0, num_logical, per_node_logical)[None, :, None]
    pphy2mlog = (pphy2mlog.reshape(rows, num_nodes, -1) + node_offset).reshape(rows, -1)
    pphy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=1)
    pphyrank = np.take_along_axis(phyrank, pphy2phy, axis=1).reshape(rows, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(rows, -1), log2mlog, axis=1)
    return pphy2log, pphyrank, logcnt


def rebalance_experts(
    weight: np.ndarray, num_physical: int, num_expert_groups: int, num_nodes: int, num_gpus: int
) -> EplbResult:
    """EPLB entry point. weight [X, E] = load per layer and logical expert.

    Hierarchical when the expert groups split evenly over the nodes, else the global policy.
    """
    weight = np.asarray(weight, dtype=np.float64)
    rows, num_logical = weight.shape
    if num_expert_groups % num_nodes == 0:
        phy2log, phyrank, logcnt = rebalance_hierarchical(weight, num_physical, num_expert_groups, num_nodes, num_gpus)
    else:
        phy2log, phyrank, logcnt = rebalance_hierarchical(weight, num_physical, 1, 1, num_gpus)
    max_replicas = int(logcnt.max())
    log2phy = np.full((rows, num_logical * max_replicas), -1, np.int64)
    np.put_along_axis(log2phy, phy2log * max_replicas + phyrank, np.arange(num_physical)[None, :].repeat(rows, 0), 1)
    return EplbResult(phy2log, log2phy.reshape(rows, num_logical, max_replicas), logcnt)
