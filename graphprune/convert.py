"""Conversions of a MultipartiteGraph to and from networkx, torch_geometric, graph-tool, scipy and pandas.

Every backend is imported lazily, inside the function that needs it. Every converter respects masks: a masked
edge is absent. Nodes are numbered globally (partition by partition, see
:meth:`MultipartiteGraph.node_offset`); edges are directed from input to output. A first argument that is not a
MultipartiteGraph raises ParameterError naming the type received.

Back from networkx and scipy: :func:`from_networkx` rebuilds the very graph :func:`to_networkx` wrote (its
blocks, layouts, parameter values and masks travel in ``H.graph["graphprune"]``), or, for any directed graph
whose nodes carry ``subset``, a graph of linear blocks between the subsets; :func:`from_scipy` builds the same
from an adjacency and the partition sizes. Masked edges come back masked, with weight 0 (their values are not in
the converted graph).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ._validation import check_graph, show_typed
from .errors import MissingDependencyError, ParameterError
from .graph import Block, MultipartiteGraph, Partition

__all__ = ["to_networkx", "to_pyg", "to_graph_tool", "to_scipy", "edges_frame", "nodes_frame", "from_networkx",
           "from_scipy", "require"]

_INSTALL = {
    "graph_tool": "graph-tool is not on PyPI: install Debian's package with 'sudo apt-get install "
    "python3-graph-tool' and use a venv made from /usr/bin/python3 with --system-site-packages (make setup does "
    "this), or conda install -c conda-forge graph-tool.",
    "torch_geometric": "pip install torch-geometric",
    "networkx": "pip install networkx",
    "pandas": "pip install pandas",
}


def require(module: str):
    """Import an optional backend or raise :class:`MissingDependencyError` naming how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"This feature needs the optional package '{module}', which is not importable ({exc}). "
            f"{_INSTALL.get(module, 'pip install ' + module)}"
        ) from exc


def _node_arrays(G):
    sizes = [p.size for p in G.partitions]
    part = np.repeat(np.arange(len(sizes)), sizes)
    local = np.concatenate([np.arange(s) for s in sizes]) if sizes else np.zeros(0, dtype=np.int64)
    return part, local


def to_networkx(G, *, multigraph: bool = True):
    """A ``networkx.MultiDiGraph`` (or ``DiGraph`` summing parallel edges with ``multigraph=False``).

    Nodes are global integers with attributes ``subset`` (partition index, so ``nx.multipartite_layout`` works
    unchanged), ``partition``, ``index`` (local) and ``role``. Edges carry ``weight`` (``|w|``), ``value`` (signed
    w), ``block`` (name), ``param`` (or None for identity edges), ``param_index`` (flat index into the parameter,
    -1 for identity edges) and ``kind``. ``H.graph["graphprune"]`` describes the partitions, blocks and parameter
    shapes, so that :func:`from_networkx` gives the graph back.

    Examples
    --------
    >>> import torch, networkx as nx, graphprune
    >>> G = graphprune.from_model(torch.nn.Linear(3, 2), torch.randn(1, 3))
    >>> H = G.to_networkx()
    >>> H.number_of_nodes(), H.number_of_edges(), len(nx.multipartite_layout(H))
    (5, 6, 5)
    """
    check_graph(G, "to_networkx")
    nx = require("networkx")
    H = nx.MultiDiGraph() if multigraph else nx.DiGraph()
    if multigraph:
        H.graph["graphprune"] = _structure(G)
    part, local = _node_arrays(G)
    parts = G.partitions
    H.add_nodes_from(
        (int(i), {"subset": int(p), "partition": parts[p].name, "index": int(j), "role": parts[p].role})
        for i, (p, j) in enumerate(zip(part, local))
    )
    e = G.edge_arrays()
    blocks = G.blocks
    if multigraph:
        H.add_edges_from(
            (int(s), int(d), {"weight": float(w), "value": float(v), "block": blocks[b].name,
                              "param": blocks[b].param, "param_index": int(i), "kind": blocks[b].edge_kind
                              if blocks[b].edge_kind != "feature" else blocks[b].kind})
            for s, d, w, v, b, i in zip(e["src"], e["dst"], e["weight"], e["value"], e["block"], e["param_index"])
        )
    else:
        A = G.adjacency(directed=True).tocoo()
        H.add_weighted_edges_from(zip(A.row.tolist(), A.col.tolist(), A.data.tolist()))
    return H


