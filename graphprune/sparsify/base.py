"""The sparsifier protocol: the base class, its one streaming driver, and the compute_mask contract.

A sparsifier turns ``(graph, target density, seed)`` into masks keyed by parameter name. A new sparsifier writes
one method: either :meth:`Sparsifier.score` (keep the top-k scores) or :meth:`Sparsifier.compute_mask` (any rule
that keeps exactly ``k`` of the available edges). The base class validates arguments, allocates the density over
blocks, intersects with existing masks (masks only shrink), never prunes identity blocks and derives one random
stream per block from ``seed``. :meth:`Sparsifier.iter_masks` is the driver: it yields the masks block by block
(:meth:`Sparsifier.sparsify` collects them; :func:`graphprune.prune` writes each into the model as it comes).

The other parts live by job: :mod:`.allocation` (ERK budgets, the global threshold), :mod:`.sampling` (top-k
selection, weighted sampling) and :mod:`.jobs` (per-block jobs for executors). Their public names are importable
from here too.

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
import numbers
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
from .allocation import erk_counts, global_counts, igq_counts, key_histogram, threshold_counts
from .sampling import top_flags, top_indices, topk_mask
from .units import (
    _check_weights,
    _progress,
    _short_repr,
    _unit_mask,
    _warn_zero_block,
    unit_seeds,
    user_stacklevel,
)

__all__ = ["Sparsifier", "BlockContext", "make_rng", "ALLOCATIONS", "topk_mask", "top_flags", "top_indices",
           "erk_counts"]


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
    allocation : {"uniform", "erk", "igq", "global"} or dict, default "uniform"
        How the density is spread over blocks. ``"uniform"``: every block at the target density. ``"erk"``:
        Erdos-Renyi-Kernel (Evci et al. 2020), density proportional to ``(sum of dims) / (product of dims)``,
        capped at 1. ``"igq"``: Ideal Gas Quotas (Vysogorets and Kempe 2023), a block of ``n`` weights keeps
        ``n / (1 + F n)`` (:func:`~graphprune.sparsify.allocation.igq_counts`): small blocks stay nearly dense
        and at extreme sparsity every block keeps about the same count. ``"global"``: one threshold over all
        blocks' scores. A dict maps parameter (or block) names, glob patterns allowed, to densities; unlisted
        blocks get the target density.
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

    def validate(self) -> float:
        """Check every constructor parameter against its declared constraints; return the target density.

        :meth:`iter_masks` and :meth:`sparsify` call it first; call it yourself to find argument errors before a
        long step (an export) that comes first.

        Returns
        -------
        float
            The fraction of prunable weights to keep.

        Raises
        ------
        ParameterError
            A parameter out of its constraints, naming it, the constraint and the value received.
        """
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
        """Whether :meth:`iter_masks` can compute each block's mask when its turn comes; False for sparsifiers
        whose :meth:`sparsify` runs several rounds over the whole graph (their masks are computed first)."""
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

    def keeps_dense(self, block) -> bool:
        """Whether ``block`` is never pruned: ``keep_dense`` names its parameter or the block (glob patterns)."""
        return any(fnmatch.fnmatchcase(n, pat) for pat in self.keep_dense for n in (block.param, block.name))

    def _allocation(self):
        """The allocation in effect (subclasses with an ``"auto"`` default resolve it here)."""
        return self.allocation

    def allocate(self, graph, units, d: float) -> dict:
        """Number of edges to keep for each unit (block name -> k)."""
        prunable = [b for b in units if not self.keeps_dense(b)]
        ks = {b.name: b.num_edges for b in units if self.keeps_dense(b)}
        alloc = self._allocation()
        if isinstance(alloc, dict):
            for b in prunable:
                dd = next((v for pat, v in alloc.items() if fnmatch.fnmatchcase(b.param, pat)
                           or fnmatch.fnmatchcase(b.name, pat)), d)
                ks[b.name] = round(dd * b.num_edges)
        elif alloc == "erk":
            ks.update(erk_counts(prunable, d))
        elif alloc == "igq":
            ks.update(igq_counts(prunable, d))
        else:  # uniform; "global" is resolved from the scores later
            for b in prunable:
                ks[b.name] = round(d * b.num_edges)
        return ks

    # -- the driver ----------------------------------------------------------------------------------------------
    def iter_masks(self, graph, *, by: str = "block", in_place: bool = False):
        """Compute the masks for ``graph`` block by block and yield each as soon as it is known.

        The one driver of the protocol: the same validation, budgets, seed streams and intersection with the
        graph's existing masks as :meth:`sparsify` (which collects ``iter_masks(graph, by="param")``).

        Parameters
        ----------
        graph : MultipartiteGraph
        by : {"block", "param"}, default "block"
            ``"block"``: ``(block, mask)`` for each pruned unit (:meth:`units` not kept dense), in the graph's
            block order (with an ``executor``: as the jobs finish); ``mask`` is shaped like ``block.weight``.
            ``"param"``: ``(name, mask)`` for every parameter of ``graph.params``, in that order, each the full
            mask of the parameter (its current mask, intersected with its units' masks) as soon as its last unit
            is done.
        in_place : bool, default False
            The caller writes each mask into the model before it asks for the next (as
            ``graphprune.prune(permanent=True)`` does): data-aware sparsifiers then gather their statistics on
            the model itself instead of on a copy.

        Yields
        ------
        tuple of (Block, torch.Tensor) or (str, torch.Tensor)
            Bool masks; nothing of a block's work stays alive once the next block starts.

        Raises
        ------
        ParameterError
            Bad parameters, or names in ``keep_dense`` / ``allocation`` that match nothing (raised by the call,
            before anything is computed).
        GraphPruneError
            A graph with no prunable block, or a ``compute_mask`` that breaks its contract.

        Notes
        -----
        Memory: one block's context at a time (its weights in ``context_dtype``, its scores and mask); whole-graph
        state only where the sparsifier's :meth:`prepare` computes it. A sparsifier whose :meth:`sparsify` runs
        several rounds over the whole graph (spectral with ``iterations > 1``) computes every mask first, then
        yields them. The graph is not modified.

        Examples
        --------
        >>> import torch, graphprune
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        >>> G = graphprune.from_model(net, torch.randn(1, 8))
        >>> sp = graphprune.get_sparsifier("magnitude")(sparsity=0.75)
        >>> [(b.param, int(m.sum())) for b, m in sp.iter_masks(G)]
        [('0.weight', 32), ('2.weight', 16)]
        >>> [(name, tuple(m.shape)) for name, m in sp.iter_masks(G, by="param")]
        [('0.weight', (16, 8)), ('2.weight', (4, 16))]
        """
        cls = f"{type(self).__name__}.iter_masks"
        check_param("by", by, [Options(("block", "param"))], cls)
        check_param("in_place", in_place, [Boolean()], cls)
        return self._iter(graph, by, in_place, cls)

    def sparsify(self, graph) -> dict[str, torch.Tensor]:
        """Masks (bool tensors of each parameter's shape, keyed by parameter name) for ``graph``.

        ``dict(self.iter_masks(graph, by="param"))``. The graph is not modified; combine with
        ``graph.with_masks(masks)``.
        """
        return dict(self._iter(graph, "param", False, f"{type(self).__name__}.sparsify"))

    __call__ = sparsify

    def _iter(self, graph, by, in_place, owner):
        """:meth:`iter_masks` once its own arguments are checked: the checks of the parameters and the graph run
        here, before the generator starts."""
        check_graph(graph, owner, "graph")
        d = self.validate()
        ss, units = self._start(graph)
        pairs = self._stream(graph, units, d, ss, in_place)
        return self._param_masks(graph, units, pairs) if by == "param" else pairs

    def _stream(self, graph, units, d, ss, in_place):
        """``(block, mask)`` per pruned unit: :meth:`prepare`, the blocks, :meth:`release` (even on error)."""
        if in_place:
            self._in_place = True
        try:
            if not self._streams():  # several rounds over the whole graph: every mask first
                masks = self.sparsify(graph)
                for b in units:
                    if not self.keeps_dense(b):
                        m = masks[b.param]
                        yield b, b.rows(m)
                return
            self.prepare(graph)
            try:
                yield from self._blocks(graph, units, d, ss)
            finally:
                self.release()
        finally:
            if in_place:
                del self._in_place  # a later sparsify() with the same instance works on a copy again

    def _param_masks(self, graph, units, pairs):
        """``(name, full mask)`` for every parameter, in ``graph.params`` order, from the units' ``(block, mask)``
        pairs: each parameter as soon as it and the parameters before it have no unit left to come."""
        left = {}
        for b in units:
            if not self.keeps_dense(b):
                left[b.param] = left.get(b.param, 0) + 1
        order, at, partial = graph.params, 0, {}
        for b, m in pairs:
            full = partial.get(b.param)
            if full is None:
                full = partial[b.param] = graph.param_mask(b.param).clone()
            b.and_rows(full, m)
            left[b.param] -= 1
            del m, full  # nothing of this block stays alive while the next one is computed
            while at < len(order) and not left.get(order[at]):
                name, at = order[at], at + 1
                yield name, partial.pop(name) if name in partial else graph.param_mask(name).clone()
        for name in order[at:]:  # kept dense, or no pruned unit after the last one done
            yield name, partial.pop(name) if name in partial else graph.param_mask(name).clone()

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
        """Hook run once per pass of :meth:`iter_masks` (and so of :meth:`sparsify`), after validation and before
        any scoring (e.g. whole-graph resistances, saliency scores). Default: nothing."""

    def release(self) -> None:
        """Hook run when the pass ends, even on error or when the caller stops early: drop what :meth:`prepare`
        kept. Default: nothing."""

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

    def _plan(self, graph, units, d, ss, *, counts=None):
        """``(todo, counts, seeds)``: the units to prune, the number of edges each keeps, one seed per unit.
        ``counts(graph, todo, seeds, d)`` splits a global allocation (default: :meth:`_global_counts`, here)."""
        ks = self.allocate(graph, units, d)
        seeds = unit_seeds(ss, units)
        todo = [b for b in units if not self.keeps_dense(b)]
        if self.allocation == "global":
            ks.update((counts or self._global_counts)(graph, todo, seeds, d))
        return todo, ks, seeds

    def _blocks(self, graph, units, d, ss, *, progress=None):
        """``(block, mask)`` per pruned unit of a prepared graph: per-block jobs on the ``executor`` when every
        block's mask depends only on that block, else the serial driver. Subclasses with their own order
        (calibration stages) override this."""
        if getattr(self, "executor", None) is not None:
            if self._distributable():
                from .jobs import iter_job_masks

                yield from iter_job_masks(self, graph, units, d, ss, progress=progress)
                return
            warnings.warn(f"{type(self).__name__} needs the whole graph or the model for its scores "
                          f"({self._why_serial()}); its blocks run serially in this process, not on the executor.",
                          RuntimeWarning, stacklevel=user_stacklevel())
        yield from self._iter_masks_serial(graph, units, d, ss, progress=progress)

    def _why_serial(self) -> str:
        return "state computed for the whole graph"

    def _iter_masks_serial(self, graph, units, d, ss, *, progress=None):
        """Yield ``(block, mask)`` unit by unit, each mask shaped like ``block.weight``.

        A unit's context lives only while its mask is computed, so memory stays proportional to the largest
        block.
        """
        todo, ks, seeds = self._plan(graph, units, d, ss)
        show = self.progress if progress is None else progress
        for b in _progress(todo, show, type(self).__name__):
            ctx = self._context(graph, b, seeds[b.name])
            if self.allocation == "global":
                # the threshold pass drew this block's scores from a fresh copy of its stream; drawing them again
                # here puts the stream where it has always been when the mask is chosen (for random scores the
                # mask depends on it: the reference masks change without this draw)
                self.score(ctx)
            m, zero = _unit_mask(self, ctx, int(ks[b.name]))
            if zero:
                _warn_zero_block(self, b, *zero)
            self.block_done(b)
            del ctx
            yield b, m
            del m  # hold no block's mask while the next one is computed

    def block_done(self, block) -> None:
        """Hook run after a unit's mask is computed: drop what was cached for ``block``. Default: nothing."""

    def _global_scores(self, graph, b, seed_seq):
        s = self.score(self._context(graph, b, seed_seq))
        if s is None:
            raise ParameterError(f"{type(self).__name__} has no score(); allocation='global' needs one.")
        s = s.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        s[~graph.block_mask(b).reshape(-1).numpy()] = -np.inf
        return s

    def _global_counts(self, graph, todo, seeds, d):
        """Edges kept per unit under one global threshold (:func:`~graphprune.sparsify.allocation.global_counts`),
        each pass scoring the blocks one at a time in this process."""
        def histograms():
            return ((i, key_histogram(self._global_scores(graph, b, seeds[b.name]))) for i, b in enumerate(todo))

        def counts(edge):
            return ((i, threshold_counts(self._global_scores(graph, b, seeds[b.name]), edge))
                    for i, b in enumerate(todo))

        return global_counts([b.name for b in todo], round(d * sum(b.num_edges for b in todo)), histograms, counts)
