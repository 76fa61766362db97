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

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components

from .._validation import ANALYSIS_BACKENDS
from ..errors import ParameterError
from .local import _masked

__all__ = ["reachability", "effective_mask", "effective_sparsity", "layer_collapse", "count_paths",
           "components", "articulation_points", "bridges", "BACKENDS"]

BACKENDS = ANALYSIS_BACKENDS


def _role_nodes(G, role):
    out = [np.arange(G.node_offset(p.name), G.node_offset(p.name) + p.size) for p in G.partitions if p.role == role]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _reach(A, starts):
    """Nodes reachable along directed edges of ``A`` from any node in ``starts`` (a virtual super-source)."""
    n = A.shape[0]
    if starts.size == 0:
        return np.zeros(n, dtype=bool)
    S = sp.csr_array((np.ones(starts.size), (np.full(starts.size, n), starts)), shape=(n + 1, n + 1))
    Ab = sp.block_array([[A, None], [None, sp.csr_array((1, 1))]]).tocsr() + S
    order = breadth_first_order(Ab, n, directed=True, return_predecessors=False)
    seen = np.zeros(n + 1, dtype=bool)
    seen[order] = True
    return seen[:n]


def reachability(G, *, masks=None, mask=None):
    """``(forward, backward)`` bool arrays over nodes: reachable from an input node, and reaching an output node,
    along kept edges (identity edges included)."""
    H = _masked(G, masks, mask, "reachability")
    A = H.adjacency(directed=True, weighted=False)
    fwd = _reach(A, _role_nodes(H, "input"))
    bwd = _reach(A.T.tocsr(), _role_nodes(H, "output"))
    return fwd, bwd


