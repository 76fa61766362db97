"""Degree-preserving sparsification: every node keeps a share of its edges proportional to its degree."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import VIEWS, Options
from .base import BlockContext, Sparsifier
from .registry import register


@register
class DegreeSparsifier(Sparsifier):
    """Keep ``k`` edges per block so that each node keeps about ``k / E`` of its available edges.

    On a dense block (every edge available) the result is a random biregular bipartite graph: each output node
    keeps ``ceil`` or ``floor`` of ``k / n_dst`` edges and each input node ``ceil`` or ``floor`` of ``k / n_src``;
    exactly biregular when the budget divides. Construction: give output node ``i`` (in a random order) the slots
    ``[k_0 + ... + k_{i-1}, ... + k_i)`` and map slot ``t`` to input node ``perm[t mod n_src]``. Consecutive slots
    give distinct inputs (``k_i <= n_src``), and every input receives ``floor`` or ``ceil`` of ``k / n_src`` slots.
    On a partly masked block each output node keeps its share of its available edges, drawing inputs with the
    fewest kept edges first (random tie-break), which keeps input degrees as even as the mask allows. The rule needs
    no weights, so an all-zero block is pruned by it too (with the RuntimeWarning every sparsifier gives for such a
    block, see :mod:`graphprune.sparsify.base`).

    Parameters
    ----------
    view : {"rolled", "channel"}, default "rolled"
        For convolutions, balance degrees over (channel, tap) inputs (rolled, no parallel edges) or over channels
        (the ``prod(k)`` taps of a channel pair are then separate slots of the same pair).

    References
    ----------
    .. [1] D. T. Hoang, S. Liu, R. Marculescu, Z. Wang. "Revisiting Pruning at Initialization through the Lens of
       Ramanujan Graph", ICLR 2023. (Regular bipartite masks as pruning-at-initialisation baselines.)
    """

    name = "degree"
    supports_global = False

    def __init__(self, sparsity=None, *, view="rolled", **kwargs):
        super().__init__(sparsity, **kwargs)
        self.view = view

    _parameter_constraints = {"view": [Options(VIEWS)]}

    zero_block_rule = "by its usual degree-preserving rule (which needs no weights)"

    def zero_block_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        return self.compute_mask(ctx, k)  # degrees need no weights: an all-zero block is like any other

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        b = ctx.block
        src, dst = b.edge_index(self.view)
        n_dst, n_src = b.view_shape(self.view)
        avail = ctx.available.reshape(-1).numpy()
        rng = ctx.rng
        keep = np.zeros(avail.size, dtype=bool)
        if avail.all() and b.groups == 1 and (self.view == "rolled" or b.kernel_size == 1):
            # dense block without parallel edges: slot construction, exactly (bi)regular when k divides
            quotas = _largest_remainder(np.full(n_dst, avail.size / n_dst), k, rng)
            order = rng.permutation(n_dst)
            perm = rng.permutation(n_src)
            lookup = np.full((n_dst, n_src), -1, dtype=np.int64)
            lookup[dst, src] = np.arange(avail.size)
            start = 0
            for i in order:
                q = int(quotas[i])
                cols = perm[np.arange(start, start + q) % n_src]
                keep[lookup[i, cols]] = True
                start += q
            return torch.from_numpy(keep).reshape(ctx.available.shape)
        # general case: per-output quotas proportional to available degree, inputs balanced greedily
        a_dst = np.bincount(dst[avail], minlength=n_dst).astype(np.float64)
        quotas = np.minimum(_largest_remainder(a_dst * (k / max(avail.sum(), 1)), k, rng), a_dst).astype(int)
        short = k - quotas.sum()
        while short > 0:  # quotas capped by availability: hand the remainder to nodes with room
            room = np.flatnonzero(quotas < a_dst)
            add = rng.choice(room, size=min(short, room.size), replace=False)
            quotas[add] += 1
            short = k - quotas.sum()
        load = np.zeros(n_src, dtype=np.int64)
        idx = np.flatnonzero(avail)
        by_dst = np.argsort(dst[idx], kind="stable")
        bounds = np.searchsorted(dst[idx][by_dst], np.arange(n_dst + 1))
        for i in rng.permutation(n_dst):
            q = int(quotas[i])
            if q == 0:
                continue
            edges = idx[by_dst[bounds[i] : bounds[i + 1]]]
            order = np.lexsort((rng.random(edges.size), load[src[edges]]))
            pick = edges[order[:q]]
            keep[pick] = True
            np.add.at(load, src[pick], 1)
        return torch.from_numpy(keep).reshape(ctx.available.shape)


def _largest_remainder(share, total, rng):
    """Integers summing to ``total``, proportional to ``share`` (largest remainders, random tie-break)."""
    share = np.asarray(share, dtype=np.float64)
    if share.sum() > 0:
        share = share * (total / share.sum())
    base = np.floor(share).astype(np.int64)
    left = int(total - base.sum())
    if left > 0:
        frac = share - base
        order = np.lexsort((rng.random(share.size), -frac))
        base[order[:left]] += 1
    return base
