"""Conversions of a MultipartiteGraph to networkx, torch_geometric, graph-tool, scipy and pandas.

Every backend is imported lazily, inside the function that needs it. Every converter respects masks: a masked
edge is absent. Nodes are numbered globally (partition by partition, see
:meth:`MultipartiteGraph.node_offset`); edges are directed from input to output. A first argument that is not a
MultipartiteGraph raises ParameterError naming the type received.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_graph
from .errors import MissingDependencyError

__all__ = ["to_networkx", "to_pyg", "to_graph_tool", "to_scipy", "edges_frame", "nodes_frame", "require"]

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
    -1 for identity edges) and ``kind``.

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
