"""Spectral sparsification by effective resistances (Spielman & Srivastava): an effective width below the node
count (the default), or the paper's plain per-layer sampling; one shot or iterative, per block or whole graph.

The package: :class:`SpectralSparsifier` (here: parameters, the two variants, the paper's per-layer sampling),
:mod:`.width` (which nodes stay, their budgets and the masks among them, as functions of explicit arguments) and
:mod:`.leverage` (``|w_e| R_e`` and the resistance :class:`~.leverage.Engine`).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import torch

from ..._validation import (
    ALLOCATIONS,
    RESISTANCE_BACKENDS,
    RESISTANCE_METHODS,
    SAMPLINGS,
    SCOPES,
    VIEWS,
    WIDTHS,
    Boolean,
    DensityDict,
    Dtype,
    Interval,
    Options,
)
from ...errors import ParameterError
from ...graph_resistance import effective_resistance
from ..base import BlockContext, Sparsifier
from ..registry import register
from ..sampling import inclusion_probabilities, topk_mask, weighted_sample
from ..units import has_nonzero
from . import width as _width
from .leverage import Engine, leverage_in_place

__all__ = ["SpectralSparsifier"]


@register
class SpectralSparsifier(Sparsifier):
    r"""Spectral sparsification by effective resistances: keep ``k`` edges per block sampled with probability
    proportional to ``w_e R_e``; by default first choose an effective width when the budget is below the node count.

    Two variants, one option apart:

    - ``width="auto"`` (the default, the best spectral method of the MNIST-1D study, docs/source/guides/study.md): when
      the budget is below ``edges_per_node`` edges per node, keep only the nodes of highest *leverage* in each hidden
      layer (a node's share of ``sum |w_e| R_e`` of its adjacent blocks; by Foster's theorem a block's leverages sum to
      ``N - 1``), the same fraction in every hidden layer and consistently across flatten and residual edges
      (``channels=True`` counts a flattened feature map by its channels); give each block an ERK budget capped at the
      edges among its kept nodes and at least the edges that cover them (``cover``); cover every kept node with its best
      edge (``guard``); sample the rest by ``w_e R_e`` with resistances of the kept subgraph. With at least
      ``edges_per_node`` edges per node no node is removed and this is guarded spectral sampling under ERK budgets.
    - ``width="all"``: the paper's plain per-layer sampling (Laenen 2023): every node stays, uniform budgets,
      no guard; this is also where the other options live (``view="rolled"``, ``scope="graph"``,
      ``sampling="with_replacement"``, ``reweight=True``, ``allocation="global"``).

    Parameters
    ----------
    sparsity, density, seed, keep_dense, progress, executor
        See :class:`~graphprune.sparsify.Sparsifier`.
    width : {"auto", "all"}, default "auto"
        Choose an effective width below the node count (``"auto"``) or keep every node (``"all"``, the paper's).
    allocation : {"auto", "uniform", "erk", "igq", "nodes", "global"} or dict, default "auto"
        ``"auto"``: ``"erk"`` with ``width="auto"`` (ERK keeps about ``sum(shape)`` edges per block, budgets in
        proportion to the block's node count, the quantity a connected sparsifier needs), ``"uniform"`` with
        ``width="all"``. ``"nodes"`` (``width="auto"`` only): budgets in proportion to the block's *kept* nodes (a
        connected sparsifier on ``n`` nodes needs at least ``n - 1`` edges). Under ``width="auto"`` ERK and
        nodes budgets are capped at the edges among the kept nodes and water-filled; uniform and dict budgets
        are kept as given. ``"global"`` (``width="all"`` only): one threshold over all blocks' leverages.
    guard : bool or "auto", default "auto"
        Keep one edge per node before sampling. ``"auto"``: True with ``width="auto"`` (a greedy edge cover of the
        kept nodes), False with ``width="all"`` (the paper's; True keeps the best edge of each node).
    edges_per_node : float, default 8.0
        ``width="auto"``: target edges per kept node (average degree ``2 * edges_per_node``); 1 is a spanning-tree
        budget. In a sweep on MNIST-1D (MLP, 100x-1000x, one seed) 4 to 8 did best, 1-2 and 16-32 worse.
    min_nodes : int or "auto", default "auto"
        ``width="auto"``: the fewest nodes a reduced hidden partition keeps. ``"auto"``: 1 on a network with a
        flattened ``C x H x W`` map with ``4 H W >= C`` (see ``channels``), 4 otherwise (the default before
        2026-12-02). ``min_nodes=1`` on every network (study, 3 seeds) cost the MNIST-1D CNN 10.3 points at 1000x
        (22.1% against 32.4%, one seed at chance with a one-channel bottleneck) and the small conv1d 7.2 points
        at 31.6x; with channels counted it helps the 2-D CNN from 316x (47.4% against 34.3% with one channel).
    cover : bool, default True
        ``width="auto"``: where nodes are removed and the total allows, give each block at least
        ``max(kept sources, kept destinations)`` edges (sources only in a hidden layer; a flattened map counted by
        its kept channels), the size of the greedy edge cover, so every kept node, and every output, lies on an
        input-output path (blocks below it are held there and the rest water-filled again). ``False`` is the rule
        before 2026-12, under which a small 2-D CNN (34,312 weights) kept one edge or none in its first
        convolution and four in its 10-class output layer at 316x (layer collapse). Where the budgets already
        cover the kept nodes (the MNIST-1D study's MLP and CNN at every compression) both give the same masks.
    channels : bool or "auto", default "auto"
        ``width="auto"``: count a flattened feature map by its channels. A partition reached only through
        identity edges counts as the nodes that feed it when they are fewer (a flattened ``C x H x W`` map counts
        ``C``: its positions are copies of the channels before it) in the edges per node ``E`` that sets the
        width and in the ERK budgets (the Linear after the flatten counts ``C`` inputs, not ``C H W``).
        ``"auto"`` does so only where ``4 H W >= C`` (and ``H W > 1``;
        :func:`~graphprune.sparsify.spectral.width.spatial_flattens`: 16 channels of 64 positions, 32 of 16, not
        the MNIST-1D CNN's 256 of 10, where counting by channels cost 4.5 points at 316x, nor VGG's 512 of 49);
        ``True`` for every flatten, ``False`` never (the default before 2026-12-02, named
        ``spectral-positions`` in the study).
        ``"auto"`` became the default after registered tests on networks not used to choose it
        (docs/source/guides/study.md, 3 seeds, mean test accuracy at initialisation): on nine networks where it
        applies it was above ``False`` in 40 of 45 cells and equal in two (at 100x, 42-82% against 14-28% on
        the 2-D CNNs), though not at or above iterative SynFlow everywhere from 100x (75.0% against 77.9% at
        100x on one, 33.9% against 39.8% on a 1-D CNN). With ``min_nodes="auto"`` its masks are those of ``False, 4`` on
        every network without such a flatten, and of ``True, 1`` on every network with one. Networks with no
        flatten of a spatial map (MLPs, transformers, global-pooling CNNs) get the same masks either way.
    positive_paths : bool or "auto", default "auto"
        ``width="auto"``, where nodes are removed: choose the kept nodes and edges so that a rectified network's
        kept paths pass a signal at initialisation. ``True`` wherever nodes are removed (the setting for pruning at
        initialisation); ``"auto"`` only on a network whose narrowest reduced layer keeps at most
        :data:`~graphprune.sparsify.spectral.width.NARROW_NODES` (3) nodes
        (:func:`~graphprune.sparsify.spectral.width.resolve_positive`), which with ``min_nodes="auto"`` happens only
        on CNNs with a flatten of a spatial map at high compression; ``False`` never. The fitted
        ``positive_paths_`` says whether it applied. A hidden layer fed by a hidden layer keeps first the nodes
        whose summed in-weight from the kept nodes is positive and whose bias is not negative, then those with a
        positive sum, then the rest (leverage orders each tier;
        :func:`~graphprune.sparsify.spectral.width.positive_tiers`); the cover and the sampling take positive
        edges out of hidden layers first (a negative edge's leverage times
        :data:`~graphprune.sparsify.spectral.width.NEGATIVE_FACTOR`). The premise is non-negative hidden inputs
        (ReLU, its pooling and flatten) and no normalisation between a layer and its rectifier: a node whose kept
        in-weights sum below zero, or whose negative bias outweighs inputs that pruning has shrunk, then outputs
        zero for every input and the paths through it are dead, which neither ``|w|``-based spectral sampling nor
        SynFlow sees. A layer of one to three kept nodes is wholly silenced with high probability (each node is,
        with probability about one half at initialisation). On trained networks the rule costs accuracy where the
        kept layers are wider (the MNIST-1D CNN after training, 100x: 20.5% against 28.9%), hence ``"auto"``.
        Biases come from :attr:`Block.bias <graphprune.graph.Block.bias>` (0 where the export found none).
        Measured in docs/source/guides/study.md ("Why runs train to chance", the sixth and seventh questions).
    iterations : int, default 1
        One shot (1), or rounds at densities ``d^(r / iterations)``, each recomputing widths and resistances on
        the graph kept so far (the exponential schedule of iterative SynFlow). Either width.
    view : {"channel", "rolled"}, default "channel"
        Node view of convolution blocks for the resistances. Channel: nodes are channels, the ``prod(k)``
        parallel edges of a channel pair share its resistance (each keeps its own ``|w|``). Rolled
        (``width="all"``): sources are (channel, kernel tap) pairs, no parallel edges.
    scope : {"block", "graph"}, default "block"
        Resistances of each block's own bipartite graph (the paper's per-layer setting), or of the whole
        multipartite graph (``width="all"``; identity edges included; exact or JL by size, see ``resistance``).
    resistance : {"auto", "exact", "degree", "jl"}, default "auto"
        Effective-resistance engine (:func:`graphprune.effective_resistance`). ``"auto"`` is exact for every block
        whose exact engine costs at most 2^34 flops (about 17 GFLOP: up to 1024 x 4096) and fits in memory, and the
        degree approximation ``1/d_i + 1/d_j`` above (the blocks of LLMs; its sampling distribution is within a
        total variation distance of 1.6e-4 of exact on such blocks at random init); the rule and its measurements
        are in :func:`~graphprune.resistance.choose_method`. ``resistance_method_`` records each block's engine.
    sampling : {"without_replacement", "with_replacement"}, default "without_replacement"
        ``"with_replacement"`` (``width="all"``) is the original algorithm: i.i.d. draws from ``p`` until ``k``
        distinct edges are drawn (``q`` draws). ``"without_replacement"`` is successive sampling proportional to
        ``p``, done in one pass with Efraimidis-Spirakis keys ``u^(1/p_e)`` (top-k); it gives exactly ``k`` edges
        with no loop. Both favour high-leverage edges; the second never wastes draws on repeats.
    reweight : bool, default False
        ``width="all"``: record importance weights in ``scales_`` (parameter -> tensor): ``c_e / (q p_e)`` for
        draws with replacement (``c_e`` the multiplicity), ``1 / pi_e`` otherwise, with
        ``pi_e = 1 - (1 - p_e)^q`` and ``q`` chosen so that the inclusion probabilities sum to ``k``. This is the
        unbiased Laplacian estimator of Spielman-Srivastava; ``apply_masks(..., scales=sp.scales_)`` writes it
        into the model.
    dtype : torch.dtype, optional
        Resistances' dtype: float64 for CPU weights and float32 on CUDA unless given (``torch.float32`` halves
        the engine's memory and is about twice as fast on the CPU, at about 1e-4 relative error).
    backend : {"auto", "scipy", "torch"}, default "auto"
        Exact block engine: LAPACK through scipy on the CPU, torch where the weights live otherwise (a model on
        CUDA is sparsified on CUDA). ``"torch"`` runs the torch engine on the CPU too.

    Attributes
    ----------
    width_ : dict of str to float
        After :meth:`sparsify`: the fraction of nodes kept per partition (all 1.0 with ``width="all"``).
    scales_ : dict of str to torch.Tensor
        With ``reweight=True``: the importance weights.
    resistance_method_ : dict of str to str
        The engine each block's resistances came from (serial runs).

    Notes
    -----
    ``p_e = w_e R_e / sum(w R)``; on a connected block ``sum(w R) = N - 1`` (Foster's theorem). Existing
    masks are respected: resistances are those of the currently kept graph. A block with no non-zero available
    weight (a zero-initialised head) has no spectrum: its leverage is 0 and it keeps its budget of ``k`` edges
    chosen uniformly at random from its own seed stream (with ``width="auto"``, among the edges between kept nodes
    first), with a RuntimeWarning naming it (:meth:`zero_block_mask`); with ``reweight=True`` its scales stay 1. A
    block whose ``|w|`` are all equal is sampled as any other (its resistances are defined). With ``width="auto"``
    the blocks run as independent jobs on an ``executor`` when no node is removed (the usual case at LLM densities);
    when nodes are removed the choice is over the whole graph and the blocks run serially. Cost: with nodes removed,
    two exact resistance computations per block (full and induced). Memory at LLM densities (no node removed, every
    edge available, a dense block): one float64 array per edge (the exact engine works in the biadjacency's own
    storage, the leverage is formed there, then the sampling keys), two bool arrays and the engine's two
    ``n x n`` factors; ``dtype=torch.float32`` adds a float32 array while the leverage is formed. A depthwise
    convolution's one-edge components are solved at once (``R = 1/w``).

    References
    ----------
    .. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
       2011. doi:10.1137/080734029
    .. [2] P. S. Efraimidis, P. G. Spirakis. "Weighted random sampling with a reservoir", Inf. Process. Lett.
       97(5), 2006. doi:10.1016/j.ipl.2005.11.003
    .. [3] S. Laenen. "One-Shot Neural Network Pruning via Spectral Graph Sparsification", TAG-ML workshop,
       ICML 2023.
    .. [4] U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen. "Rigging the Lottery: Making All Tickets Winners",
       ICML 2020. doi:10.48550/arXiv.1911.11134 (ERK budgets.)
    .. [5] H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli. "Pruning neural networks without any data by
       iteratively conserving synaptic flow", NeurIPS 2020. doi:10.48550/arXiv.2006.05467 (The exponential
       schedule of ``iterations``.)

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    >>> G = graphprune.from_model(net, torch.randn(1, 16))
    >>> sp = graphprune.get_sparsifier("spectral")(sparsity=0.98, seed=0)
    >>> masks = sp.sparsify(G)
    >>> round(sp.width_["0"], 3), int((masks["0.weight"].any(1)).sum())
    (0.062, 4)
    >>> paper = graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0, width="all")
    >>> [int(m.sum()) for m in paper.values()]
    [102, 26]
    """

    name = "spectral"
    context_dtype = None  # the weights as they are: |w| is exact in float64 whatever their dtype

    def __init__(self, sparsity=None, *, width="auto", allocation="auto", guard="auto", edges_per_node=8.0,
                 min_nodes="auto", cover=True, channels="auto", positive_paths="auto", iterations=1, view="channel",
                 scope="block", resistance="auto", sampling="without_replacement", reweight=False, dtype=None,
                 backend="auto", **kwargs):
        super().__init__(sparsity, allocation=allocation, **kwargs)
        self.width = width
        self.guard = guard
        self.edges_per_node = edges_per_node
        self.min_nodes = min_nodes
        self.cover = cover
        self.channels = channels
        self.positive_paths = positive_paths
        self.iterations = iterations
        self.view = view
        self.scope = scope
        self.resistance = resistance
        self.sampling = sampling
        self.reweight = reweight
        self.dtype = dtype
        self.backend = backend

    _parameter_constraints = {
        "width": [Options(WIDTHS)],
        "allocation": [Options(("auto",) + tuple(ALLOCATIONS) + ("nodes",)), DensityDict()],
        "guard": [Boolean(), Options(("auto",))],
        "edges_per_node": [Interval(numbers.Real, 0, None, closed="neither")],
        "min_nodes": [Interval(numbers.Integral, 1, None), Options(("auto",))],
        "cover": [Boolean()],
        "channels": [Boolean(), Options(("auto",))],
        "positive_paths": [Boolean(), Options(("auto",))],
        "iterations": [Interval(numbers.Integral, 1, None)],
        "view": [Options(VIEWS)],
        "scope": [Options(SCOPES)],
        "resistance": [Options(RESISTANCE_METHODS)],
        "sampling": [Options(SAMPLINGS)],
        "reweight": [Boolean()],
        "dtype": [Dtype(), None],
        "backend": [Options(RESISTANCE_BACKENDS)],
    }

    _kept = _ks = None
    _graph_R = None

    # -- the two variants ------------------------------------------------------------------------------------
    def _allocation(self):
        if self.allocation == "auto":
            return "erk" if self.width == "auto" else "uniform"
        return self.allocation

    def _guarded(self) -> bool:
        return self.width == "auto" if self.guard == "auto" else bool(self.guard)

    def _distributable(self):
        if self.width == "auto":  # independent blocks only when no node was removed
            return self._kept is None
        return self.scope == "block"

    def _why_serial(self):
        if self.width == "auto":
            return "the kept nodes are chosen over the whole graph"
        return "scope='graph' factors the whole graph's Laplacian once"

    def _validate_extra(self):
        cls = type(self).__name__
        if self.scope == "block" and self.resistance == "jl":
            raise ParameterError(f"The 'resistance' parameter of {cls} can be 'jl' only with scope='graph' (JL "
                                 "projections approximate whole-graph resistances); per block, use 'auto', "
                                 "'exact' or 'degree'.")
        if self.width == "auto":
            plain = {"view": ("rolled", "channel"), "scope": ("graph", "block"),
                     "sampling": ("with_replacement", "without_replacement"), "reweight": (True, False),
                     "allocation": ("global", "auto")}
            for name, (bad, ok) in plain.items():
                if getattr(self, name) == bad and type(getattr(self, name)) is type(bad):
                    raise ParameterError(
                        f"The '{name}' parameter of {cls} can be {bad!r} only with width='all' (the paper's "
                        f"per-layer sampling over every node); the default width='auto' chooses the kept nodes "
                        f"first and samples per block. Pass width='all', or {name}={ok!r}.")
        elif self.positive_paths is True:
            raise ParameterError(f"The 'positive_paths' parameter of {cls} can be True only with width='auto' (it "
                                 "acts where nodes are removed); with width='all' pass positive_paths=False.")
        elif self.allocation == "nodes":
            raise ParameterError(f"The 'allocation' parameter of {cls} can be 'nodes' only with width='auto' (it "
                                 "follows the kept nodes); with width='all' use 'uniform', 'erk', 'igq', 'global' or a "
                                 "dict.")

    def sparsify(self, graph):
        """Masks for ``graph``; with ``iterations > 1``, rounds at densities ``d^(r / iterations)``, each on the
        graph kept so far (the exponential schedule of iterative SynFlow)."""
        it = self.iterations
        if not isinstance(it, numbers.Integral) or isinstance(it, bool) or it <= 1:
            return super().sparsify(graph)
        d = self.validate()
        H, masks, widths = graph, None, None
        for r in range(1, it + 1):
            step = copy.copy(self)
            step.iterations, step.sparsity, step.density = 1, None, d ** (r / it)
            masks = Sparsifier.sparsify(step, H)
            widths = getattr(step, "width_", None)
            self.scales_, self.resistance_method_ = step.scales_, step.resistance_method_
            self.positive_paths_ = step.positive_paths_
            H = graph.with_masks(masks)
        self.width_ = widths
        return masks

    __call__ = sparsify

    def _streams(self) -> bool:
        return self.iterations == 1

    def allocate(self, graph, units, d):
        if self._ks is not None:
            return dict(self._ks)
        return super().allocate(graph, units, d)

    def prepare(self, graph):
        self._cache = {}
        self.scales_ = {}
        self.resistance_method_ = {}
        self._graph_R = None
        self._kept = self._ks = None
        d = self.target_density()
        if self.scope == "graph":
            self._graph_R, how = effective_resistance(graph, method=self.resistance, seed=self.seed,
                                                   return_method=True)
            self.resistance_method_["<graph>"] = how
        if self.width == "auto":
            units = self.units(graph)
            todo = [b for b in units if not self.keeps_dense(b)]
            kept, self.width_, ks, self.positive_paths_ = _width.choose_width(
                graph, todo, [b for b in units if self.keeps_dense(b)], self.allocate(graph, todo, d),
                d, allocation=self._allocation(), edges_per_node=self.edges_per_node, min_nodes=self.min_nodes,
                channels=self.channels if self.channels == "auto" else bool(self.channels), cover=bool(self.cover),
                engine=self._engine(), positive_paths=self.positive_paths)
            self._ks = ks
            self._kept = None if all(k.all() for k in kept.values()) else kept
        else:
            self.width_ = {p.name: 1.0 for p in graph.partitions}
            self.positive_paths_ = False

    def release(self):
        self._cache, self._graph_R = {}, None
        self._kept = self._ks = None

    def score(self, ctx: BlockContext) -> torch.Tensor:
        """Leverage ``|w_e| R_e`` of every available edge (0 for pruned edges)."""
        b = ctx.block
        if b.name in self._cache:
            return self._cache[b.name]
        w = ctx.weight
        avail = ctx.available.to(w.device)
        if not has_nonzero(w, ctx.available):  # no spectrum: leverage 0 (its edges come from zero_block_mask)
            if self._graph_R is not None:
                self._graph_R.pop(b.name, None)
            lev = torch.zeros(w.shape, dtype=torch.float64)
            self._cache[b.name] = lev
            return lev
        if self.scope == "graph":
            R = self._graph_R.pop(b.name)  # each block's resistances are read once, then dropped
        else:
            R, how = effective_resistance(ctx.graph, b, view=self.view, method=self.resistance,
                                          dtype=self._engine().dtype_for(w), return_method=True,
                                          backend=self.backend)
            self.resistance_method_[b.name] = how
        lev = leverage_in_place(R, w, avail)
        del R
        self._cache[b.name] = lev
        return lev

    def _engine(self) -> Engine:
        return Engine(self.resistance, self.dtype, self.backend, record=getattr(self, "resistance_method_", None))

    def _leverage_once(self, ctx) -> np.ndarray:
        """The block's leverage as a flat float64 array, taken out of the cache: its last use, the caller may
        overwrite it (the sampling keys are written in place)."""
        lev = self.score(ctx).reshape(-1).numpy()
        self._cache.pop(ctx.block.name, None)
        return lev

    def block_done(self, block):
        self._cache.pop(block.name, None)  # the leverage of one block at a time (all blocks only for "global")

    zero_block_rule = ("chosen uniformly at random from the block's own seed stream (with width='auto', among the "
                       "edges between kept nodes first)")

    def zero_block_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        """An all-zero block has no spectrum: ``k`` available edges uniformly at random from the block's stream;
        with ``width="auto"`` the edges between kept nodes come first (uniformly among them), so no budget is spent
        on edges of removed nodes while such edges remain."""
        if self.width != "auto" or self._kept is None:
            return super().zero_block_mask(ctx, k)
        b = ctx.block
        s, t = b.edge_index("channel")
        induced = self._kept[b.src][s] & self._kept[b.dst][t]
        u = ctx.rng.random(ctx.numel) + induced  # induced edges in [1, 2), the others in [0, 1)
        return topk_mask(torch.from_numpy(u).reshape(ctx.available.shape), ctx.available, k)

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        if self.width == "auto":
            lev = self._leverage_once(ctx) if _width.keeps_all(ctx.block, self._kept) else None
            return _width.mask_within(ctx, k, self._kept, lev, guard=self._guarded(), engine=self._engine(),
                                      positive=self.positive_paths_)
        avail = ctx.available.reshape(-1).numpy()
        if self.sampling == "without_replacement" and not self._guarded() and not self.reweight:
            # the block's last use of its leverage: the sampling keys are written over it (one float64 array)
            lev = self._leverage_once(ctx)
            keep = weighted_sample(lev, k, ctx.rng, cand=avail, total=lev.sum(), overwrite=True)
            return torch.from_numpy(keep).reshape(ctx.available.shape)
        lev = self.score(ctx).reshape(-1).numpy()
        p = lev / lev.sum()
        rng = ctx.rng
        forced = self._guard_edges(ctx, lev, avail, k) if self._guarded() else np.zeros(0, dtype=np.int64)
        keep = np.zeros(p.size, dtype=bool)
        keep[forced] = True
        rest = k - forced.size
        scale = None
        if rest > 0:
            if self.sampling == "with_replacement":
                chosen, counts, q = _draw_until_distinct(rng, p, avail & ~keep, rest)
                keep[chosen] = True
                if self.reweight:
                    scale = np.ones(p.size)
                    scale[chosen] = counts / (q * p[chosen])
            else:
                keep |= weighted_sample(lev, rest, rng, cand=avail, exclude=keep, total=lev.sum())
                if self.reweight:
                    scale = np.ones(p.size)
                    pi = inclusion_probabilities(p[avail], k)
                    inv = np.ones(p.size)
                    inv[avail] = 1.0 / np.maximum(pi, 1e-300)
                    scale[keep] = inv[keep]
        if self.reweight:
            if scale is None:
                scale = np.ones(p.size)
            scale[forced] = 1.0
            t = torch.from_numpy(scale).reshape(ctx.weight.shape)
            full = self.scales_.setdefault(ctx.block.param, torch.ones(ctx.graph.param_shapes[ctx.block.param],
                                                                       dtype=torch.float64))
            ctx.block.set_rows(full, t)
        return torch.from_numpy(keep).reshape(ctx.available.shape)

    def _guard_edges(self, ctx, lev, avail, k):
        """One highest-leverage edge per node that has any available edge (rows first, then uncovered columns)."""
        b = ctx.block
        s, d = b.edge_index(self.view if self.scope == "block" else "channel")
        s, d = s[avail], d[avail]
        idx = np.flatnonzero(avail)
        score = lev[avail]
        best = {}
        for side, nodes in (("dst", d), ("src", s)):
            order = np.lexsort((-score, nodes))  # by node, best first
            first = order[np.r_[True, nodes[order][1:] != nodes[order][:-1]]]
            best[side] = first
        chosen = set(best["dst"].tolist())
        covered_src = set(s[list(chosen)].tolist())
        extra = [e for e in best["src"].tolist() if s[e] not in covered_src]
        forced = idx[np.array(sorted(chosen) + extra, dtype=np.int64)]
        if forced.size > k:
            forced = forced[np.argsort(-lev[forced], kind="stable")[:k]]
        return forced


def _draw_until_distinct(rng, p, allowed, k):
    """I.i.d. draws from ``p`` (restricted to ``allowed``) until ``k`` distinct edges; returns (edges, counts, q)."""
    pa = np.where(allowed, p, 0.0)
    support = np.flatnonzero(pa > 0)
    if support.size < k:  # not enough positive-probability edges: take all, then fill uniformly among the rest
        zero = np.flatnonzero(allowed & (pa == 0))
        fill = rng.choice(zero, size=k - support.size, replace=False)
        edges = np.concatenate([support, np.sort(fill)])
        return edges, np.ones(edges.size), max(support.size, 1)
    cdf = np.cumsum(pa[support])
    cdf /= cdf[-1]
    counts = np.zeros(support.size, dtype=np.int64)
    distinct, q = 0, 0
    while distinct < k:
        need = k - distinct
        draws = np.searchsorted(cdf, rng.random(max(2 * need, 1024)), side="right").clip(max=support.size - 1)
        _, first = np.unique(draws, return_index=True)
        is_new = np.zeros(draws.size, dtype=bool)
        is_new[first] = True
        is_new &= counts[draws] == 0  # first time ever seen
        new_pos = np.flatnonzero(is_new)
        if new_pos.size >= need:  # stop exactly at the draw that completes k distinct edges
            draws = draws[: new_pos[need - 1] + 1]
        np.add.at(counts, draws, 1)
        q += draws.size
        distinct += min(need, new_pos.size)
    sel = np.flatnonzero(counts)
    return support[sel], counts[sel].astype(np.float64), q

