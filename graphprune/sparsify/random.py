"""Uniform random sparsification: every available edge equally likely to be kept."""

from __future__ import annotations

import torch

from .base import BlockContext
from .registry import register
from .score import ScoreSparsifier


@register
class RandomSparsifier(ScoreSparsifier):
    """Keep a uniformly random subset of exactly ``k`` edges per block.

    The score of each edge is an independent uniform draw from the block's own stream; the top ``k`` of iid
    uniforms is a uniform ``k``-subset, and with ``allocation="global"`` the same scores give a global random
    pruning. With ``allocation="erk"`` this is the ERK random baseline of Evci et al. 2020. An all-zero block gets
    the same edges as any other (the shared rule for such blocks is this one), with the RuntimeWarning every
    sparsifier gives for it (see :mod:`graphprune.sparsify.base`).

    Examples
    --------
    >>> import torch, graphprune
    >>> G = graphprune.from_model(torch.nn.Linear(10, 10), torch.randn(1, 10))
    >>> masks = graphprune.sparsify(G, "random", sparsity=0.9, seed=0)
    >>> int(masks["weight"].sum())
    10
    """

    name = "random"
    context_dtype = None  # only the shape is used

    def score(self, ctx: BlockContext) -> torch.Tensor:
        return torch.from_numpy(ctx.rng.random(ctx.numel)).reshape(ctx.weight.shape)