def to_scipy(G, *, directed: bool = True, weighted: bool = True, include_identity: bool = True):
    """Sparse adjacency (``scipy.sparse.csr_array``, N x N); parallel edges summed.

    Directed by default (``A[u, v]`` for u -> v); ``directed=False`` gives the symmetric adjacency.
    """
    check_graph(G, "to_scipy")
    return G.adjacency(directed=directed, weighted=weighted, include_identity=include_identity)


def to_pyg(G, *, hetero: bool = False):
    """A ``torch_geometric.data.Data`` (or ``HeteroData`` with ``hetero=True``).

    Data: ``edge_index`` (2, E) global ids, ``edge_weight`` (``|w|``), ``edge_block`` (block id), ``param_index``,
    ``partition`` and ``local_index`` per node, ``num_nodes``. HeteroData: one node type per partition
    (``num_nodes`` set) and one edge type ``(src, block name, dst)`` per block with ``edge_index`` (local ids)
    and ``edge_weight``.
    """
    check_graph(G, "to_pyg")
    import torch

    pyg = require("torch_geometric.data")
    e = G.edge_arrays()
    if not hetero:
        part, local = _node_arrays(G)
        return pyg.Data(
            edge_index=torch.as_tensor(np.stack([e["src"], e["dst"]]), dtype=torch.long),
            edge_weight=torch.as_tensor(e["weight"], dtype=torch.float64),
            edge_block=torch.as_tensor(e["block"], dtype=torch.long),
            param_index=torch.as_tensor(e["param_index"], dtype=torch.long),
            partition=torch.as_tensor(part, dtype=torch.long),
            local_index=torch.as_tensor(local, dtype=torch.long),
            num_nodes=G.num_nodes,
        )
    data = pyg.HeteroData()
    for p in G.partitions:
        data[p.name].num_nodes = p.size
    for bi, b in enumerate(G.blocks):
        sel = e["block"] == bi
        s = e["src"][sel] - G.node_offset(b.src)
        d = e["dst"][sel] - G.node_offset(b.dst)
        store = data[b.src, b.name, b.dst]
        store.edge_index = torch.as_tensor(np.stack([s, d]), dtype=torch.long)
        store.edge_weight = torch.as_tensor(e["weight"][sel], dtype=torch.float64)
    return data


def to_graph_tool(G):
    """A directed ``graph_tool.Graph`` with vertex properties ``partition``, ``index`` and edge properties
    ``weight``, ``value``, ``block`` and ``param_index``; parallel edges kept.

    Raises
    ------
    MissingDependencyError
        graph-tool is not importable (it is not on PyPI; the message says how to install it).
    """
    check_graph(G, "to_graph_tool")
    gt = require("graph_tool")
    g = gt.Graph(directed=True)
    g.add_vertex(G.num_nodes)
    e = G.edge_arrays()
    part, local = _node_arrays(G)
    vp = g.new_vertex_property("int", vals=part)
    vi = g.new_vertex_property("int", vals=local)
    g.vertex_properties["partition"] = vp
    g.vertex_properties["index"] = vi
    ew = g.new_edge_property("double")
    ev = g.new_edge_property("double")
    eb = g.new_edge_property("int")
    ei = g.new_edge_property("int64_t")
    if e["src"].size:
        g.add_edge_list(
            np.column_stack([e["src"], e["dst"], e["weight"], e["value"], e["block"], e["param_index"]]),
            eprops=[ew, ev, eb, ei],
        )
    g.edge_properties["weight"] = ew
    g.edge_properties["value"] = ev
    g.edge_properties["block"] = eb
    g.edge_properties["param_index"] = ei
    return g


