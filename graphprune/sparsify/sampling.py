"""Sampling and top-k selection: the top ``k`` scores of a block, and weighted sampling without replacement.

:func:`weighted_sample` is the one successive-sampling routine of the package (spectral leverages, element-wise
magnitudes): Efraimidis-Spirakis keys ``log(u) / p_e`` and their top ``k``, with a uniform fill among the
zero-weight candidates when fewer than ``k`` have positive weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .allocation import NBINS, key_bins, sort_keys, threshold_bin

__all__ = ["topk_mask", "top_indices", "top_flags", "weighted_sample", "candidate_sum", "inclusion_probabilities"]


def topk_mask(scores: torch.Tensor, available: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` highest scores among ``available`` (ties broken by position, stably).

    The result is exactly the first ``k`` of a stable descending argsort (NaN last), found in O(n) by
    :func:`top_flags` instead of a full sort.
    """
    t = scores.detach().to("cpu", torch.float64)
    s = t.reshape(-1).numpy()
    if t.data_ptr() == scores.data_ptr():  # no conversion happened: copy before writing
        s = s.copy()
    s[~available.detach().to("cpu").reshape(-1).numpy()] = -np.inf
    return torch.from_numpy(top_flags(s, k)).reshape(available.shape)


def top_indices(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest keys (deterministic for equal input)."""
    if k >= keys.size:
        return np.arange(keys.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.argpartition(-keys, k - 1)[:k]


def top_flags(x: np.ndarray, k: int, *, chunk: int = 1 << 22) -> np.ndarray:
    """Bool flags of the ``k`` largest values of a 1-D float array, ties going to the earliest positions.

    Equal to flagging ``np.argsort(-x, kind="stable")[:k]`` (NaN ranks lowest), without sorting: one pass
    histograms order-preserving 64-bit keys on their top 20 bits, a second flags every value above the bin that
    holds the k-th largest and sorts only the values inside it. Extra memory: O(chunk + size of that bin).
    """
    n = x.size
    keep = np.zeros(n, dtype=bool)
    if k <= 0:
        return keep
    if k >= n:
        keep[:] = True
        return keep
    if n <= 1 << 21:  # a partition costs less than the 2**20-bin histogram
        neg = np.negative(x, dtype=np.float64)  # NaN stays NaN: last in ascending order, as it ranks lowest
        thr = np.partition(neg, k - 1)[k - 1]
        nan = bool(np.isnan(thr))  # fewer non-NaN values than k: all of them, then NaNs by position
        keep = ~np.isnan(neg) if nan else neg < thr
        ties = np.flatnonzero(np.isnan(neg) if nan else neg == thr)
        keep[ties[: k - int(np.count_nonzero(keep))]] = True  # the k-th value's ties: earliest positions first
        return keep
    if _top_flags_sampled(x, k, keep, chunk):
        return keep
    keep[:] = False
    hist = np.zeros(NBINS, dtype=np.int64)
    for a in range(0, n, chunk):
        hist += np.bincount(key_bins(sort_keys(x[a : a + chunk])), minlength=NBINS)
    edge, need = threshold_bin(hist, k)
    pos, keys = [], []
    for a in range(0, n, chunk):
        sk = sort_keys(x[a : a + chunk])
        hi = key_bins(sk)
        keep[a : a + chunk] = hi > edge
        inside = np.flatnonzero(hi == edge)
        pos.append(inside + a)
        keys.append(sk[inside])
    pos, keys = np.concatenate(pos), np.concatenate(keys)
    keep[pos[np.argsort(~keys, kind="stable")[:need]]] = True
    return keep


def _top_flags_sampled(x, k, keep, chunk, sample=1 << 18) -> bool:
    """:func:`top_flags` in one pass when a sample brackets the threshold: the ``k``-th largest value is estimated
    from every ``n / sample``-th value, with a margin of several standard deviations on each side ``[lo, hi]``;
    one pass flags every value above ``hi`` and gathers those in ``[lo, hi]``, among which the rest are taken by
    value, ties by position. The same flags as :func:`top_flags` whenever it returns True; False (the bracket
    missed: fall back) leaves ``keep`` to be reset by the caller. No random numbers are drawn."""
    n = x.size
    step = max(1, n // sample)
    s = x[::step]
    s = -np.sort(-s[~np.isnan(s)])  # descending, NaN (ranked lowest) dropped
    if s.size < 64:
        return False
    valid = s.size / len(x[::step])  # estimated share of non-NaN values
    j = k / (n * valid) * s.size  # the threshold's estimated rank in the sample
    margin = 6.0 * math.sqrt(max(j * (1 - min(j / s.size, 1.0)), 1.0)) + 16
    hi_at, lo_at = int(j - margin), int(math.ceil(j + margin))
    if lo_at >= s.size:  # the threshold is near the lowest values: the bracket would hold most of the array
        return False
    hi, lo = (s[hi_at] if hi_at >= 0 else np.inf), s[lo_at]
    bound = 4 * (lo_at - max(hi_at, 0) + 1) * step + chunk  # the bracket's values expected, with room
    above, gathered, pos, vals = 0, 0, [], []
    for a in range(0, n, chunk):
        c = x[a : a + chunk]
        flag = c > hi
        keep[a : a + chunk] = flag
        above += int(np.count_nonzero(flag))
        inside = np.flatnonzero((c >= lo) & ~flag)
        pos.append(inside + a)
        vals.append(c[inside])
        gathered += inside.size
        if above > k or gathered > bound:
            return False
    pos, vals = np.concatenate(pos), np.concatenate(vals)
    need = k - above
    if need > pos.size:
        return False
    keep[pos[np.lexsort((pos, -vals))[:need]]] = True  # by value, then by position
    return True


def weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator, *, cand=None, exclude=None,
                    total=None, overwrite: bool = False, chunk: int = 1 << 22) -> np.ndarray:
    """Bool flags of ``k`` candidates drawn by successive sampling (without replacement) with probabilities
    ``p_e = weights_e / total``; a uniform fill among the other candidates when fewer than ``k`` have positive
    weight.

    Parameters
    ----------
    weights : numpy.ndarray
        1-D float64, non-negative (no NaN).
    k : int
        Edges to draw, at most the number of candidates.
    rng : numpy.random.Generator
    cand, exclude : numpy.ndarray of bool, optional
        The candidates are ``cand & ~exclude`` (default: every position).
    total : float, optional
        The normaliser of ``p``. Default: the sum of the candidates' positive weights, as numpy sums them.
    overwrite : bool, default False
        Write the keys over ``weights`` (NaN off the positive candidates), chunk by chunk: no per-edge float
        array besides ``weights`` itself.
    chunk : int, default 2**22

    Returns
    -------
    numpy.ndarray of bool

    Notes
    -----
    Efraimidis-Spirakis keys ``log(u_e) / p_e`` over the positive-weight candidates in position order (one uniform
    draw each, the same stream as one call whatever ``chunk``), their top ``take = min(k, positive)`` flagged by
    :func:`top_flags` (ties to the earlier position), then ``k - take`` more chosen by ``rng.choice`` among the
    remaining candidates, ascending. Successive sampling proportional to ``p`` gives exactly ``k`` distinct edges in
    one pass.

    References
    ----------
    .. [1] P. S. Efraimidis, P. G. Spirakis. "Weighted random sampling with a reservoir", Inf. Process. Lett.
       97(5), 2006. doi:10.1016/j.ipl.2005.11.003
    """
    n = weights.size

    def candidates(a, b, c):
        sel = c > 0
        if cand is not None:
            sel &= cand[a:b]
        if exclude is not None:
            sel &= ~exclude[a:b]
        return sel

    if overwrite:
        if total is None:
            total = candidate_sum(weights, cand=cand, exclude=exclude, chunk=chunk)
        npos = 0
        for a in range(0, n, chunk):
            c = weights[a : a + chunk]
            idx = np.flatnonzero(candidates(a, a + chunk, c))
            p = c[idx]
            p /= total
            u = rng.random(idx.size)
            np.log(u, out=u)
            u /= p  # Efraimidis-Spirakis keys log(u) / p
            c.fill(np.nan)  # NaN ranks below every key
            c[idx] = u
            npos += idx.size
            del idx, p, u
        take = min(k, npos)
        keep = top_flags(weights, take, chunk=chunk) if take else np.zeros(n, dtype=bool)
    else:
        keep = np.zeros(n, dtype=bool)
        pos = np.flatnonzero(candidates(0, n, weights))
        take = min(k, pos.size)
        if take:
            p = weights[pos]
            p /= p.sum() if total is None else total
            u = rng.random(pos.size)
            np.log(u, out=u)
            u /= p
            del p
            keep[pos[top_flags(u, take)]] = True
    if k > take:  # fewer positive-weight candidates than k: uniformly among the rest
        rest = ~keep
        if cand is not None:
            rest &= cand
        if exclude is not None:
            rest &= ~exclude
        keep[rng.choice(np.flatnonzero(rest), size=k - take, replace=False)] = True
    return keep


def candidate_sum(weights, *, cand=None, exclude=None, chunk=1 << 22) -> float:
    """The sum of the positive weights of the candidates (``cand & ~exclude``) without gathering them: numpy sums
    a contiguous float64 array as a running total of pairwise sums over blocks of ``numpy.getbufsize()``
    elements, and so does this, chunk by chunk, so the value is the same to the last bit (the sampling
    probabilities, hence the masks, do not change)."""
    step = np.getbufsize()
    acc = 0.0
    carry = np.zeros(0)
    for a in range(0, weights.size, chunk):
        c = weights[a : a + chunk]
        sel = c > 0
        if cand is not None:
            sel &= cand[a : a + chunk]
        if exclude is not None:
            sel &= ~exclude[a : a + chunk]
        vals = c[sel]
        if carry.size:
            vals = np.concatenate([carry, vals])
        full = vals.size - vals.size % step
        if full:
            for v in vals[:full].reshape(-1, step).sum(axis=1).tolist():
                acc += v
        carry = vals[full:].copy()
    if carry.size:
        acc += float(carry.sum())
    return acc


def inclusion_probabilities(p, k):
    """``pi = 1 - (1 - p)^q`` with ``q`` such that ``sum(pi) = k`` (bisection on q)."""
    p = p / p.sum()
    if k >= np.count_nonzero(p):
        return np.where(p > 0, 1.0, 0.0)
    lo, hi = float(k), float(k)
    while np.sum(-np.expm1(hi * np.log1p(-np.minimum(p, 1 - 1e-16)))) < k:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        s = np.sum(-np.expm1(mid * np.log1p(-np.minimum(p, 1 - 1e-16))))
        lo, hi = (mid, hi) if s < k else (lo, mid)
        if math.isclose(lo, hi, rel_tol=1e-12):
            break
    return -np.expm1(hi * np.log1p(-np.minimum(p, 1 - 1e-16)))

