"""Magnitude pruning: keep the largest ``|w|``."""

from __future__ import annotations

import torch

from .base import BlockContext, Sparsifier
from .registry import register


@register
class MagnitudeSparsifier(Sparsifier):
    """Keep the ``k`` edges of largest ``|w|`` per block (or globally with ``allocation="global"``).

    Ties are broken by parameter order, so the result is deterministic. No randomness is used.

    References
    ----------
    .. [1] S. Han, J. Pool, J. Tran, W. J. Dally. "Learning both Weights and Connections for Efficient Neural
       Networks", NeurIPS 2015. doi:10.48550/arXiv.1506.02626
    """

    name = "magnitude"
    context_dtype = None  # |w| is exact in float64 whatever the weight dtype

    def score(self, ctx: BlockContext) -> torch.Tensor:
        return ctx.weight.abs()