def edges_frame(G):
    """One row per kept edge: ``src``, ``dst`` (global), ``src_partition``, ``dst_partition``, ``src_index``,
    ``dst_index`` (local), ``block``, ``param``, ``param_index``, ``weight`` (``|w|``), ``value`` and ``kind``."""
    check_graph(G, "edges_frame")
    pd = require("pandas")
    e = G.edge_arrays()
    part, local = _node_arrays(G)
    pnames = np.array([p.name for p in G.partitions], dtype=object)
    bnames = np.array([b.name for b in G.blocks], dtype=object)
    bparams = np.array([b.param for b in G.blocks], dtype=object)
    bkinds = np.array([b.edge_kind if b.edge_kind != "feature" else b.kind for b in G.blocks], dtype=object)
    s, d = e["src"].astype(np.int64), e["dst"].astype(np.int64)
    bl = e["block"].astype(np.int64)
    return pd.DataFrame({
        "src": s, "dst": d,
        "src_partition": pnames[part[s]] if s.size else [], "dst_partition": pnames[part[d]] if d.size else [],
        "src_index": local[s], "dst_index": local[d],
        "block": bnames[bl] if bl.size else [], "param": bparams[bl] if bl.size else [],
        "param_index": e["param_index"].astype(np.int64), "weight": e["weight"], "value": e["value"],
        "kind": bkinds[bl] if bl.size else [],
    })


def nodes_frame(G):
    """One row per node: ``node`` (global id), ``partition``, ``subset``, ``index``, ``role``, ``in_degree``,
    ``out_degree`` (kept edges) and ``strength`` (sum of incident ``|w|``)."""
    check_graph(G, "nodes_frame")
    pd = require("pandas")
    part, local = _node_arrays(G)
    parts = G.partitions
    return pd.DataFrame({
        "node": np.arange(G.num_nodes),
        "partition": np.array([p.name for p in parts], dtype=object)[part] if part.size else [],
        "subset": part, "index": local,
        "role": np.array([p.role for p in parts], dtype=object)[part] if part.size else [],
        "in_degree": G.degrees("in"), "out_degree": G.degrees("out"),
        "strength": G.degrees("all", weighted=True),
    })


# -- back to a MultipartiteGraph -------------------------------------------------------------------------------------
def _structure(G) -> dict:
    """What :func:`from_networkx` needs beyond nodes and edges: partitions, blocks (layout, shape, groups, rows)
    and parameter shapes and dtypes, as plain Python values."""
    blocks = []
    for b in G.blocks:
        d = {"name": b.name, "src": b.src, "dst": b.dst, "kind": b.kind, "edge_kind": b.edge_kind}
        if b.is_weight:
            d.update(param=b.param, layout=b.layout, groups=b.groups, shape=tuple(b.weight.shape),
                     param_slice=b.param_slice, dtype=str(b.weight.dtype).removeprefix("torch."))
        else:
            d.update(n_src=b.n_src, n_dst=b.n_dst)
        blocks.append(d)
    return {"partitions": [(p.name, p.size, p.role, tuple(p.shape), p.kind) for p in G.partitions],
            "blocks": blocks, "param_shapes": {k: tuple(v) for k, v in G.param_shapes.items()}}


