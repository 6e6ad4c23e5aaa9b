"""Drawing a batch from the two priority pools (fresh, used) and its importance weights.

Pure numpy helpers of ReplayBuffer; no I/O.

Importance weights undo the priority bias *within* each pool: with P(i) = p_i / sum of the
pool and N the pool's size, w_i = (N P(i))^-beta / max_j w_j, the max taken over every live
group of both pools (from each tree's min leaf), so 0 < w <= 1 as in prioritized experience
replay (Schaul et al. 2016). The fresh-vs-used mix set by `fresh_fraction` is a deliberate
choice and is not undone; with `fresh_fraction=None` the two pools act as one (P over the
union) and the weights undo the whole sampling bias.
"""

from __future__ import annotations

import numpy as np

from rollstream.services.replay.sumtree import SumTree


def draw_unique(tree: SumTree, k: int, rng: np.random.Generator, rounds: int = 16) -> np.ndarray:
    """Up to k distinct slots drawn by value (no slot twice in one batch), in draw order.

    Draws k with replacement; while duplicates left it short, zeroes the slots already taken
    and draws the rest, then restores their values (successive sampling without replacement).
    """
    if k <= 0 or tree.total <= 0:
        return np.empty(0, dtype=np.int64)
    picks = np.empty(0, dtype=np.int64)
    zeroed: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(rounds):
        need = k - picks.size
        draw = tree.sample(need, rng)
        _, first = np.unique(draw, return_index=True)
        new = draw[np.sort(first)]
        picks = np.concatenate([picks, new[:need]])
        if picks.size >= k:
            break
        zeroed.append((new, tree.get(new)))
        tree.update(new, 0.0)
        if tree.total <= 0:
            break
    for slots, values in reversed(zeroed):
        tree.update(slots, values)
    return picks


def importance_weights(
    fresh: SumTree,
    used: SumTree,
    n_fresh: int,
    n_used: int,
    pick_f: np.ndarray,
    pick_u: np.ndarray,
    beta: float,
    pooled: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised weights (N P(i))^-beta / max w for the picks of each pool."""
    if beta == 0:
        return np.ones(pick_f.size), np.ones(pick_u.size)
    if pooled:
        total, n = fresh.total + used.total, n_fresh + n_used
        pools = [(fresh, total, n), (used, total, n)]
    else:
        pools = [(fresh, fresh.total, n_fresh), (used, used.total, n_used)]
    # log w = -beta * log(N P); the largest weight belongs to the smallest N P
    smallest = min(
        (n * tree.min() / total for tree, total, n in pools if n > 0 and total > 0),
        default=1.0,
    )
    out = []
    for (tree, total, n), pick in zip(pools, (pick_f, pick_u), strict=True):
        if pick.size == 0:
            out.append(np.ones(0))
            continue
        ratio = (n * tree.get(pick) / total) / smallest  # >= 1
        out.append(ratio ** (-beta))
    return out[0], out[1]


def interleave(
    pick_f: np.ndarray,
    w_f: np.ndarray,
    pick_u: np.ndarray,
    w_u: np.ndarray,
    fresh_fraction: float | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One ordered list of picks: shuffled for one pooled draw, else fresh and used merged so
    that every prefix keeps the fresh share as close to `fresh_fraction` as the picks allow
    (a token budget then cuts a prefix without skewing the mix)."""
    slots = np.concatenate([pick_f, pick_u]).astype(np.int64)
    weights = np.concatenate([w_f, w_u])
    if fresh_fraction is None:
        order = rng.permutation(slots.size)
        return slots[order], weights[order]
    order = []
    i_f, i_u = 0, pick_f.size
    for taken in range(slots.size):
        want_fresh = i_f < pick_f.size and (i_u >= slots.size or i_f < fresh_fraction * (taken + 1))
        if want_fresh:
            order.append(i_f)
            i_f += 1
        else:
            order.append(i_u)
            i_u += 1
    idx = np.asarray(order, dtype=np.int64)
    return slots[idx], weights[idx]