def effective_mask(G, *, masks=None, mask=None) -> dict:
    """Masks keeping only the kept edges that lie on some input-to-output path (Vysogorets & Kempe 2023).

    An edge ``u -> v`` is effective when ``u`` is reachable from the input and ``v`` reaches the output.

    Returns
    -------
    dict of str to torch.Tensor
        Bool masks keyed by parameter name (a subset of the kept masks); tied parameters keep an edge when any use
        of it is effective.

    Notes
    -----
    One reachability search over the node-pair adjacency, then per block a broadcast of the node flags over the
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

    H = _masked(G, masks, mask, "effective_mask")
    fwd, bwd = reachability(H)
    out = {name: torch.zeros(shape, dtype=torch.bool) for name, shape in H.param_shapes.items() if name in H.params}
    for b in H.weight_blocks:
        so, do = H.node_offset(b.src), H.node_offset(b.dst)
        S, D = b.broadcast_nodes(fwd[so : so + b.n_src], bwd[do : do + b.n_dst])
        m = H.block_mask(b) & torch.from_numpy(S & D)  # broadcasts over the kernel taps
        full = out[b.param]
        if b.param_slice is not None:
            full[b.param_slice[0] : b.param_slice[1]] |= m
        else:
            full |= m
    return out


def effective_sparsity(G, *, masks=None, per_param: bool = False, mask=None):
    """Fraction of prunable weights that are not on any input-output path (1 - effective density)."""
    H = _masked(G, masks, mask, "effective_sparsity")
    eff = effective_mask(H)
    if per_param:
        return {k: 1.0 - float(v.float().mean()) for k, v in eff.items()}
    kept = sum(int(v.sum()) for v in eff.values())
    total = sum(v.numel() for v in eff.values())
    return 1.0 - kept / total if total else 0.0


def layer_collapse(G, *, masks=None, mask=None) -> list[str]:
    """Human-readable collapse findings (empty when none): blocks or partitions cut off from the input-output flow,
    and input and output disconnected."""
    H = _masked(G, masks, mask, "layer_collapse")
    fwd, bwd = reachability(H)
    alive = fwd & bwd
    found = []
    if not (fwd[_role_nodes(H, "output")]).any():
        found.append("input and output are disconnected")
    eff = effective_mask(H)
    for b in H.weight_blocks:
        m = eff[b.param]
        if b.param_slice is not None:
            m = m[b.param_slice[0] : b.param_slice[1]]
        if not bool(m.any()):
            found.append(f"layer collapsed: block '{b.name}' has no effective edge")
    for p in H.partitions:
        off = H.node_offset(p.name)
        if not alive[off : off + p.size].any():
            found.append(f"partition '{p.name}' is cut off (no node on an input-output path)")
    return found


def _topological_blocks(H, owner: str = "count_paths"):
    """The blocks sorted by destination partition, and the partition index; ParameterError on a backward block."""
    index = {p.name: i for i, p in enumerate(H.partitions)}
    for b in H.blocks:
        if index[b.src] >= index[b.dst]:
            raise ParameterError(f"{owner} needs partitions in topological order; block '{b.name}' goes from "
                                 f"'{b.src}' back to '{b.dst}'.")
    return sorted(H.blocks, key=lambda b: index[b.dst]), index


def count_paths(G, *, masks=None, weighted: bool = False, mask=None) -> float:
    """log10 of the number of input-output paths (``weighted=True``: of the sum over paths of the product of
    ``|w|``, the SynFlow objective ``1^T |W_L| ... |W_1| 1``). Dynamic programming over the layered graph in log
    space, so no overflow; ``-inf`` when input and output are disconnected. Parallel edges are distinct paths;
    identity edges have weight 1.

    Notes
    -----
    Per block, a log-sum-exp over each destination's kept source pairs (:meth:`MultipartiteGraph.block_pairs`:
    parallel edges folded into a count or a summed ``|w|``), exact per row; cost O(connected pairs).
    """
    H = _masked(G, masks, mask, "count_paths")
    logp = np.full(H.num_nodes, -np.inf)
    logp[_role_nodes(H, "input")] = 0.0
    for b in _topological_blocks(H)[0]:
        so, do = H.node_offset(b.src), H.node_offset(b.dst)
        ls = logp[so : so + b.n_src]
        if not np.isfinite(ls).any():
            continue
        P = H.block_pairs(b, weighted=weighted and b.is_weight)  # (n_dst, n_src), counts or |w| sums
        P.eliminate_zeros()
        with np.errstate(divide="ignore"):
            vals = ls[P.indices] + np.log(P.data)  # one term per connected (dst, src) pair
        rows = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
        ok = np.isfinite(vals)
        if not ok.any():
            continue
        vals, rows = vals[ok], rows[ok]
        mx = np.full(P.shape[0], -np.inf)
        np.maximum.at(mx, rows, vals)
        tot = np.bincount(rows, weights=np.exp(vals - mx[rows]), minlength=P.shape[0])
        touched = np.flatnonzero(tot > 0)
        new = mx[touched] + np.log(tot[touched])
        logp[do + touched] = np.logaddexp(logp[do + touched], new)
    outs = logp[_role_nodes(H, "output")]
    outs = outs[np.isfinite(outs)]
    if outs.size == 0:
        return -math.inf
    m = outs.max()
    return float((m + np.log(np.exp(outs - m).sum())) / math.log(10))


def _simple_undirected(H):
    """Undirected simple graph of kept edges: (u, v, multiplicity) with u < v, from the node-pair adjacency."""
    A = H.adjacency(directed=True, weighted=False)  # multiplicities of u -> v
    U = sp.triu(A + A.T, k=0).tocoo()  # u <= v; a self-pair (never made by a layer) would sit on the diagonal
    keep = U.row != U.col
    return U.row[keep].astype(np.int64), U.col[keep].astype(np.int64), U.data[keep].astype(np.int64)


def _bounded_simple(G, masks, mask, backend, max_edges, what):
    """Masked graph and its simple undirected edges, refusing graphs past ``max_edges`` (Python-speed backends)."""
    _check_backend(backend)
    H = _masked(G, masks, mask, what.replace(" ", "_"))
    u, v, mult = _simple_undirected(H)
    if u.size > max_edges:
        raise ParameterError(f"The graph has {u.size} distinct edges > max_edges={max_edges}; raise max_edges to "
                             f"compute {what} anyway.")
    return H, u, v, mult


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ParameterError(f"The 'backend' parameter must be one of {BACKENDS}. Got {backend!r} instead.")


def components(G, *, masks=None, backend: str = "scipy", mask=None) -> np.ndarray:
    """Weakly connected component label of every node (isolated nodes are their own component).

    The scipy backend labels the node-pair adjacency (:meth:`MultipartiteGraph.adjacency`, assembled per block)
    with ``scipy.sparse.csgraph.connected_components``: linear time, whatever the number of components.
    """
    _check_backend(backend)
    H = _masked(G, masks, mask, "components")
    n = H.num_nodes
    if backend == "scipy":
        return connected_components(H.adjacency(directed=True, weighted=False), directed=True,
                                    connection="weak")[1]
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


def articulation_points(G, *, masks=None, backend: str = "networkx", max_edges: int = 2_000_000,
                        mask=None) -> np.ndarray:
    """Global ids of cut vertices of the undirected kept graph (networkx or graph-tool).

    Raises ParameterError when the simple graph has more than ``max_edges`` edges.
    """
    H, u, v, _ = _bounded_simple(G, masks, mask, backend, max_edges, "articulation points")
    if backend in ("networkx", "scipy"):
        import networkx as nx

        return np.array(sorted(nx.articulation_points(_nx_graph(H.num_nodes, u, v))), dtype=np.int64)
    from graph_tool import topology

    g = _gt_graph(H.num_nodes, u, v)  # keep the graph alive while its property maps are read
    _, art, _ = topology.label_biconnected_components(g)
    return np.flatnonzero(np.asarray(art.a)).astype(np.int64)


def bridges(G, *, masks=None, backend: str = "networkx", max_edges: int = 2_000_000,
            mask=None) -> list[tuple[int, int]]:
    """Bridges ``(u, v)`` (u < v, global ids) of the undirected kept multigraph: edges whose removal disconnects
    their component. A channel pair joined by several parallel convolution edges is never a bridge."""
    H, u, v, mult = _bounded_simple(G, masks, mask, backend, max_edges, "bridges")
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