def from_networkx(H):
    """A MultipartiteGraph from a networkx graph.

    Parameters
    ----------
    H : networkx.DiGraph or networkx.MultiDiGraph
        Either a graph made by :func:`to_networkx` (rebuilt exactly: partitions, blocks, layouts, parameter
        values of the kept edges, masks), or any directed graph whose nodes carry ``subset`` (the partition's
        position; ``partition`` and ``role`` are used when present) and whose edges go between different subsets
        and carry ``weight`` (1 when absent): then each pair of subsets joined by edges becomes one linear block
        :func:`from_scipy`-style.

    Returns
    -------
    MultipartiteGraph
        New tensors (float64 weights for a generic graph); absent node pairs of a block are masked out.

    Raises
    ------
    ParameterError
        ``H`` is not a directed networkx graph, a node has no ``subset``, or an edge stays inside one subset.

    Notes
    -----
    Masked edges are not in ``H``: they come back masked with weight 0. Identity edges come back in networkx's
    edge order (the same edges, possibly listed in another order). Does not modify ``H``.

    Examples
    --------
    >>> import torch, graphprune
    >>> from graphprune.convert import from_networkx
    >>> G = graphprune.from_model(torch.nn.Linear(3, 2), torch.randn(1, 3))
    >>> K = from_networkx(G.to_networkx())
    >>> K.num_nodes, K.num_edges, bool((K.blocks[0].weight == G.blocks[0].weight).all())
    (5, 6, True)
    """
    nx = require("networkx")
    if not isinstance(H, nx.DiGraph):
        raise ParameterError(f"The 'H' parameter of from_networkx must be a networkx DiGraph or MultiDiGraph. Got "
                             f"{show_typed(H)} instead.")
    meta = H.graph.get("graphprune")
    if meta is not None:
        return _from_structure(H, meta)
    missing = [v for v, d in H.nodes(data=True) if "subset" not in d]
    if missing:
        raise ParameterError(f"from_networkx needs a 'subset' attribute on every node (the partition's position, "
                             f"as nx.multipartite_layout uses it); node {missing[0]!r} has none.")
    subsets = sorted({d["subset"] for _, d in H.nodes(data=True)})
    pos = {s: i for i, s in enumerate(subsets)}
    nodes = sorted(H.nodes(data=True), key=lambda vd: pos[vd[1]["subset"]])  # stable: order within a subset kept
    order = {v: i for i, (v, _) in enumerate(nodes)}
    sizes = np.bincount([pos[d["subset"]] for _, d in nodes], minlength=len(subsets)).tolist()
    first = {}
    for _, d in nodes:
        first.setdefault(pos[d["subset"]], d)
    names = [str(first[i].get("partition", subsets[i])) for i in range(len(subsets))]
    roles = [first[i].get("role") for i in range(len(subsets))]
    n = len(nodes)
    rows, cols, vals = [], [], []
    for u, v, d in H.edges(data=True):
        rows.append(order[u])
        cols.append(order[v])
        vals.append(float(d.get("weight", 1.0)))
    A = sp.csr_array((np.asarray(vals, dtype=np.float64), (np.asarray(rows, dtype=np.int64),
                                                            np.asarray(cols, dtype=np.int64))), shape=(n, n))
    A.sum_duplicates()  # parallel edges: one conductance per node pair
    return from_scipy(A, sizes, names=names, roles=roles if all(roles) else None)


def _from_structure(H, meta) -> MultipartiteGraph:
    parts = [Partition(name, size, role, tuple(shape), kind) for name, size, role, shape, kind in meta["partitions"]]
    offsets = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    poff = {p.name: int(o) for p, o in zip(parts, offsets)}
    dtypes = {b["param"]: getattr(torch, b["dtype"]) for b in meta["blocks"] if b["kind"] == "weight"}
    values = {k: np.zeros(int(np.prod(s)) if s else 1) for k, s in meta["param_shapes"].items() if k in dtypes}
    kept = {k: np.zeros(v.size, dtype=bool) for k, v in values.items()}
    ident = {b["name"]: ([], []) for b in meta["blocks"] if b["kind"] != "weight"}
    bmeta = {b["name"]: b for b in meta["blocks"]}
    for u, v, d in H.edges(data=True):
        b = bmeta[d["block"]]
        if b["kind"] == "weight":
            values[b["param"]][d["param_index"]] = d["value"]
            kept[b["param"]][d["param_index"]] = True
        else:
            ident[b["name"]][0].append(u - poff[b["src"]])
            ident[b["name"]][1].append(v - poff[b["dst"]])
    params = {k: torch.from_numpy(v).to(dtypes[k]).reshape(meta["param_shapes"][k]) for k, v in values.items()}
    blocks = []
    for b in meta["blocks"]:
        if b["kind"] == "weight":
            full = params[b["param"]]
            w = full if b["param_slice"] is None else full[b["param_slice"][0] : b["param_slice"][1]]
            blocks.append(Block(b["name"], b["src"], b["dst"], param=b["param"], weight=w,
                                param_slice=b["param_slice"], layout=b["layout"], groups=b["groups"],
                                edge_kind=b["edge_kind"]))
        else:
            s, d = ident[b["name"]]
            blocks.append(Block(b["name"], b["src"], b["dst"], kind=b["kind"], edge_kind=b["edge_kind"],
                                src_index=np.asarray(s, dtype=np.int64), dst_index=np.asarray(d, dtype=np.int64),
                                meta={"n_src": b["n_src"], "n_dst": b["n_dst"]}))
    masks = {k: torch.from_numpy(m).reshape(meta["param_shapes"][k]) for k, m in kept.items() if not m.all()}
    return MultipartiteGraph(parts, blocks, masks=masks or None, param_shapes=meta["param_shapes"])


