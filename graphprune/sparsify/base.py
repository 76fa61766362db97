"""The sparsifier protocol: base class, registry, density allocation and seeding.

A sparsifier turns ``(graph, target density, seed)`` into masks keyed by parameter name. A new sparsifier writes
one method: either :meth:`Sparsifier.score` (keep the top-k scores) or :meth:`Sparsifier.compute_mask` (any rule
that keeps exactly ``k`` of the available edges). The base class validates arguments, allocates the density over
blocks, intersects with existing masks (masks only shrink), never prunes identity blocks and derives one random
stream per block from ``seed``.

All-zero blocks
---------------
A block with no non-zero available weight (torchvision's VisionTransformer initialises its head to zero) has
nothing to rank: no magnitude, no saliency, no spectrum. Every sparsifier then keeps the block's budget of ``k``
edges by one rule, :meth:`Sparsifier.zero_block_mask`: ``k`` of its available edges chosen uniformly at random
from the block's own seed stream (the top ``k`` of i.i.d. uniform draws, so the same seed gives the same edges, and
the edges :class:`~graphprune.sparsify.random.RandomSparsifier` would keep), and warns with a RuntimeWarning that
names the block and the rule. The budget itself is the allocation's, as for any block. A sparsifier whose rule needs
no weights keeps it (:class:`~graphprune.sparsify.degree.DegreeSparsifier`); the spectral default samples among the
edges between kept nodes first. Blocks with any non-zero available weight never take this path.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
import numbers
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .._executor import check_executor
from .._validation import (
    ALLOCATIONS,
    Boolean,
    DensityDict,
    Interval,
    Options,
    Seed,
    StrList,
    check_graph,
    check_param,
    seed_sequence,
)
from ..errors import GraphPruneError, ParameterError

__all__ = ["Sparsifier", "BlockContext", "make_rng", "ALLOCATIONS", "topk_mask", "top_flags"]


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
        Signed weights, shaped like the block's parameter slice, on the weight's own device, in the sparsifier's
        ``context_dtype`` (float64 unless a subclass asks otherwise; ``None`` gives a read-only view of the
        model's own tensor).
    available : torch.Tensor
        Bool, same shape, on the CPU: edges still present (the existing mask).
    rng : numpy.random.Generator
        This unit's own random stream.
    stats : graphprune.calibrate.InputStats or None
        Statistics of the unit's input on the calibration data (data-aware sparsifiers only).
    repaired : torch.Tensor or None
        Set by a ``compute_mask`` that also updates the kept weights (SparseGPT): the new weights, shaped like
        ``weight``.
    """

    graph: object
    block: object
    weight: torch.Tensor
    available: torch.Tensor
    rng: np.random.Generator
    stats: object = None
    repaired: torch.Tensor | None = None

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
        Show a tqdm progress bar over blocks (counting blocks as they complete).
    executor : None, "ray" or concurrent.futures.Executor, optional
        Where the per-block work runs: serially here (None), on any ``concurrent.futures.Executor`` (a
        ``ProcessPoolExecutor``, a Dask client's ``get_executor()``) or on the Ray cluster this process is
        connected to (``"ray"``). Each block is one job, a plain function of the block's weight and current mask,
        the sparsifier's parameters, the block's budget and its seed stream, so the masks are byte-identical
        whatever the executor and the number of workers; global allocation runs its two passes as two rounds of
        jobs. Sparsifiers that need the whole graph or the model (``scope="graph"``, spectral when it removes
        nodes (``width="auto"`` below the node count), SNIP,
        GraSP, SynFlow) run serially and warn.

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
                 progress=False, executor=None):
        self.sparsity = sparsity
        self.density = density
        self.seed = seed
        self.allocation = allocation
        self.keep_dense = keep_dense
        self.progress = progress
        self.executor = executor

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

    #: How :meth:`zero_block_mask` chooses, in the warning it comes with ("k of its n edges ...").
    zero_block_rule: str = "chosen uniformly at random from the block's own seed stream"

    def zero_block_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        """Keep exactly ``k`` of the available edges of a unit with no non-zero available weight (nothing to rank).

        Called instead of :meth:`compute_mask`, with a RuntimeWarning naming the block, when ``0 <= k`` is below
        the available edges. Default: ``k`` available edges uniformly at random from the unit's own stream (the
        top ``k`` of i.i.d. uniform draws, ties by position): deterministic for a seed.
        """
        u = torch.from_numpy(ctx.rng.random(ctx.numel)).reshape(ctx.available.shape)
        return topk_mask(u, ctx.available, k)

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
        check_executor(getattr(self, "executor", None), cls)
        self._validate_extra()
        return d

    #: Whether each block's mask depends only on that block (then blocks can run as independent jobs). Sparsifiers
    #: with whole-graph or model state computed in :meth:`prepare` set this to False (or override
    #: :meth:`_distributable`).
    distributable: bool = True

    def _distributable(self) -> bool:
        return self.distributable

    def _streams(self) -> bool:
        """Whether :func:`graphprune.prune` may write each block's mask as it comes (:meth:`iter_masks`); False
        for sparsifiers whose :meth:`sparsify` runs several rounds over the whole graph."""
        return True

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

    def _allocation(self):
        """The allocation in effect (subclasses with an ``"auto"`` default resolve it here)."""
        return self.allocation

    def allocate(self, graph, units, d: float) -> dict:
        """Number of edges to keep for each unit (block name -> k)."""
        prunable = [b for b in units if not self._kept_dense(b)]
        ks = {b.name: b.num_edges for b in units if self._kept_dense(b)}
        alloc = self._allocation()
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
        check_graph(graph, f"{type(self).__name__}.sparsify", "graph")
        d = self._validate()
        ss, units = self._start(graph)
        self.prepare(graph)
        try:
            return self._masks_for(graph, units, d, ss)
        finally:
            self.release()

    def _start(self, graph):
        """``(seed sequence, units)`` once the graph's side is checked: a prunable unit exists, every name in
        ``allocation`` / ``keep_dense`` matches, every weight is materialised and finite."""
        ss = make_rng(self.seed, owner=type(self).__name__)
        units = self.units(graph)
        if not units:
            raise GraphPruneError("The graph has no prunable (weight) block: nothing to sparsify.")
        self._check_names(graph, units)
        for b in units:
            _check_weights(b)
        return ss, units

    def prepare(self, graph) -> None:
        """Hook run once per :meth:`sparsify`, after validation and before any scoring (e.g. whole-graph
        resistances, saliency scores). Default: nothing."""

    def release(self) -> None:
        """Hook run when :meth:`sparsify` ends, even on error: drop what :meth:`prepare` kept. Default: nothing."""

    #: dtype of :attr:`BlockContext.weight` (float64 keeps scores exact; one block at a time). ``None`` keeps the
    #: parameter's own dtype: the context's weight is then a view of the model's storage, not a copy.
    context_dtype: torch.dtype | None = torch.float64

    def _context(self, graph, b, seed_seq) -> BlockContext:
        """One unit's context, built when its turn comes: weights on the weight's own device (in
        :attr:`context_dtype`), the available mask on the CPU, and a fresh random stream from the unit's seed."""
        w = b.weight.detach()
        if self.context_dtype is not None:
            w = w.to(dtype=self.context_dtype)
        return BlockContext(graph, b, w, graph.block_mask(b).clone(), np.random.default_rng(seed_seq))

    def _plan(self, graph, units, d, ss):
        """``(todo, counts, seeds)``: the units to prune, the number of edges each keeps, one seed per unit."""
        ks = self.allocate(graph, units, d)
        seeds = dict(zip([b.name for b in units], ss.spawn(len(units))))
        todo = [b for b in units if not self._kept_dense(b)]
        if self.allocation == "global":
            ks.update(self._global_counts(graph, todo, seeds, d))
        return todo, ks, seeds

    def iter_masks(self, graph, units, d, ss, *, progress=None):
        if getattr(self, "executor", None) is not None:
            if self._distributable():
                yield from self._iter_masks_jobs(graph, units, d, ss, progress=progress)
                return
            warnings.warn(f"{type(self).__name__} needs the whole graph or the model for its scores "
                          f"({self._why_serial()}); its blocks run serially in this process, not on the executor.",
                          RuntimeWarning, stacklevel=3)
        yield from self._iter_masks_serial(graph, units, d, ss, progress=progress)

    def _why_serial(self) -> str:
        return "state computed for the whole graph"

    # -- per-block jobs on an executor ---------------------------------------------------------------------------
    def _job(self, graph, b, seed_seq, kind, **extra) -> dict:
        params = {k: v for k, v in self.get_params().items() if k not in ("executor", "progress")}
        avail = graph.block_mask(b)
        return dict(kind=kind, cls=type(self), params=params, seed=seed_seq, extra=extra,
                    block=dict(name=b.name, param=b.param, layout=b.layout, groups=b.groups, n_src=b.n_src,
                               n_dst=b.n_dst, weight=b.weight.detach().cpu().contiguous()),
                    available=np.packbits(avail.reshape(-1).cpu().numpy()), shape=tuple(avail.shape))

    def _run(self, jobs, graph, progress, what):
        from .._executor import run_jobs

        it = run_jobs(_block_job, jobs, executor=self.executor, describe=_describe_job, owner=type(self).__name__)
        return _progress(it, progress, f"{type(self).__name__} {what}", total=len(jobs))

    def _global_counts_jobs(self, graph, todo, seeds, d):
        """:meth:`_global_counts` as two rounds of jobs: per-block histograms, then per-block counts and the
        candidates inside the threshold's bin; the same split, exactly."""
        sizes = [b.num_edges for b in todo]
        K = round(d * sum(sizes))
        if K <= 0:
            return {b.name: 0 for b in todo}
        hist = np.zeros(_NBINS, dtype=np.int64)
        for _, (bins, counts) in self._run([self._job(graph, b, seeds[b.name], "hist") for b in todo], graph,
                                            False, "histograms"):
            hist[bins] += counts
        above = np.cumsum(hist[::-1])
        j = int(np.searchsorted(above, K))
        edge = _NBINS - 1 - j
        need = K - (int(above[j - 1]) if j > 0 else 0)
        counts, cand = [0] * len(todo), [None] * len(todo)
        jobs = [self._job(graph, b, seeds[b.name], "count", edge=edge) for b in todo]
        for i, (n_above, inside) in self._run(jobs, graph, False, "counts"):
            counts[i], cand[i] = n_above, inside
        keys = np.concatenate(cand)
        unit = np.concatenate([np.full(c.size, i, dtype=np.int64) for i, c in enumerate(cand)])
        chosen = unit[np.argsort(~keys, kind="stable")[:need]]
        extra = np.bincount(chosen, minlength=len(todo))
        return {b.name: counts[i] + int(extra[i]) for i, b in enumerate(todo)}

    def _iter_masks_jobs(self, graph, units, d, ss, *, progress=None):
        ks = self.allocate(graph, units, d)
        seeds = dict(zip([b.name for b in units], ss.spawn(len(units))))
        todo = [b for b in units if not self._kept_dense(b)]
        if self.allocation == "global":
            ks.update(self._global_counts_jobs(graph, todo, seeds, d))
        jobs = [self._job(graph, b, seeds[b.name], "mask", k=int(ks[b.name]), use_global=self.allocation == "global")
                for b in todo]
        show = self.progress if progress is None else progress
        for i, (bits, scale, zero) in self._run(jobs, graph, show, "blocks"):
            b = todo[i]
            if zero:  # warned here, not in the worker (whose warnings would stay in its process)
                _warn_zero_block(self, b, *zero)
            m = torch.from_numpy(np.unpackbits(bits, count=b.num_edges).astype(bool)).reshape(b.weight.shape)
            if scale is not None:
                full = self.scales_.setdefault(b.param, torch.ones(graph.param_shapes[b.param], dtype=torch.float64))
                if b.param_slice is not None:
                    full[b.param_slice[0] : b.param_slice[1]] = scale
                else:
                    full.copy_(scale)
            yield b, m

    def _iter_masks_serial(self, graph, units, d, ss, *, progress=None):
        """Yield ``(block, mask)`` unit by unit, each mask shaped like ``block.weight``.

        A unit's context lives only while its mask is computed, so memory stays proportional to the largest
        block. Used by :meth:`sparsify` and by :func:`graphprune.prune` (which zeroes each block in place before
        the next one starts).
        """
        todo, ks, seeds = self._plan(graph, units, d, ss)
        show = self.progress if progress is None else progress
        for b in _progress(todo, show, type(self).__name__):
            ctx = self._context(graph, b, seeds[b.name])
            if self.allocation == "global":
                self.score(ctx)  # the stream has drawn once for the threshold: keep the historical rng state
            m, zero = _unit_mask(self, ctx, int(ks[b.name]))
            if zero:
                _warn_zero_block(self, b, *zero)
            self.block_done(b)
            del ctx
            yield b, m
            del m  # hold no block's mask while the next one is computed

    def block_done(self, block) -> None:
        """Hook run after a unit's mask is computed: drop what was cached for ``block``. Default: nothing."""

    def _masks_for(self, graph, units, d, ss):
        masks = graph.masks
        for b, m in self.iter_masks(graph, units, d, ss):
            full = masks[b.param]
            if b.param_slice is not None:
                full[b.param_slice[0] : b.param_slice[1]] &= m
            else:
                full &= m
        return masks

    __call__ = sparsify

    def _global_scores(self, graph, b, seed_seq):
        s = self.score(self._context(graph, b, seed_seq))
        if s is None:
            raise ParameterError(f"{type(self).__name__} has no score(); allocation='global' needs one.")
        s = s.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        s[~graph.block_mask(b).reshape(-1).numpy()] = -np.inf
        return s

    def _global_counts(self, graph, todo, seeds, d):
        """Edges kept per unit under one global threshold, in two passes over the blocks (no concatenation).

        Pass 1 histograms order-preserving 64-bit keys of every score on their top 20 bits; the bin holding the
        K-th largest score is then known. Pass 2 counts, per unit, the scores above that bin and gathers only the
        scores inside it; a stable sort of those candidates gives the exact split. The result equals a stable
        argsort of all scores concatenated in unit order (ties go to the earlier unit and position).
        """
        sizes = [b.num_edges for b in todo]
        K = round(d * sum(sizes))
        if K <= 0:
            return {b.name: 0 for b in todo}
        hist = np.zeros(_NBINS, dtype=np.int64)
        for b in todo:
            top = (_sort_keys(self._global_scores(graph, b, seeds[b.name])) >> _SHIFT).astype(np.int64)
            hist += np.bincount(top, minlength=_NBINS)
        above = np.cumsum(hist[::-1])  # above[j]: scores in the top j + 1 bins
        j = int(np.searchsorted(above, K))  # the K-th largest lies in bin NBINS - 1 - j
        edge = _NBINS - 1 - j
        need = K - (int(above[j - 1]) if j > 0 else 0)
        counts, cand_keys, cand_unit = [], [], []
        for i, b in enumerate(todo):
            bins = _sort_keys(self._global_scores(graph, b, seeds[b.name]))
            hi = (bins >> _SHIFT).astype(np.int64)
            counts.append(int(np.count_nonzero(hi > edge)))
            inside = bins[hi == edge]
            cand_keys.append(inside)
            cand_unit.append(np.full(inside.size, i, dtype=np.int64))
        keys, unit = np.concatenate(cand_keys), np.concatenate(cand_unit)
        chosen = unit[np.argsort(~keys, kind="stable")[:need]]  # ~key: descending keys, stable by position
        extra = np.bincount(chosen, minlength=len(todo))
        return {b.name: counts[i] + int(extra[i]) for i, b in enumerate(todo)}


