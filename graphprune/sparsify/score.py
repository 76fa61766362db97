"""Score-based sparsifiers: comparison groups (per block or per output row) and N:M patterns.

A score-based sparsifier writes :meth:`~graphprune.sparsify.Sparsifier.score`; :class:`ScoreSparsifier` turns the
scores into a mask under one of three selection rules:

* ``comparison="block"`` (the default of weight-only methods): the ``k`` best scores of the whole block.
* ``comparison="row"``: every output row (output neuron, output channel) keeps its share of ``k``, as Wanda
  compares weights "per output" (Sun et al. 2024). The share is proportional to the row's available edges,
  rounded by largest remainder, so the block still keeps exactly ``k``.
* ``nm=(n, m)``: semi-structured N:M sparsity, the best ``n`` of every ``m`` consecutive input weights of a row
  (Mishra et al. 2021, the pattern of NVIDIA's sparse tensor cores). The density is ``n / m``.

Rows and inputs are those of the block's matrix view (:func:`graphprune.calibrate.to_matrix`): ``(out, in)`` for
Linear, ``(out, in/groups * prod(k))`` for convolutions, the transpose of an Embedding's ``(in, out)``.

References
----------
.. [1] A. Mishra, J. A. Latorre, J. Pool, D. Stosic, D. Stosic, G. Venkatesh, C. Yu, P. Micikevicius.
   "Accelerating Sparse Deep Neural Networks", 2021. doi:10.48550/arXiv.2104.08378
.. [2] M. Sun, Z. Liu, A. Bair, J. Z. Kolter. "A Simple and Effective Pruning Approach for Large Language Models",
   ICLR 2024. doi:10.48550/arXiv.2306.11695
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import COMPARISONS, NMPattern, Options, check_param, nm_pattern
from ..calibrate import from_matrix, to_matrix
from ..errors import ParameterError
from .base import BlockContext, Sparsifier, topk_mask

__all__ = ["ScoreSparsifier", "select", "row_shares", "nm_mask"]


def row_shares(avail_per_row: np.ndarray, k: int) -> np.ndarray:
    """``k`` split over rows proportionally to their available counts, by largest remainder (ties to the earlier
    row), never above a row's available count."""
    a = np.asarray(avail_per_row, dtype=np.int64)
    total = int(a.sum())
    if total == 0 or k <= 0:
        return np.zeros_like(a)
    if k >= total:
        return a.copy()
    q = a * (k / total)
    base = np.minimum(np.floor(q).astype(np.int64), a)
    rest = k - int(base.sum())
    frac = np.where(base < a, q - base, -1.0)
    order = np.argsort(-frac, kind="stable")
    base[order[:rest]] += 1
    return base


def _row_topk(S: torch.Tensor, shares: np.ndarray) -> torch.Tensor:
    """Keep the ``shares[r]`` best entries of every row of ``S`` (float64, -inf where unavailable; ties stable)."""
    order = torch.argsort(-S, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(S.shape[1]).expand_as(order).contiguous())
    return rank < torch.from_numpy(shares).reshape(-1, 1)


