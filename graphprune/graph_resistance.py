"""Effective resistance of the edges of a MultipartiteGraph: the graph-aware front door of the engines.

:mod:`graphprune.resistance` holds pure matrix engines (a biadjacency or a Laplacian in, resistances out) and
knows nothing of graphs, like ``scipy.sparse.csgraph``. This module stands beside the graph: it builds a block's
biadjacency (:meth:`MultipartiteGraph.biadjacency`), runs an engine on it and reads the result back in edge order
(:meth:`Block.edge_values`, the inverse of the biadjacency); for the whole graph it hands the Laplacian and the
kept edges' end points to :func:`~graphprune.resistance.laplacian_resistance`.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch

from . import resistance as _engines
from ._validation import RESISTANCE_METHODS, VIEWS, Boolean, Dtype, Interval, Options, Seed, validate_params
from .graph import Block, MultipartiteGraph

__all__ = ["effective_resistance"]

log = logging.getLogger("graphprune")

_ACCEPTS = ("a MultipartiteGraph or a 2-D biadjacency matrix (torch.Tensor, numpy array or nested lists of "
            "numbers)")
_FIX = (" Build a graph with graphprune.from_model(model, example_inputs), or pass a block's biadjacency "
        "G.biadjacency(block).")


@validate_params({"view": [Options(VIEWS)], "method": [Options(RESISTANCE_METHODS)], "dtype": [Dtype()],
                  "masked": [Boolean()], "eps": [Interval(numbers.Real, 0, 1, closed="right")],
                  "jl_dim": [Interval(numbers.Integral, 1, None), None], "seed": [Seed()],
                  "return_method": [Boolean()]})
def effective_resistance(obj, block=None, *, view: str = "channel", method: str = "auto", dtype=torch.float64,
                         masked: bool = True, eps: float = 0.3, jl_dim: int | None = None, seed=0,
                         return_method: bool = False, backend: str = "auto"):
    """Effective resistance of every edge of a block, of a whole MultipartiteGraph, or of a biadjacency.

    Parameters
    ----------
    obj : MultipartiteGraph, torch.Tensor or array_like
        A graph, or a non-negative biadjacency ``(m, n)``.
    block : str or Block, optional
        With a graph: the block to compute on its own (its bipartite graph). Without: the whole graph (all blocks,
        identity edges included), in the channel view.
    view : {"channel", "rolled"}
        Node view of a convolution block. In the channel view parallel edges share their pair's resistance.
    method : {"auto", "exact", "degree", "jl"}
        ``"auto"`` picks by a memory and time estimate (:func:`~graphprune.resistance.choose_method`), logs its
        choice on the ``graphprune`` logger and, with ``return_method=True``, returns it.
    dtype : torch.dtype
        float64 (default) or float32, for the block engine.
    masked : bool, default True
        Use the graph's masks (masked edges do not exist).
    backend : {"auto", "scipy", "torch"}, default "auto"
        Exact block engine (:func:`~graphprune.resistance.bipartite_resistance`): ``"auto"`` runs LAPACK through
        scipy for CPU weights and torch where the weights live otherwise (CUDA); ``"torch"`` forces the torch
        engine on any device.

    Raises
    ------
    ParameterError
        ``obj`` is neither a MultipartiteGraph nor a 2-D array of real numbers (a str, None, a module, a ragged
        list, ...: the message names the type received and how to build a graph), bad arguments, or
        ``method="exact"`` on a block whose exact engine would not fit in the memory available
        now (raised before anything is allocated; the message names the block, the memory needed and the
        alternatives). ``"auto"`` falls back to the degree approximation instead and logs why.

    Returns
    -------
    torch.Tensor or dict
        A biadjacency gives an ``(m, n)`` tensor. A block gives a tensor shaped like ``block.weight`` (resistance
        of each edge in parameter order; NaN for masked edges). The whole graph gives a dict block name -> tensor
        (weight blocks shaped like their weight, identity blocks 1-D). With ``return_method=True``, a tuple
        ``(result, method)``.

    Notes
    -----
    Does not modify ``obj``. A block costs one biadjacency (``n_dst x n_src``, built after the memory check)
    plus the engine's working set (:func:`~graphprune.resistance.exact_block_bytes`).

    References
    ----------
    .. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
       2011. doi:10.1137/080734029

    Examples
    --------
    >>> import torch, graphprune
    >>> G = graphprune.from_model(torch.nn.Linear(3, 2, bias=False), torch.randn(1, 3))
    >>> R = graphprune.effective_resistance(G, G.blocks[0])
    >>> tuple(R.shape)
    (2, 3)
    """
    if not isinstance(obj, MultipartiteGraph):
        B = _engines.check_biadjacency(obj, "obj", "effective_resistance", what=_ACCEPTS, fix=_FIX)
        chosen = _engines.block_method(method, "the biadjacency", *B.shape, dtype=dtype, device=B.device)
        R = _engines.block_resistance(B, chosen, dtype=dtype, backend=backend)
        return (R, chosen) if return_method else R
    G = obj
    H = G if masked else G.with_masks(None, combine=False)
    if block is not None:
        b = G.block(block) if not isinstance(block, Block) else block
        out, chosen = _block(H, b, view, method, dtype, backend, masked)
    else:
        out, chosen = _whole_graph(G, H, method, eps, jl_dim, seed)
    return (out, chosen) if return_method else out


def _block(H, b, view, method, dtype, backend, masked):
    """One block on its own: engine chosen before the biadjacency is built, result read back in edge order."""
    n_dst, n_src = b.view_shape(view)
    dev = b.weight.device if b.is_weight else torch.device("cpu")
    chosen = _engines.block_method(method, f"block {b.name!r}", n_dst, n_src, dtype=dtype, device=dev)
    Bm = H.biadjacency(b, view=view, masked=True, format="torch", dtype=dtype)
    R = _engines.block_resistance(Bm, chosen, dtype=dtype, backend=backend, overwrite=True)  # Bm is ours
    del Bm
    per_edge = b.edge_values(R, view)
    if b.is_weight:
        per_edge = per_edge.reshape(b.weight.shape)
        if masked:
            keep = H.block_mask(b)
            if not bool(keep.all()):
                per_edge = per_edge.masked_fill_(~keep.to(per_edge.device), float("nan"))
    return per_edge, chosen


def _whole_graph(G, H, method, eps, jl_dim, seed):
    """Every edge of the graph (channel view) from its Laplacian; NaN for masked edges."""
    chosen = method
    if method == "auto":
        chosen, why = _engines.choose_method(G.num_nodes)
        log.info("effective_resistance: %s", why)
    ends, kept = [], []
    for b in G.blocks:
        s, d = b.edge_index("channel")
        keep = H.block_mask(b).reshape(-1).numpy() if b.is_weight else np.ones(s.size, dtype=bool)
        kept.append(keep)
        ends.append((s[keep] + G.node_offset(b.src), d[keep] + G.node_offset(b.dst)))
    u = np.concatenate([e[0] for e in ends])
    v = np.concatenate([e[1] for e in ends])
    if chosen == "degree":
        deg = H.degrees("all", weighted=True)
        with np.errstate(divide="ignore"):
            r_all = 1.0 / deg[u] + 1.0 / deg[v]
    else:
        r_all = _engines.laplacian_resistance(H.laplacian(), (u, v), method=chosen, eps=eps, jl_dim=jl_dim,
                                              seed=seed)
    out, start = {}, 0
    for b, keep in zip(G.blocks, kept):
        full = np.full(b.num_edges, np.nan)
        full[keep] = r_all[start : start + int(keep.sum())]
        start += int(keep.sum())
        t = torch.from_numpy(full)
        out[b.name] = t.reshape(b.weight.shape) if b.is_weight else t
    return out, chosen