_SHIFT = np.uint64(44)  # histogram on the top 20 bits of the 64-bit sort keys
_NBINS = 1 << 20


def _sort_keys(x: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like the float64 values ``x`` (NaN lowest, below -inf, like a descending argsort;
    -0.0 and 0.0 equal)."""
    x = np.asarray(x, dtype=np.float64)
    bits = (x + 0.0).view(np.uint64)
    flip = np.uint64(0) - (bits >> np.uint64(63))  # all ones for negatives, 0 otherwise
    flip |= np.uint64(1 << 63)
    bits ^= flip  # negatives: ~bits; positives: bits with the sign bit set
    bits[np.isnan(x)] = 0
    return bits


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
    hist = np.zeros(_NBINS, dtype=np.int64)
    for a in range(0, n, chunk):
        hist += np.bincount((_sort_keys(x[a : a + chunk]) >> _SHIFT).astype(np.int64), minlength=_NBINS)
    above = np.cumsum(hist[::-1])
    j = int(np.searchsorted(above, k))
    edge = _NBINS - 1 - j
    need = k - (int(above[j - 1]) if j > 0 else 0)
    pos, keys = [], []
    for a in range(0, n, chunk):
        sk = _sort_keys(x[a : a + chunk])
        hi = (sk >> _SHIFT).astype(np.int64)
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


def _describe_job(job) -> str:
    b = job["block"]
    what = {"mask": "mask", "hist": "score histogram", "count": "threshold count"}[job["kind"]]
    return f"{job['cls'].__name__} {what} of block {b['name']!r} ({b['param']}, shape {tuple(b['weight'].shape)})"


def _block_job(job):
    """One block's work, in any process: rebuild a one-block graph from the job's weight and mask, then score or
    mask it with a fresh sparsifier of the same parameters and the block's own seed stream."""
    from ..graph import Block, MultipartiteGraph, Partition

    b = job["block"]
    shape = job["shape"]
    avail = torch.from_numpy(np.unpackbits(job["available"], count=int(np.prod(shape))).astype(bool)).reshape(shape)
    block = Block(b["name"], "src", "dst", param=b["param"], weight=b["weight"], layout=b["layout"],
                  groups=b["groups"])
    G = MultipartiteGraph([Partition("src", b["n_src"], "input"), Partition("dst", b["n_dst"], "output")], [block],
                          masks={b["param"]: avail})
    sp = job["cls"](**job["params"])
    sp.prepare(G)
    try:
        if job["kind"] == "hist":
            top = (_sort_keys(sp._global_scores(G, block, job["seed"])) >> _SHIFT).astype(np.int64)
            bins, counts = np.unique(top, return_counts=True)
            return bins, counts
        if job["kind"] == "count":
            keys = _sort_keys(sp._global_scores(G, block, job["seed"]))
            hi = (keys >> _SHIFT).astype(np.int64)
            return int(np.count_nonzero(hi > job["extra"]["edge"])), keys[hi == job["extra"]["edge"]]
        ctx = sp._context(G, block, job["seed"])
        if job["extra"]["use_global"]:
            sp.score(ctx)  # the serial path draws once for the threshold: the same stream state here
        m, zero = _unit_mask(sp, ctx, job["extra"]["k"])
        scale = getattr(sp, "scales_", {}).get(b["param"]) if getattr(sp, "reweight", False) else None
        return np.packbits(m.reshape(-1).cpu().numpy()), scale, zero
    finally:
        sp.release()


def _progress(items, enabled, desc, total=None):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block", total=total)