def nm_mask(S: torch.Tensor, avail: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The best ``n`` available entries of every ``m`` consecutive columns of each row of ``S`` (ties stable)."""
    rows, cols = S.shape
    G = S.masked_fill(~avail, -torch.inf).reshape(rows, cols // m, m)
    order = torch.argsort(-G, dim=2, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(2, order, torch.arange(m).expand_as(order).contiguous())
    return (rank < n).reshape(rows, cols) & avail


def nm_count(block, available: torch.Tensor, n: int, m: int) -> int:
    """Edges an N:M mask keeps in ``block`` given its available edges (``min(n, available)`` per group)."""
    A = to_matrix(block, available)
    if A.shape[1] % m:
        raise ParameterError(f"The 'nm' pattern {n}:{m} needs the input width of every pruned block to be a "
                             f"multiple of {m}; block {block.name!r} has {A.shape[1]} inputs. Keep it dense "
                             f"(keep_dense=[{block.param!r}]) or use unstructured sparsity.")
    return int(A.reshape(A.shape[0], -1, m).sum(2).clamp(max=n).sum())


def select(scores: torch.Tensor, available: torch.Tensor, k: int, *, block, comparison: str = "block",
           nm=None) -> torch.Tensor:
    """A bool mask of ``block``'s weight shape keeping ``k`` available edges by ``scores`` under the rule given.

    ``comparison="block"`` is :func:`~graphprune.sparsify.base.topk_mask`; ``"row"`` gives each output row its
    :func:`row_shares` of ``k``; ``nm=(n, m)`` keeps ``n`` of every ``m`` (``k`` must then be
    :func:`nm_count`). Ties go to the earlier position, so the result is deterministic.
    """
    if nm is None and comparison == "block":
        return topk_mask(scores, available, k)
    S = to_matrix(block, scores.detach().to("cpu", torch.float64))
    A = to_matrix(block, available.detach().cpu())
    shares = row_shares(A.sum(1).numpy(), k) if nm is None else None
    keep = torch.empty(A.shape, dtype=torch.bool)
    step = max(1, _ROW_CHUNK // max(1, S.shape[1]))  # rows are independent: chunks bound the sort's working set
    for a in range(0, S.shape[0], step):
        Sc, Ac = S[a : a + step], A[a : a + step]
        if nm is not None:
            keep[a : a + step] = nm_mask(Sc, Ac, *nm)
        else:
            keep[a : a + step] = _row_topk(Sc.masked_fill(~Ac, -torch.inf), shares[a : a + step]) & Ac
    return from_matrix(block, keep)


#: Entries per chunk of rows in :func:`select` (row and N:M rules): the sort's int64 order and rank arrays and the
#: masked scores exist for one chunk at a time, not for the whole block (a 32000 x 4096 head: 4 GiB fewer).
_ROW_CHUNK = 1 << 22


class ScoreSparsifier(Sparsifier):
    """A :class:`~graphprune.sparsify.Sparsifier` that keeps the best :meth:`score` under a comparison rule.

    Parameters
    ----------
    comparison : {"block", "row"}, optional
        The group in which scores compete: the whole block, or each output row (its share of the block's budget).
        Default: the class's :attr:`default_comparison` ("block" for weight-only methods, "row" for Wanda-style
        activation scores).
    nm : (int, int) or str, optional
        Semi-structured N:M sparsity, ``(2, 4)`` or ``"2:4"``: keep the best ``n`` of every ``m`` consecutive
        inputs of each row. The density is then ``n / m``: give no sparsity (or the matching one); allocation
        must be uniform.
    **kwargs
        The base class's parameters.
    """

    #: The comparison group used when ``comparison`` is None.
    default_comparison: str = "block"

    _parameter_constraints = {
        "comparison": [Options(COMPARISONS), None],
        "nm": [NMPattern(), None],
    }

    def __init__(self, sparsity=None, *, comparison=None, nm=None, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.comparison = comparison
        self.nm = nm

    def _comparison(self) -> str:
        return self.comparison or self.default_comparison

    def _nm(self):
        return nm_pattern(self.nm) if self.nm is not None else None

    def target_density(self) -> float:
        if self.nm is None:
            return super().target_density()
        cls = type(self).__name__
        check_param("nm", self.nm, [NMPattern()], cls)
        n, m = nm_pattern(self.nm)
        if self.sparsity is None and self.density is None:
            return n / m
        d = super().target_density()
        if abs(d - n / m) > 1e-9:
            raise ParameterError(f"The 'nm' parameter of {cls} is {n}:{m}, a density of {n / m:g}, but "
                                 f"{'sparsity' if self.sparsity is not None else 'density'} asks for a density of "
                                 f"{d:g}. Pass only nm=({n}, {m}).")
        return d

    def _validate_extra(self):
        super()._validate_extra()
        if self.nm is not None and self.allocation != "uniform":
            raise ParameterError(f"The 'allocation' parameter of {type(self).__name__} must be 'uniform' with an "
                                 f"N:M pattern (nm={self.nm!r}): every block keeps n of every m. Got "
                                 f"{self.allocation!r}.")

    def allocate(self, graph, units, d: float) -> dict:
        nm = self._nm()
        if nm is None:
            return super().allocate(graph, units, d)
        return {b.name: b.num_edges if self.keeps_dense(b) else nm_count(b, graph.block_mask(b), *nm)
                for b in units}

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        s = self.score(ctx)
        if s is None:
            raise NotImplementedError(f"{type(self).__name__} must implement score() or compute_mask().")
        return select(s, ctx.available, k, block=ctx.block, comparison=self._comparison(), nm=self._nm())
