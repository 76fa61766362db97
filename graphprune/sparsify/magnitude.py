"""Magnitude pruning: keep the largest ``|w|``."""

from __future__ import annotations

import torch

from .base import BlockContext
from .registry import register
from .score import ScoreSparsifier


@register
class MagnitudeSparsifier(ScoreSparsifier):
    """Keep the ``k`` edges of largest ``|w|`` per block (or globally with ``allocation="global"``).

    Ties are broken by parameter order, so the result is deterministic. No randomness is used.
    ``comparison="row"`` compares weights within each output row (the per-output magnitude baseline of the LLM
    pruning papers) and ``nm=(2, 4)`` gives N:M sparsity (:class:`~graphprune.sparsify.score.ScoreSparsifier`).

    References
    ----------
    .. [1] S. Han, J. Pool, J. Tran, W. J. Dally. "Learning both Weights and Connections for Efficient Neural
       Networks", NeurIPS 2015. doi:10.48550/arXiv.1506.02626
    """

    name = "magnitude"
    context_dtype = None  # |w| is exact in float64 whatever the weight dtype

    def score(self, ctx: BlockContext) -> torch.Tensor:
        return ctx.weight.abs()
