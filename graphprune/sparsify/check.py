"""``check_sparsifier``: the conformance check any sparsifier plug-in can run (like scikit-learn's check_estimator)."""

from __future__ import annotations

import copy

import torch

from ..errors import ParameterError, SparsifierCheckError
from ..graph import Block, MultipartiteGraph, Partition
from .base import Sparsifier

__all__ = ["check_sparsifier", "SparsifierCheckError"]


def _default_graphs():
    """Two small graphs built directly (no export): an MLP and a CNN with a grouped convolution."""
    gen = torch.Generator().manual_seed(0)

    def w(*shape):
        return torch.randn(*shape, generator=gen) / shape[-1] ** 0.5

    mlp = MultipartiteGraph(
        [Partition("input", 12, "input", (12,)), Partition("0", 16, "hidden", (16,)),
         Partition("2", 6, "output", (6,))],
        [Block("0", "input", "0", param="0.weight", weight=w(16, 12)),
         Block("2", "0", "2", param="2.weight", weight=w(6, 16))])
    cnn = MultipartiteGraph(
        [Partition("input", 3, "input", (3, 8, 8), "channel"), Partition("0", 6, "hidden", (6, 6, 6), "channel"),
         Partition("2", 8, "hidden", (8, 4, 4), "channel"), Partition("4", 5, "output", (5,))],
        [Block("0", "input", "0", param="0.weight", weight=w(6, 3, 3, 3), layout="conv"),
         Block("2", "0", "2", param="2.weight", weight=w(8, 3, 3, 3), layout="conv", groups=2),
         Block("4", "2", "4", param="4.weight", weight=w(5, 8))])
    return [mlp, cnn]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values: identity only
        return a is b


