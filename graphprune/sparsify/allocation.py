"""Density allocation over blocks: ERK budgets and one global threshold over every block's scores.

The global threshold is found without concatenating the scores: a histogram of order-preserving 64-bit keys on
their top 20 bits locates the bin that holds the ``K``-th largest score, then only the scores inside that bin are
gathered and sorted. :func:`threshold_bin` does that step for every caller (the serial and the job drivers of
:class:`~graphprune.sparsify.Sparsifier`, :func:`~graphprune.sparsify.sampling.top_flags` and the checkpoint
route); :func:`global_counts` splits ``K`` over the blocks from their histograms and candidates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["erk_counts", "igq_counts", "sort_keys", "key_histogram", "threshold_bin", "threshold_counts",
           "global_counts", "NBINS", "SHIFT"]

SHIFT = np.uint64(44)  # histogram on the top 20 bits of the 64-bit sort keys
NBINS = 1 << 20


def erk_counts(blocks, d: float) -> dict:
    """Erdos-Renyi-Kernel allocation: densities ``min(1, eps * sum(shape) / prod(shape))`` with ``eps`` chosen so
    the total kept count is ``d`` times the total (Evci et al. 2020, doi:10.48550/arXiv.1911.11134)."""
    n = {b.name: b.num_edges for b in blocks}
    raw = {b.name: sum(b.weight.shape) / b.num_edges for b in blocks}
    dense = set()
    while True:
        budget = d * sum(n.values()) - sum(n[x] for x in dense)
        denom = sum(raw[x] * n[x] for x in n if x not in dense)
        eps = budget / denom if denom > 0 else 0.0
        over = {x for x in n if x not in dense and eps * raw[x] > 1}
        if not over:
            break
        dense |= over
    return {x: n[x] if x in dense else round(eps * raw[x] * n[x]) for x in n}


def igq_counts(blocks, d: float) -> dict:
    """Ideal Gas Quotas: block ``l`` of ``n_l`` weights keeps ``n_l / (1 + F n_l)``, with ``F >= 0`` chosen so
    the total kept count is ``round(d * N)`` (Vysogorets and Kempe 2023, "Connectivity matters: neural network
    pruning through the lens of effective sparsity", JMLR 24(99), doi:10.48550/arXiv.2107.02306).

    Their analogy: each block is a cylinder of gas of height ``n_l`` under one piston force ``F``; a block's
    compression ``1 + F n_l`` grows with its size. Small blocks (a first convolution, a classifier) stay nearly
    dense while large ones are pruned hardest, and at extreme sparsity (``F n_l >> 1``) every block keeps about
    the same count ``1 / F``. Here ``F`` is found by bisection and the counts rounded by largest remainders, so
    they sum to ``round(d * N)`` exactly; written from the paper's description of the quotas.
    """
    n = {b.name: int(b.num_edges) for b in blocks}
    N = sum(n.values())
    K = min(N, max(0, int(round(d * N))))
    if K >= N:
        return dict(n)
    if K == 0:
        return {x: 0 for x in n}
    sizes = np.array(list(n.values()), dtype=np.float64)

    def kept(F):
        return sizes / (1.0 + F * sizes)

    lo, hi = 0.0, 1.0
    while kept(hi).sum() > K:  # kept(F) falls from N (F = 0) towards len(n) / F
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if kept(mid).sum() > K:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    raw = kept(0.5 * (lo + hi)) * (K / kept(0.5 * (lo + hi)).sum())  # exact total before rounding
    raw = np.minimum(raw, sizes)
    out = np.floor(raw).astype(np.int64)
    short = K - int(out.sum())
    for i in np.argsort(-(raw - out), kind="stable"):
        if short <= 0:
            break
        if out[i] < sizes[i]:
            out[i] += 1
            short -= 1
    return {x: int(c) for x, c in zip(n, out)}


def sort_keys(x: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like the float64 values ``x`` (NaN lowest, below -inf, like a descending argsort;
    -0.0 and 0.0 equal)."""
    x = np.asarray(x, dtype=np.float64)
    bits = (x + 0.0).view(np.uint64)
    flip = np.uint64(0) - (bits >> np.uint64(63))  # all ones for negatives, 0 otherwise
    flip |= np.uint64(1 << 63)
    bits ^= flip  # negatives: ~bits; positives: bits with the sign bit set
    bits[np.isnan(x)] = 0
    return bits


def key_bins(keys: np.ndarray) -> np.ndarray:
    """The histogram bin (top 20 bits) of each sort key, as int64."""
    return (keys >> SHIFT).astype(np.int64)


def key_histogram(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bins, counts)``: the non-empty bins of the scores' keys and their counts (ascending bins)."""
    hist = np.bincount(key_bins(sort_keys(scores)), minlength=NBINS)
    bins = np.flatnonzero(hist)
    return bins, hist[bins]


def threshold_bin(hist: np.ndarray, k: int) -> tuple[int, int]:
    """``(edge, need)`` for ``0 < k <= hist.sum()``: the bin that holds the ``k``-th largest key, and how many of
    the keys inside it are kept (every key in a higher bin is)."""
    above = np.cumsum(hist[::-1])  # above[j]: keys in the top j + 1 bins
    j = int(np.searchsorted(above, k))  # the k-th largest lies in bin NBINS - 1 - j
    return NBINS - 1 - j, k - (int(above[j - 1]) if j > 0 else 0)


def threshold_counts(scores: np.ndarray, edge: int) -> tuple[int, np.ndarray]:
    """``(above, inside)``: how many scores lie above bin ``edge``, and the sort keys of those inside it."""
    keys = sort_keys(scores)
    hi = key_bins(keys)
    return int(np.count_nonzero(hi > edge)), keys[hi == edge]


def global_counts(names, K: int, histograms, counts) -> dict:
    """Edges kept per unit under one threshold over every unit's scores, in two passes (no concatenation).

    Parameters
    ----------
    names : list of str
        The units, in order (ties go to the earlier unit, then to the earlier position).
    K : int
        Edges kept in all.
    histograms : callable
        ``histograms()`` yields ``(i, (bins, counts))`` per unit (:func:`key_histogram` of its scores), in any
        order.
    counts : callable
        ``counts(edge)`` yields ``(i, (above, inside))`` per unit (:func:`threshold_counts`), in any order.

    Returns
    -------
    dict of str to int
        The split equals a stable descending argsort of all scores concatenated in unit order.
    """
    if K <= 0:
        return {n: 0 for n in names}
    hist = np.zeros(NBINS, dtype=np.int64)
    for _, (bins, c) in histograms():
        hist[bins] += c
    edge, need = threshold_bin(hist, K)
    above, cand = [0] * len(names), [None] * len(names)
    for i, (n_above, inside) in counts(edge):
        above[i], cand[i] = n_above, inside
    keys = np.concatenate(cand)
    unit = np.concatenate([np.full(c.size, i, dtype=np.int64) for i, c in enumerate(cand)])
    chosen = unit[np.argsort(~keys, kind="stable")[:need]]  # ~key: descending keys, stable by position
    extra = np.bincount(chosen, minlength=len(names))
    return {n: above[i] + int(extra[i]) for i, n in enumerate(names)}
