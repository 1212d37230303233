"""Cross-layer alignment: number each layer's groups so tokens tend to stay on one group id.

Group ids are free labels within a layer: relabelling them changes neither fan-out nor balance. But a
group deployment holds its id at every layer, so choosing the labels of layer l+1 to match where
layer l's tokens go next (ExFlow / GRACE-MoE's inter-layer affinity) means a token keeps talking to
the same deployments from layer to layer: fewer group switches, warmer connections, and prefetch
predictions that land on a group the token already uses.

The best relabelling is a maximum-weight matching between layer l's and layer l+1's groups,
solved exactly with the Hungarian algorithm (G <= a few hundred, so O(G^3) is cheap).
"""

from __future__ import annotations

import numpy as np


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost perfect matching of a square cost [n, n] -> column of each row [n].

    Hungarian algorithm with potentials (shortest augmenting paths), inner loop over columns in numpy.
    """
    n = cost.shape[0]
    row_potential = np.zeros(n + 1)
    col_potential = np.zeros(n + 1)
    row_of_col = np.zeros(n + 1, dtype=np.int64)  # 1-based rows; column 0 is the virtual start
    previous_col = np.zeros(n + 1, dtype=np.int64)
    for row in range(1, n + 1):
        row_of_col[0] = row
        col = 0
        min_slack = np.full(n + 1, np.inf)
        visited = np.zeros(n + 1, dtype=bool)
        while True:
            visited[col] = True
            current_row = row_of_col[col]
            slack = cost[current_row - 1] - row_potential[current_row] - col_potential[1:]  # [n]
            open_cols = ~visited[1:]
            better = open_cols & (slack < min_slack[1:])
            min_slack[1:][better] = slack[better]
            previous_col[1:][better] = col
            masked = np.where(open_cols, min_slack[1:], np.inf)
            next_col = int(np.argmin(masked)) + 1
            delta = masked[next_col - 1]
            row_potential[row_of_col[visited]] += delta
            col_potential[visited] -= delta
            min_slack[1:][open_cols] -= delta
            col = next_col
            if row_of_col[col] == 0:
                break
        while col:  # flip the augmenting path
            prior = previous_col[col]
            row_of_col[col] = row_of_col[prior]
            col = prior
    col_of_row = np.empty(n, dtype=np.int64)
    col_of_row[row_of_col[1:] - 1] = np.arange(n)
    return col_of_row


def group_flow(
    holds_from: np.ndarray,  # [G, E] bool, groups at layer l
    holds_to: np.ndarray,  # [G, E] bool, groups at layer l+1
    popularity_from: np.ndarray,  # [E] p at layer l
    transition: np.ndarray,  # [E, E] T from layer l to l+1
    top_k: int,
) -> np.ndarray:
    """[G, G] expected (expert at l in group a, expert at l+1 in group b) pairs per token.

    A replicated expert's traffic is split evenly over its holders: a placement-time estimate."""
    share_from = holds_from / np.maximum(holds_from.sum(0), 1)  # [G, E]
    share_to = holds_to / np.maximum(holds_to.sum(0), 1)
    pair_rate = popularity_from[:, None] * top_k * transition  # [E, E] P(i at l and j at l+1)
    return share_from @ pair_rate @ share_to.T


def align_group_labels(
    holds: np.ndarray,  # [L, G, E] bool
    popularity: np.ndarray,  # [L, E]
    transition: np.ndarray,  # [L-1, E, E]
    top_k: int,
) -> np.ndarray:
    """holds [L, G, E] with layer 1.. relabelled, each to best continue the (already relabelled) layer before."""
    aligned = holds.copy()
    for l in range(1, len(holds)):
        flow = group_flow(aligned[l - 1], aligned[l], popularity[l - 1], transition[l - 1], top_k)  # [G, G]
        new_label_of = linear_assignment(-flow.T)  # row = group b at layer l -> the label a it takes
        relabelled = np.empty_like(aligned[l])
        relabelled[new_label_of] = aligned[l]
        aligned[l] = relabelled
    return aligned
