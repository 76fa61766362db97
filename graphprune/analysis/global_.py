"""Global connectivity: effective mask and sparsity, layer collapse, input-output paths, components, bridges.

The effective mask and effective sparsity follow Vysogorets & Kempe [1]_; the weighted path count is SynFlow's
objective [2]_.

References
----------
.. [1] A. Vysogorets, J. Kempe. "Connectivity Matters: Neural Network Pruning Through the Lens of Effective
   Sparsity", Journal of Machine Learning Research 24, 2023. (Effective sparsity and the effective mask.)
.. [2] H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli. "Pruning neural networks without any data by iteratively
   conserving synaptic flow", NeurIPS 2020. doi:10.48550/arXiv.2006.05467 (The SynFlow objective: the sum over
   input-output paths of the product of ``|w|``.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import ANALYSIS_BACKENDS
from ..errors import ParameterError
from .local import _masked
from .traversal import backward_sweep, collapse_findings, forward_sweep

__all__ = ["reachability", "effective_mask", "effective_sparsity", "layer_collapse", "count_paths",
           "components", "articulation_points", "bridges", "BACKENDS"]

BACKENDS = ANALYSIS_BACKENDS


def reachability(G, *, masks=None):
    """``(forward, backward)`` bool arrays over nodes: reachable from an input node, and reaching an output node,
    along kept edges (identity edges included).

    Notes
    -----
    One forward and one backward sweep over the blocks in topological order
    (:mod:`graphprune.analysis.traversal`); memory beyond the masks is one block's kept edges.
    """
    H = _masked(G, masks, "reachability")
    sw = forward_sweep(H, owner="reachability")
    return sw["fwd"], backward_sweep(H, sw["order"])


def effective_mask(G, *, masks=None) -> dict:
    """Masks keeping only the kept edges that lie on some input-to-output path (Vysogorets & Kempe 2023).

    An edge ``u -> v`` is effective when ``u`` is reachable from the input and ``v`` reaches the output.

    Returns
    -------
    dict of str to torch.Tensor
        Bool masks keyed by parameter name (a subset of the kept masks); tied parameters keep an edge when any use
        of it is effective.

    Notes
    -----
    The forward and backward sweeps of :func:`reachability`, then per block a broadcast of the node flags over the
    mask (:meth:`Block.broadcast_nodes`): no per-edge index arrays.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
    >>> G = graphprune.from_model(net, torch.randn(1, 2))
    >>> m = effective_mask(G, masks={"1.weight": torch.tensor([[True, False]])})
    >>> m["0.weight"].tolist()  # hidden neuron 1 reaches no output: its inputs are not effective
    [[True, True], [False, False]]
    """
    import torch

    H = _masked(G, masks, "effective_mask")
    fwd, bwd = reachability(H)
    out = {name: torch.zeros(shape, dtype=torch.bool) for name, shape in H.param_shapes.items() if name in H.params}
    for b in H.weight_blocks:
        so, do = H.node_offset(b.src), H.node_offset(b.dst)
        S, D = b.broadcast_nodes(fwd[so : so + b.n_src], bwd[do : do + b.n_dst])
        m = H.block_mask(b) & torch.from_numpy(S & D)  # broadcasts over the kernel taps
        b.or_rows(out[b.param], m)
    return out


def effective_sparsity(G, *, masks=None, per_param: bool = False):
    """Fraction of prunable weights that are not on any input-output path (1 - effective density)."""
    H = _masked(G, masks, "effective_sparsity")
    eff = effective_mask(H)
    if per_param:
        return {k: 1.0 - float(v.float().mean()) for k, v in eff.items()}
    kept = sum(int(v.sum()) for v in eff.values())
    total = sum(v.numel() for v in eff.values())
    return 1.0 - kept / total if total else 0.0


def layer_collapse(G, *, masks=None) -> list[str]:
    """Human-readable collapse findings (empty when none): input and output disconnected, blocks with no effective
    edge, and partitions cut off from the input-output flow, in that order.

    The findings are the texts of :func:`graphprune.analysis.traversal.collapse_findings` (the report's
    ``warnings`` use the same reasons).
    """
    H = _masked(G, masks, "layer_collapse")
    fwd, bwd = reachability(H)
    eff = effective_mask(H)
    collapsed = []
    for b in H.weight_blocks:
        if not bool(b.rows(eff[b.param]).any()):
            collapsed.append(b.name)
    return [r.text for r in collapse_findings(H, fwd, bwd, collapsed)]


def count_paths(G, *, masks=None, weighted: bool = False) -> float:
    """log10 of the number of input-output paths (``weighted=True``: of the sum over paths of the product of
    ``|w|``, the SynFlow objective ``1^T |W_L| ... |W_1| 1``). Dynamic programming over the layered graph in log
    space, so no overflow; ``-inf`` when input and output are disconnected. Parallel edges are distinct paths;
    identity edges have weight 1.

    Raises
    ------
    ParameterError
        A block goes from a later partition back to an earlier one.

    Notes
    -----
    The forward sweep of :mod:`graphprune.analysis.traversal` (the report's): per block, a log-sum-exp over each
    destination's kept edges; cost O(kept edges), memory one block's kept edges.
    """
    H = _masked(G, masks, "count_paths")
    sw = forward_sweep(H, owner="count_paths", paths=not weighted, synflow=weighted)
    return sw["log10_synflow"] if weighted else sw["log10_paths"]


def _simple_undirected(H):
    """Undirected simple graph of kept edges: (u, v, multiplicity) with u < v, from the node-pair adjacency."""
    A = H.adjacency(directed=True, weighted=False)  # multiplicities of u -> v
    U = sp.triu(A + A.T, k=0).tocoo()  # u <= v; a self-pair (never made by a layer) would sit on the diagonal
    keep = U.row != U.col
    return U.row[keep].astype(np.int64), U.col[keep].astype(np.int64), U.data[keep].astype(np.int64)


def _bounded_simple(G, masks, backend, max_edges, what):
    """Masked graph and its simple undirected edges, refusing graphs past ``max_edges`` (Python-speed backends)."""
    _check_backend(backend)
    H = _masked(G, masks, what.replace(" ", "_"))
    u, v, mult = _simple_undirected(H)
    if u.size > max_edges:
        raise ParameterError(f"The graph has {u.size} distinct edges > max_edges={max_edges}; raise max_edges to "
                             f"compute {what} anyway.")
    return H, u, v, mult


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ParameterError(f"The 'backend' parameter must be one of {BACKENDS}. Got {backend!r} instead.")


def components(G, *, masks=None, backend: str = "scipy") -> np.ndarray:
    """Weakly connected component label of every node (isolated nodes are their own component).

    The scipy backend merges the components block by block in the forward sweep of
    :mod:`graphprune.analysis.traversal` (``scipy.sparse.csgraph.connected_components`` on the labels touched by
    one block; memory one block's kept edges), labels numbered in order of each component's first node.
    """
    _check_backend(backend)
    H = _masked(G, masks, "components")
    n = H.num_nodes
    if backend == "scipy":
        return forward_sweep(H, owner="components", components=True)["component_labels"].astype(np.int32)
    u, v, _ = _simple_undirected(H)
    if backend == "networkx":
        import networkx as nx

        lab = np.empty(n, dtype=np.int64)
        for i, comp in enumerate(nx.connected_components(_nx_graph(n, u, v))):
            lab[list(comp)] = i
        return lab
    from graph_tool import topology

    g = _gt_graph(n, u, v)
    comp, _ = topology.label_components(g)
    return np.asarray(comp.a, dtype=np.int64)


def articulation_points(G, *, masks=None, backend: str = "networkx", max_edges: int = 2_000_000) -> np.ndarray:
    """Global ids of cut vertices of the undirected kept graph (networkx or graph-tool).

    Raises ParameterError when the simple graph has more than ``max_edges`` edges.
    """
    H, u, v, _ = _bounded_simple(G, masks, backend, max_edges, "articulation points")
    if backend in ("networkx", "scipy"):
        import networkx as nx

        return np.array(sorted(nx.articulation_points(_nx_graph(H.num_nodes, u, v))), dtype=np.int64)
    from graph_tool import topology

    g = _gt_graph(H.num_nodes, u, v)  # keep the graph alive while its property maps are read
    _, art, _ = topology.label_biconnected_components(g)
    return np.flatnonzero(np.asarray(art.a)).astype(np.int64)


def bridges(G, *, masks=None, backend: str = "networkx", max_edges: int = 2_000_000) -> list[tuple[int, int]]:
    """Bridges ``(u, v)`` (u < v, global ids) of the undirected kept multigraph: edges whose removal disconnects
    their component. A channel pair joined by several parallel convolution edges is never a bridge."""
    H, u, v, mult = _bounded_simple(G, masks, backend, max_edges, "bridges")
    single = {(int(a), int(b)) for a, b, c in zip(u, v, mult) if c == 1}
    if backend in ("networkx", "scipy"):
        import networkx as nx

        found = {(min(a, b), max(a, b)) for a, b in nx.bridges(_nx_graph(H.num_nodes, u, v))}
    else:
        g = _gt_graph(H.num_nodes, u, v)
        from graph_tool import topology

        lab, _, hist = topology.label_biconnected_components(g)
        e = g.get_edges([lab])
        sizes = np.asarray(hist)
        is_bridge = sizes[e[:, 2]] == 1
        found = {(int(min(a, b)), int(max(a, b))) for a, b in e[is_bridge, :2]}
    return sorted(found & single)


def _nx_graph(n, u, v):
    from ..convert import require

    nx = require("networkx")
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(u.tolist(), v.tolist()))
    return g


def _gt_graph(n, u, v):
    """An undirected graph_tool.Graph (MissingDependencyError naming the install when graph-tool is absent)."""
    from ..convert import require

    gt = require("graph_tool")
    g = gt.Graph(directed=False)
    g.add_vertex(n)
    g.add_edge_list(np.column_stack([u, v]))
    return g
