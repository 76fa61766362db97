"""Element-wise matrix sparsification: sample entries with probability proportional to ``|w|^power``.

The sampling-theory peer of spectral sampling: where spectral sparsification samples an edge by its leverage
``w_e R_e`` (it preserves the Laplacian's quadratic form), element-wise sparsification samples an entry by its
magnitude (``w^2`` preserves the matrix in spectral norm, Achlioptas & McSherry; ``|w|`` is the L1 scheme of
Drineas & Zouzias). With ``reweight=True`` the kept entries are scaled by ``1 / pi_e`` so the sparse matrix is an
unbiased estimator of the dense one, which is what matters when pruning trained weights without fine-tuning.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import Boolean, Options
from .base import BlockContext, Sparsifier
from .registry import register
from .sampling import inclusion_probabilities, weighted_sample

__all__ = ["ElementwiseSparsifier"]


@register
class ElementwiseSparsifier(Sparsifier):
    r"""Keep ``k`` entries per block sampled without replacement with probability proportional to ``|w|^power``.

    Parameters
    ----------
    sparsity, density, seed, allocation, keep_dense, progress
        See :class:`~graphprune.sparsify.Sparsifier`.
    power : {2, 1}, default 2
        ``2``: ``p_e = w_e^2 / ||W||_F^2`` (Achlioptas & McSherry 2007); ``1``: ``p_e = |w_e| / ||W||_1``
        (Drineas & Zouzias 2011).
    reweight : bool, default False
        Record ``1 / pi_e`` for every kept entry in ``scales_`` (parameter -> tensor), ``pi_e`` the inclusion
        probability of successive sampling with ``k`` draws (``pi_e = 1 - (1 - p_e)^q``, ``q`` fitted so that
        ``sum(pi) = k``); ``apply_masks(model, G, masks, scales=sp.scales_)`` writes it, making ``E[W_sparse] ~ W``.

    Notes
    -----
    Sampling uses Efraimidis-Spirakis keys ``log(u) / p_e`` (top-k), so exactly ``k`` distinct entries are kept
    in one pass; an entry with ``p_e = 0`` is only kept when the budget exceeds the non-zero entries. A block with
    no non-zero available entry keeps ``k`` entries uniformly at random from its own seed stream, with a
    RuntimeWarning (:meth:`~graphprune.sparsify.Sparsifier.zero_block_mask`; its scales stay 1); a constant block
    (all ``|w|`` equal) is sampled uniformly by the rule itself.
    Complexity ``O(n)`` per block of ``n`` weights (a partial sort).

    References
    ----------
    .. [1] D. Achlioptas, F. McSherry. "Fast computation of low-rank matrix approximations", J. ACM 54(2), 2007.
       doi:10.1145/1219092.1219097
    .. [2] P. Drineas, A. Zouzias. "A note on element-wise matrix sparsification via a matrix-valued Bernstein
       inequality", Inf. Process. Lett. 111(8), 2011. doi:10.1016/j.ipl.2011.01.010
    .. [3] P. S. Efraimidis, P. G. Spirakis. "Weighted random sampling with a reservoir", Inf. Process. Lett.
       97(5), 2006. doi:10.1016/j.ipl.2005.11.003

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> G = graphprune.from_model(net, torch.randn(1, 16))
    >>> masks = graphprune.sparsify(G, "elementwise", sparsity=0.9, seed=0, reweight=True)
    >>> [int(m.sum()) for m in masks.values()]
    [51, 13]
    """

    name = "elementwise"
    supports_global = False
    _parameter_constraints = {"power": [Options((1, 2))], "reweight": [Boolean()]}

    def __init__(self, sparsity=None, *, power=2, reweight=False, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.power = power
        self.reweight = reweight

    def prepare(self, graph):
        self.scales_ = {}

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        w = ctx.weight.detach().abs().to("cpu", torch.float64).reshape(-1).numpy()
        avail = ctx.available.reshape(-1).cpu().numpy()
        mass = np.where(avail, w ** self.power, 0.0)
        keep = weighted_sample(mass, k, ctx.rng, cand=avail)  # fewer non-zero entries than k: uniform fill
        if self.reweight:
            scale = np.ones(w.size)
            pos = np.flatnonzero(mass > 0)
            take = min(k, pos.size)
            if pos.size:
                pi = inclusion_probabilities(mass[pos], take)
                inv = np.ones(w.size)
                inv[pos] = 1.0 / np.maximum(pi, 1e-300)
                scale[keep] = inv[keep]
            b = ctx.block
            full = self.scales_.setdefault(b.param, torch.ones(ctx.graph.param_shapes[b.param], dtype=torch.float64))
            t = torch.from_numpy(scale).reshape(ctx.weight.shape)
            b.set_rows(full, t)
        return torch.from_numpy(keep).reshape(ctx.available.shape)