def from_scipy(A, sizes, *, names=None, roles=None):
    """A MultipartiteGraph of linear blocks from a directed adjacency and the partition sizes.

    Parameters
    ----------
    A : scipy sparse array or matrix, or array_like, shape (N, N)
        ``A[u, v]`` is the weight of the edge u -> v (nodes numbered partition by partition, as
        :func:`to_scipy` numbers them); stored entries are edges, the others absent.
    sizes : sequence of int
        Node count of each partition, in order; they sum to ``N``.
    names : sequence of str, optional
        Partition names (``"0"``, ``"1"``, ... by default).
    roles : sequence of str, optional
        Partition roles; by default the first partition is ``"input"``, the last ``"output"``, the rest
        ``"hidden"``.

    Returns
    -------
    MultipartiteGraph
        One linear block per ordered pair of partitions joined by at least one edge, named ``"src->dst"``, backed
        by a new float64 parameter ``"src->dst.weight"`` of shape ``(n_dst, n_src)`` holding ``A``'s values;
        the pairs without a stored entry are masked out. ``G.biadjacency(block)`` is ``A[src rows, dst columns].T``.

    Raises
    ------
    ParameterError
        ``A`` is not square, ``sizes`` do not sum to ``N``, an edge stays inside one partition, or a weight is
        negative or not finite.

    Notes
    -----
    Parallel edges cannot be expressed by an adjacency: a graph with convolutions comes back with one linear
    block per convolution whose weight is the channel-pair sum (:meth:`MultipartiteGraph.block_pairs`).
    Does not modify ``A``.

    Examples
    --------
    >>> import numpy as np
    >>> from graphprune.convert import from_scipy
    >>> A = np.zeros((5, 5)); A[0, 3] = 2.0; A[2, 4] = 0.5
    >>> G = from_scipy(A, [3, 2])
    >>> G.block("0->1").weight.tolist(), G.num_edges
    ([[2.0, 0.0, 0.0], [0.0, 0.0, 0.5]], 2)
    """
    A = sp.coo_array(A if sp.issparse(A) else np.asarray(A, dtype=np.float64))
    A.sum_duplicates()
    sizes = [int(s) for s in sizes]
    n = sum(sizes)
    if A.ndim != 2 or A.shape != (n, n):
        raise ParameterError(f"The 'A' parameter of from_scipy must be a square ({n}, {n}) adjacency (the sizes sum "
                             f"to {n}). Got shape {A.shape} instead.")
    data = A.data.astype(np.float64)
    if data.size and not (np.isfinite(data).all() and (data >= 0).all()):
        raise ParameterError("The 'A' parameter of from_scipy holds negative, NaN or inf weights.")
    k = len(sizes)
    names = [str(i) for i in range(k)] if names is None else [str(x) for x in names]
    if roles is None:
        roles = ["input"] + ["hidden"] * (k - 2) + ["output"] if k > 1 else ["input"]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pu = np.searchsorted(offsets, A.row, side="right") - 1
    pv = np.searchsorted(offsets, A.col, side="right") - 1
    if (pu == pv).any():
        i = int(np.flatnonzero(pu == pv)[0])
        raise ParameterError(f"from_scipy: the edge {int(A.row[i])} -> {int(A.col[i])} stays inside partition "
                             f"{names[pu[i]]!r}; a multipartite graph has edges between partitions only.")
    parts = [Partition(nm, s, r, (s,), "neuron") for nm, s, r in zip(names, sizes, roles)]
    blocks, masks = [], {}
    for a, c in sorted(set(zip(pu.tolist(), pv.tolist()))):
        sel = (pu == a) & (pv == c)
        src, dst = A.row[sel] - offsets[a], A.col[sel] - offsets[c]
        w = torch.zeros(sizes[c], sizes[a], dtype=torch.float64)  # (out, in): linear layout
        m = torch.zeros(sizes[c], sizes[a], dtype=torch.bool)
        w[dst, src] = torch.from_numpy(data[sel])
        m[dst, src] = True
        name = f"{names[a]}->{names[c]}"
        blocks.append(Block(name, names[a], names[c], param=f"{name}.weight", weight=w))
        if not bool(m.all()):
            masks[f"{name}.weight"] = m
    return MultipartiteGraph(parts, blocks, masks=masks or None)
