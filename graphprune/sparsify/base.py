"""The sparsifier protocol: base class, registry, density allocation and seeding.

A sparsifier turns ``(graph, target density, seed)`` into masks keyed by parameter name. A new sparsifier writes
one method: either :meth:`Sparsifier.score` (keep the top-k scores) or :meth:`Sparsifier.compute_mask` (any rule
that keeps exactly ``k`` of the available edges). The base class validates arguments, allocates the density over
blocks, intersects with existing masks (masks only shrink), never prunes identity blocks and derives one random
stream per block from ``seed``.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import (
    ALLOCATIONS,
    Boolean,
    DensityDict,
    Interval,
    Options,
    Seed,
    StrList,
    check_param,
    seed_sequence,
)
from ..errors import GraphPruneError, ParameterError

__all__ = ["Sparsifier", "BlockContext", "make_rng", "ALLOCATIONS"]


def make_rng(seed, *, owner: str = "sparsify") -> np.random.SeedSequence:
    """A ``numpy.random.SeedSequence`` from an int, a numpy Generator or a torch Generator (never global state).

    ``None`` is refused: every random result in graphprune is reproducible. See
    :func:`graphprune._validation.seed_sequence`.
    """
    return seed_sequence(seed, owner=owner)


@dataclass
class BlockContext:
    """What a sparsifier sees of one prunable unit (a weight block, or one slice of a parameter).

    Attributes
    ----------
    graph : MultipartiteGraph
    block : Block
    weight : torch.Tensor
        Signed weights, shaped like the block's parameter slice (float64 on CPU unless a subclass asks otherwise).
    available : torch.Tensor
        Bool, same shape: edges still present (the existing mask).
    rng : numpy.random.Generator
        This unit's own random stream.
    """

    graph: object
    block: object
    weight: torch.Tensor
    available: torch.Tensor
    rng: np.random.Generator

    @property
    def numel(self) -> int:
        return int(self.weight.numel())


class Sparsifier:
    """Base class of every sparsifier.

    Parameters
    ----------
    sparsity : float, optional
        Fraction of prunable weights to remove, in [0, 1). Give this or ``density``.
    density : float, optional
        Fraction to keep, in (0, 1]; ``density = 1 - sparsity``.
    seed : int, numpy.random.Generator or torch.Generator, default 0
        Source of randomness. Same graph and seed, same masks, byte for byte.
    allocation : {"uniform", "erk", "global"} or dict, default "uniform"
        How the density is spread over blocks. ``"uniform"``: every block at the target density. ``"erk"``:
        Erdos-Renyi-Kernel (Evci et al. 2020), density proportional to ``(sum of dims) / (product of dims)``,
        capped at 1. ``"global"``: one threshold over all blocks' scores. A dict maps parameter (or block) names,
        glob patterns allowed, to densities; unlisted blocks get the target density.
    keep_dense : sequence of str, optional
        Parameter or block names (glob patterns allowed) never pruned; the target density applies to the rest.
    progress : bool, default False
        Show a tqdm progress bar over blocks.

    Notes
    -----
    Constructors only store parameters; everything is validated when :meth:`sparsify` starts.

    References
    ----------
    .. [1] U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen. "Rigging the Lottery: Making All Tickets Winners",
       ICML 2020. (ERK allocation.)
    """

    #: Registry name; set by subclasses.
    name: str | None = None
    #: Whether :meth:`score` gives comparable values across blocks (needed by ``allocation="global"``).
    supports_global: bool = True

    def __init__(self, sparsity=None, *, density=None, seed=0, allocation="uniform", keep_dense=(),
                 progress=False):
        self.sparsity = sparsity
        self.density = density
        self.seed = seed
        self.allocation = allocation
        self.keep_dense = keep_dense
        self.progress = progress

    # -- the plug-in hooks -----------------------------------------------------------------------------------------
    def score(self, ctx: BlockContext) -> torch.Tensor | None:
        """Per-edge scores shaped like ``ctx.weight`` (higher is kept first). Override this or compute_mask."""
        return None

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        """Keep exactly ``k`` of the available edges. Default: the top-k of :meth:`score`."""
        s = self.score(ctx)
        if s is None:
            raise NotImplementedError(f"{type(self).__name__} must implement score() or compute_mask().")
        return topk_mask(s, ctx.available, k)

    # -- parameters (scikit-learn's get_params contract) ----------------------------------------------------------
    #: Constraints of this class's own constructor parameters (name -> list of accepted constraints); merged over
    #: the class hierarchy by :meth:`_validate`. Subclasses declare theirs the same way.
    _parameter_constraints: dict = {
        "sparsity": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "density": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "seed": [Seed()],
        "allocation": [Options(ALLOCATIONS), DensityDict()],
        "keep_dense": [StrList()],
        "progress": [Boolean()],
    }

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Constructor parameter names, from the ``__init__`` signatures of the class and its bases (subclass
        constructors forward ``**kwargs`` to their base)."""
        names = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                    names.append(p.name)
            if klass is Sparsifier:
                break
        return names

    @classmethod
    def _constraints(cls) -> dict:
        out = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("_parameter_constraints", {}))
        return out

    def get_params(self) -> dict:
        """The constructor parameters and their current values (never results such as ``scales_``)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def __repr__(self):
        args = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def target_density(self) -> float:
        cls = type(self).__name__
        s, d = self.sparsity, self.density
        if (s is None) == (d is None):
            raise ParameterError(f"{cls} needs exactly one of 'sparsity' or 'density'. Got sparsity={s!r}, "
                                 f"density={d!r}.")
        cons = {k: [c for c in v if c is not None] for k, v in self._constraints().items()}
        if s is not None:
            check_param("sparsity", s, cons["sparsity"], cls)
            return 1.0 - float(s)
        check_param("density", d, cons["density"], cls)
        return float(d)

    def _validate(self):
        """Check every constructor parameter against its declared constraints; return the target density."""
        cls = type(self).__name__
        d = self.target_density()
        for name, cons in self._constraints().items():
            if name in ("sparsity", "density") or not hasattr(self, name):
                continue
            check_param(name, getattr(self, name), cons, cls)
        if self.allocation == "global" and not self.supports_global:
            raise ParameterError(f"The 'allocation' parameter of {cls} cannot be 'global': {cls} has no scores "
                                 "comparable across blocks. Use 'uniform', 'erk' or a dict.")
        self._validate_extra()
        return d

    def _validate_extra(self) -> None:
        """Checks that involve several parameters (subclasses override). Default: nothing."""

    def _check_names(self, graph, units) -> None:
        """Every name or pattern in ``allocation`` (dict) and ``keep_dense`` must match a parameter or block."""
        names = sorted({n for b in units for n in (b.param, b.name)})
        groups = [("keep_dense", list(self.keep_dense))]
        if isinstance(self.allocation, dict):
            groups.append(("allocation", list(self.allocation)))
        for what, pats in groups:
            for pat in pats:
                if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                    raise ParameterError(
                        f"The pattern {pat!r} in the '{what}' parameter of {type(self).__name__} matches no "
                        f"prunable parameter or block of the graph. Its parameters and blocks: {shown}.")

    def units(self, graph):
        """The prunable units: one weight block per distinct (parameter, row slice); tied uses of a parameter
        share the unit of their first use."""
        seen, out = set(), []
        for b in graph.weight_blocks:
            key = (b.param, b.param_slice)
            if key in seen:
                continue
            seen.add(key)
            out.append(b)
        return out

    def _kept_dense(self, b) -> bool:
        return any(fnmatch.fnmatchcase(n, pat) for pat in self.keep_dense for n in (b.param, b.name))

    def allocate(self, graph, units, d: float) -> dict:
        """Number of edges to keep for each unit (block name -> k)."""
        prunable = [b for b in units if not self._kept_dense(b)]
        ks = {b.name: b.num_edges for b in units if self._kept_dense(b)}
        alloc = self.allocation
        if isinstance(alloc, dict):
            for b in prunable:
                dd = next((v for pat, v in alloc.items() if fnmatch.fnmatchcase(b.param, pat)
                           or fnmatch.fnmatchcase(b.name, pat)), d)
                ks[b.name] = round(dd * b.num_edges)
        elif alloc == "erk":
            ks.update(erk_counts(prunable, d))
        else:  # uniform; "global" is resolved from the scores later
            for b in prunable:
                ks[b.name] = round(d * b.num_edges)
        return ks

    def sparsify(self, graph) -> dict[str, torch.Tensor]:
        """Masks (bool tensors of each parameter's shape, keyed by parameter name) for ``graph``.

        The graph is not modified; combine with ``graph.with_masks(masks)``.
        """
        from ..graph import MultipartiteGraph

        if not isinstance(graph, MultipartiteGraph):
            raise ParameterError(
                f"{type(self).__name__}.sparsify needs a MultipartiteGraph (graphprune.from_model(model, x)). "
                f"Got {type(graph).__name__} instead."
            )
        d = self._validate()
        ss = make_rng(self.seed, owner=type(self).__name__)
        units = self.units(graph)
        if not units:
            raise GraphPruneError("The graph has no prunable (weight) block: nothing to sparsify.")
        self._check_names(graph, units)
        for b in units:
            _check_weights(b)
        self.prepare(graph)
        try:
            return self._masks_for(graph, units, d, ss)
        finally:
            self.release()

    def prepare(self, graph) -> None:
        """Hook run once per :meth:`sparsify`, after validation and before any scoring (e.g. whole-graph
        resistances, saliency scores). Default: nothing."""

    def release(self) -> None:
        """Hook run when :meth:`sparsify` ends, even on error: drop what :meth:`prepare` kept. Default: nothing."""

    def _masks_for(self, graph, units, d, ss):
        ks = self.allocate(graph, units, d)
        rngs = dict(zip([b.name for b in units], (np.random.default_rng(s) for s in ss.spawn(len(units)))))
        ctxs = {}
        for b in units:
            w = b.weight.detach().to("cpu", torch.float64)
            ctxs[b.name] = BlockContext(graph, b, w, graph.block_mask(b).clone(), rngs[b.name])
        todo = [b for b in units if not self._kept_dense(b)]
        if self.allocation == "global":
            ks.update(self._global_counts(todo, ctxs, d))
        masks = graph.masks
        for b in _progress(todo, self.progress, type(self).__name__):
            ctx = ctxs[b.name]
            k = min(int(ks[b.name]), int(ctx.available.sum()))
            if k >= int(ctx.available.sum()):
                m = ctx.available
            else:
                m = self.compute_mask(ctx, k)
                _check_result(self, b, m, ctx, k)
            full = masks[b.param]
            if b.param_slice is not None:
                full[b.param_slice[0] : b.param_slice[1]] &= m
            else:
                full &= m
        return masks

    __call__ = sparsify

    def _global_counts(self, todo, ctxs, d):
        scores, sizes = [], []
        for b in todo:
            s = self.score(ctxs[b.name])
            if s is None:
                raise ParameterError(f"{type(self).__name__} has no score(); allocation='global' needs one.")
            s = s.detach().to(torch.float64).reshape(-1).clone()
            s[~ctxs[b.name].available.reshape(-1)] = -math.inf
            scores.append(s)
            sizes.append(s.numel())
        allv = torch.cat(scores)
        K = round(d * allv.numel())
        if K <= 0:
            return {b.name: 0 for b in todo}
        order = np.argsort(-allv.numpy(), kind="stable")[:K]
        counts = np.bincount(np.searchsorted(np.cumsum(sizes), order, side="right"), minlength=len(todo))
        return {b.name: int(c) for b, c in zip(todo, counts)}


def topk_mask(scores: torch.Tensor, available: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` highest scores among ``available`` (ties broken by position, stably)."""
    s = scores.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
    s[~available.reshape(-1).numpy()] = -np.inf
    keep = np.zeros(s.size, dtype=bool)
    if k > 0:
        keep[np.argsort(-s, kind="stable")[:k]] = True
    return torch.from_numpy(keep).reshape(available.shape)


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


def _check_weights(b):
    w = b.weight
    if w.is_meta:
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) is on the meta device and holds no values. "
                             "Materialise the model first (model.to_empty(device='cpu') and initialise it, or load "
                             "its weights) before sparsifying.")
    if not torch.isfinite(w).all():
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) holds NaN or inf weights; fix the model "
                             "before sparsifying.")
    if w.numel() == 0:
        raise ParameterError(f"Parameter {b.param!r} (block {b.name!r}) is empty.")


def _check_result(sp, b, m, ctx, k):
    if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != tuple(ctx.weight.shape):
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask must return a bool tensor of shape "
                              f"{tuple(ctx.weight.shape)} for block {b.name!r}.")
    if bool((m & ~ctx.available).any()):
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask revived pruned edges in block {b.name!r}.")
    if int(m.sum()) != k:
        raise GraphPruneError(f"{type(sp).__name__}.compute_mask kept {int(m.sum())} edges in block {b.name!r}; "
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


def _progress(items, enabled, desc):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block")
