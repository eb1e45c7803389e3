"""Optimal one-to-one assignment (the Hungarian method) for DETR's set prediction (Notes: 002 §4.3.6).

Given a cost matrix C [n, m], find the pairs (row i, column j), each row and each column used at most once and
min(n, m) pairs in all, with the smallest total cost. DETR matches its N object queries to the M <= N ground-truth
objects this way, with C[q, o] = -p_q(class_o) + lambda_L1 |b_q - b_o|_1 + lambda_giou (1 - GIoU(b_q, b_o)).

The algorithm is Kuhn-Munkres with potentials u (rows) and v (columns) in the shortest-augmenting-path form: rows
join one at a time; each grows a Dijkstra-like search over the reduced costs C[i, j] - u[i] - v[j] >= 0 until it
reaches a free column, then the potentials are shifted by the search's distances and the path is flipped. O(n^2 m)
for n <= m (a wider matrix is solved transposed); the scan over columns is vectorised.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError


def linear_sum_assignment(cost: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """(rows, cols): the minimum-cost assignment of the [n, m] matrix `cost`, min(n, m) pairs sorted by row (the
    convention of scipy.optimize.linear_sum_assignment). Notes: 002 §4.3.6."""
    c = cost.detach().cpu().double().numpy() if isinstance(cost, Tensor) else np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ConfigError(f"the assignment needs a 2-D cost matrix [rows, columns]; got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ConfigError("the assignment's cost matrix holds NaN or infinite values; every pair needs a finite cost "
                          "(replace a forbidden pair by a large finite cost)")
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    rows, cols = _shortest_augmenting_paths(c)
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


def _shortest_augmenting_paths(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the optimal assignment of c [n, m] with n <= m (every row assigned)."""
    n, m = c.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # potentials; index 0 is a virtual row / column
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row (1-based) holding column j, 0: free
    way = np.zeros(m + 1, dtype=np.int64)  # the previous column on the shortest path to column j
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        dist = np.full(m + 1, np.inf)
        done = np.zeros(m + 1, dtype=bool)
        while True:
            done[j0] = True
            i0 = owner[j0]
            free = ~done
            free[0] = False
            reduced = c[i0 - 1] - u[i0] - v[1:]
            better = free[1:] & (reduced < dist[1:])
            dist[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, dist, np.inf)
            j1 = int(np.argmin(candidates))
            delta = candidates[j1]
            u[owner[done]] += delta
            v[done] -= delta
            dist[free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the path: every column on it passes to the row before
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.nonzero(owner[1:])[0]
    return owner[1:][cols] - 1, cols
