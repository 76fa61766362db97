"""Per-unit helpers shared by the sparsifier protocol (:mod:`.base`) and its executor jobs (:mod:`.jobs`): seed
streams per unit, the mask of one unit from its scores, the checks of a unit's weights and result, warnings that
point at the user's call, and the progress bar."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import torch

from ..errors import GraphPruneError, ParameterError


def unit_seeds(ss: np.random.SeedSequence, units) -> dict:
    """One child seed sequence per unit (block name -> SeedSequence), spawned in unit order from ``ss``
    (:func:`make_rng` of the sparsifier's seed): the random stream of each unit, wherever it runs."""
    return dict(zip([b.name for b in units], ss.spawn(len(units))))


def count_true(m: torch.Tensor) -> int:
    """Number of True entries of a bool tensor (numpy's count_nonzero on the CPU: no int64 reduction buffer)."""
    if m.device.type == "cpu" and m.dtype == torch.bool:
        return int(np.count_nonzero(m.detach().numpy()))
    return int(m.sum())


def _check_weights(b):
    w = b.weight
    if w.is_meta:
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) is on the meta device and holds no values. "
                             "Materialise the model first (model.to_empty(device='cpu') and initialise it, or load "
                             "its weights) before sparsifying.")
    total = w.detach().sum(dtype=torch.float64 if w.dtype == torch.float64 else torch.float32)
    # a finite sum means every weight is finite (NaN and inf propagate); only a non-finite sum (NaN, inf or an
    # overflow) needs the element-wise check
    if not bool(torch.isfinite(total)) and not bool(torch.isfinite(w).all()):
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) holds NaN or inf weights; fix the model "
                             "before sparsifying.")
    if w.numel() == 0:
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) is empty.")


def has_nonzero(weight: torch.Tensor, available: torch.Tensor, *, chunk: int = 1 << 22) -> bool:
    """Whether any available weight is non-zero, chunk by chunk on the weight's device (a usual block answers
    from its first chunk, so the check costs one chunk, not a pass over the block)."""
    wf, af = weight.detach().reshape(-1), available.reshape(-1)
    for a in range(0, wf.numel(), chunk):
        if bool(((wf[a : a + chunk] != 0) & af[a : a + chunk].to(wf.device)).any()):
            return True
    return False


def _unit_mask(sp, ctx, k):
    """``(mask, zero)``: one unit's mask of exactly ``min(k, available)`` edges. Every available edge when the
    budget covers them; :meth:`Sparsifier.zero_block_mask` when no available weight is non-zero (``zero`` is then
    ``(k, available)`` for the warning, or None when ``k == 0``: nothing was chosen); :meth:`compute_mask`
    otherwise."""
    n_avail = count_true(ctx.available)
    k = min(int(k), n_avail)
    if k >= n_avail:
        return ctx.available, None
    zero = None
    if not has_nonzero(ctx.weight, ctx.available):
        m = sp.zero_block_mask(ctx, k)
        zero = (k, n_avail) if k > 0 else None
    else:
        m = sp.compute_mask(ctx, k)
    _check_result(sp, ctx.block, m, ctx, k)
    return m, zero


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the first frame outside graphprune (the user's
    call), counted from the function that calls this one."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(pkg):
        f, level = f.f_back, level + 1
    return level


def _warn_zero_block(sp, b, k, n_avail):
    cls = type(sp).__name__
    warnings.warn(f"Block {b.name!r} ({b.param}) has no non-zero available weight (an all-zero block, such as a "
                  f"zero-initialised classifier head): it has nothing to rank, so {cls} keeps its budget of {k} of "
                  f"its {n_avail} edges {sp.zero_block_rule}. Initialise the block, or keep it dense with "
                  f"keep_dense=[{b.param!r}], to choose otherwise.", RuntimeWarning, stacklevel=user_stacklevel())


def _check_result(sp, b, m, ctx, k):
    if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != tuple(ctx.weight.shape):
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask must return a bool tensor of shape "
                              f"{tuple(ctx.weight.shape)} for block {b.name!r}.")
    if bool((m & ~ctx.available).any()):
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask revived pruned edges in block {b.name!r}.")
    kept = count_true(m)
    if kept != k:
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask kept {kept} edges in block {b.name!r}; "
                              f"{k} were asked for.")


def _short_repr(v) -> str:
    """repr of a parameter value; modules, tensors, data loaders and long containers by type (stable, short)."""
    if isinstance(v, (torch.nn.Module, torch.Tensor, np.ndarray)) or (
            hasattr(v, "__iter__") and not isinstance(v, (str, bytes, list, tuple, dict, set, frozenset))):
        return f"<{type(v).__name__}>"
    text = repr(v)
    if len(text) > 80 and isinstance(v, (list, tuple, dict, set, frozenset)):
        return f"<{type(v).__name__} of {len(v)}>"
    return text


def _progress(items, enabled, desc, total=None):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block", total=total)
