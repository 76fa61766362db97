"""Magnitude pruning: keep the largest ``|w|``."""

from __future__ import annotations

import warnings

import torch

from .base import BlockContext
from .registry import register
from .score import ScoreSparsifier
from .units import user_stacklevel


@register
class MagnitudeSparsifier(ScoreSparsifier):
    """Keep the ``k`` edges of largest ``|w|`` per block (or globally with ``allocation="global"``).

    ``comparison="row"`` compares weights within each output row (the per-output magnitude baseline of the LLM
    pruning papers) and ``nm=(2, 4)`` gives N:M sparsity (:class:`~graphprune.sparsify.score.ScoreSparsifier`).

    Ties are broken by parameter order, so the result is deterministic. A block whose available weights all have
    the same ``|w|`` has no ranking at all (ties by position would keep its first rows and empty the others): an
    all-zero block (the shared rule, see :mod:`graphprune.sparsify.base`) and a constant block both keep ``k``
    edges chosen uniformly at random from the block's own seed stream, with a RuntimeWarning naming the block.
    Randomness is used for those blocks only.

    References
    ----------
    .. [1] S. Han, J. Pool, J. Tran, W. J. Dally. "Learning both Weights and Connections for Efficient Neural
       Networks", NeurIPS 2015. doi:10.48550/arXiv.1506.02626
    """

    name = "magnitude"
    context_dtype = None  # |w| is exact in float64 whatever the weight dtype

    def score(self, ctx: BlockContext) -> torch.Tensor:
        return ctx.weight.abs()

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        s = self.score(ctx)
        if _constant(s, ctx.available):
            b = ctx.block
            warnings.warn(f"Block {b.name!r} ({b.param}) has the same |w| on every available edge (a constant "
                          f"block): magnitude has nothing to rank, so {type(self).__name__} keeps its budget of {k} "
                          f"edges {self.zero_block_rule}. Initialise the block, or keep it dense with "
                          f"keep_dense=[{b.param!r}], to choose otherwise.", RuntimeWarning,
                          stacklevel=user_stacklevel())
            return self.zero_block_mask(ctx, k)
        return super().compute_mask(ctx, k)


def _constant(s: torch.Tensor, available: torch.Tensor, *, chunk: int = 1 << 22) -> bool:
    """Whether every available entry of ``s`` holds the same value, chunk by chunk on ``s``'s device (a usual block
    answers from its first chunk)."""
    sf, af = s.reshape(-1), available.reshape(-1)
    first = None
    for a in range(0, sf.numel(), chunk):
        v, m = sf[a : a + chunk], af[a : a + chunk].to(sf.device)
        if first is None:
            idx = torch.nonzero(m)
            if idx.numel() == 0:
                continue
            first = v[idx[0, 0]]
        if bool(((v != first) & m).any()):
            return False
    return True