def check_sparsifier(sparsifier, *, graphs=None, options: dict | None = None, sparsities=(0.5, 0.9)):
    """Check that a sparsifier follows the protocol; raise SparsifierCheckError naming what fails.

    Checks the scikit-learn-style contract (the constructor stores its parameters as given and nothing else;
    ``get_params`` and ``repr`` name them; ``sparsify`` changes no parameter and leaves ``repr`` as it was) and
    the sparsifier contract: bad sparsity raises ParameterError when the work starts; the input graph (masks and
    weights) is not mutated; masks are bool tensors of each parameter's shape covering every parameter; the
    density is hit exactly per block under uniform allocation; masks only shrink on an already masked graph; the
    same seed gives the same masks.

    Parameters
    ----------
    sparsifier : Sparsifier subclass or instance
        An instance contributes its parameters (``sparsity``, ``density`` and ``seed`` aside) as options.
    graphs : list of MultipartiteGraph, optional
        Graphs to check on. Default: a small MLP and a small CNN built directly. Data-dependent sparsifiers
        (SNIP, GraSP, SynFlow) need the graph of the model they are given: pass ``graphs=[G]`` and
        ``options={"model": model, "data": loader}``.
    options : dict, optional
        Extra constructor arguments.
    sparsities : sequence of float
        Sparsities to check at.

    Raises
    ------
    SparsifierCheckError
        Names the property that fails.

    Examples
    --------
    >>> from graphprune.sparsify import check_sparsifier, get_sparsifier
    >>> check_sparsifier(get_sparsifier("random"))
    """
    options = dict(options or {})
    if isinstance(sparsifier, Sparsifier):
        cls = type(sparsifier)
        inherited = {k: v for k, v in sparsifier.get_params().items() if k not in ("sparsity", "density", "seed")}
        options = {**inherited, **options}
    elif isinstance(sparsifier, type) and issubclass(sparsifier, Sparsifier):
        cls = sparsifier
    else:
        raise SparsifierCheckError(f"{sparsifier!r} is neither a Sparsifier subclass nor an instance of one.")
    if graphs is None:
        graphs = _default_graphs()
    elif isinstance(graphs, MultipartiteGraph) or not all(isinstance(g, MultipartiteGraph) for g in graphs):
        raise ParameterError("The 'graphs' parameter of check_sparsifier must be a list of MultipartiteGraph. "
                             f"Got {graphs!r} instead.")
    options.setdefault("allocation", "uniform")  # exact per-block density is checked
    name = cls.__name__

    def fail(msg):
        raise SparsifierCheckError(f"{name}: {msg}")

    # -- scikit-learn contract: the constructor only stores parameters ----------------------------------------
    try:
        cls(sparsity=7.0, seed=0, **options)
    except Exception as exc:  # noqa: BLE001
        fail(f"the constructor must only store parameters, but it raised {type(exc).__name__}: {exc}")
    args = dict(sparsity=0.5, seed=0, **options)
    sp = cls(**args)
    params = sp.get_params()
    for k, v in args.items():
        if k not in params:
            fail(f"get_params() must list the constructor parameter {k!r}; got {sorted(params)}")
        if params[k] is not v:
            fail(f"the constructor must store {k!r} as given (found {params[k]!r}, passed {v!r})")
    extra = sorted(k for k in vars(sp) if not k.startswith("_") and k not in params)
    if extra:
        fail(f"the constructor must set only its parameters; it also set {extra}")
    text = repr(sp)
    if not text.startswith(name + "(") or "sparsity=0.5" not in text:
        fail(f"repr must name the class and its parameters; got {text!r}")

    for G in graphs:
        try:
            cls(sparsity=1.5, seed=0, **options).sparsify(G)
        except ParameterError:
            pass
        else:
            fail("sparsity=1.5 must raise ParameterError when sparsify starts")
        for s in sparsities:
            before_masks = G.masks
            before_w = {b.name: b.weight.detach().clone() for b in G.weight_blocks}
            sp = cls(sparsity=s, seed=3, **options)
            before_params, before_repr = dict(sp.get_params()), repr(sp)
            masks = sp.sparsify(G)
            if any(not _same(v, getattr(sp, k)) for k, v in before_params.items()):
                fail("sparsify must not change the sparsifier's parameters")
            if repr(sp) != before_repr:
                fail(f"repr must not change with sparsify (results go to attributes ending in '_'): "
                     f"{before_repr!r} became {repr(sp)!r}")
            if any(not torch.equal(G.masks[k], before_masks[k]) for k in before_masks) or any(
                    not torch.equal(b.weight, before_w[b.name]) for b in G.weight_blocks):
                fail("sparsify mutated its input graph")
            if set(masks) != set(G.params):
                fail(f"masks must cover every parameter {G.params}; got {sorted(masks)}")
            for b in G.weight_blocks:
                m = masks[b.param]
                if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or \
                        tuple(m.shape) != tuple(G.param_shapes[b.param]):
                    fail(f"mask of {b.param!r} must be bool of shape {G.param_shapes[b.param]}")
            units = list({(b.param, b.param_slice): b for b in G.weight_blocks}.values())
            if sp.allocation == "uniform":
                for b in units:
                    avail = int(G.block_mask(b).sum())
                    want = min(round((1 - s) * b.num_edges), avail)
                    m = masks[b.param]
                    got = int(b.rows(m).sum())
                    if got != want:
                        fail(f"density not hit on {b.name!r} at sparsity {s}: kept {got}, expected {want}")
            elif sp.allocation == "global" and not G.is_masked:
                want = round((1 - s) * sum(b.num_edges for b in units))
                got = sum(int(m.sum()) for m in masks.values())
                if abs(got - want) > len(units):
                    fail(f"global density not hit at sparsity {s}: kept {got} edges, expected {want}")
            again = cls(sparsity=s, seed=3, **options).sparsify(G)
            if any(not torch.equal(masks[k], again[k]) for k in masks):
                fail("the same graph and seed must give the same masks")
            H = G.with_masks(masks)
            shrunk = cls(sparsity=s, seed=4, **options).sparsify(copy.copy(H))
            for k, m in shrunk.items():
                if bool((m & ~masks[k]).any()):
                    fail(f"masks must only shrink: {k!r} revived pruned edges")
