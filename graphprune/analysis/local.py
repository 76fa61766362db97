"""Local connectivity: degrees, strength, isolated, sink and source nodes, removable edges.

Every function takes the graph ``G`` first and ``masks`` (masks to apply, keyed by parameter name) as a keyword;
the graph is never modified. A first argument that is not a MultipartiteGraph raises ParameterError
(:func:`graphprune._validation.check_graph`, the one check of every graph-first function). Degrees count kept
edges, identity edges included (a residual add keeps a node alive), and parallel convolution edges separately.
Everything is computed from per-block reductions of the masks (:meth:`MultipartiteGraph.block_degrees`,
:meth:`Block.broadcast_nodes`), never from per-edge index arrays.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_graph

__all__ = ["node_status", "degree_table", "removable_edges"]


def _masked(G, masks=None, owner="this function"):
    """``G`` with ``masks`` applied (``G`` itself when None), after the graph-first check naming ``owner``."""
    check_graph(G, owner)
    return G if masks is None else G.with_masks(masks)


def node_status(G, *, masks=None) -> dict:
    """Per node (global order): in/out degree, strength and status flags.

    Returns
    -------
    dict of numpy.ndarray
        ``in_degree``, ``out_degree``, ``strength`` (sum of incident ``|w|``), ``isolated`` (no kept edge),
        ``sink`` (incoming but no outgoing edges, output partitions excluded), ``source`` (outgoing but no incoming,
        input partitions excluded), ``partition`` (partition index).

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
    >>> G = graphprune.from_model(net, torch.randn(1, 2))
    >>> st = node_status(G, masks={"1.weight": torch.tensor([[True, False]])})
    >>> st["sink"].nonzero()[0].tolist()  # hidden neuron 1 feeds nothing
    [3]
    """
    H = _masked(G, masks, "node_status")
    ind = H.degrees("in")
    outd = H.degrees("out")
    roles = np.array([p.role for p in H.partitions])
    part = np.repeat(np.arange(len(H.partitions)), [p.size for p in H.partitions])
    role = roles[part]
    return dict(
        in_degree=ind, out_degree=outd, strength=H.degrees("all", weighted=True), partition=part,
        isolated=(ind == 0) & (outd == 0),
        sink=(ind > 0) & (outd == 0) & (role != "output"),
        source=(outd > 0) & (ind == 0) & (role != "input"),
    )


def degree_table(G, *, masks=None, bins: int = 10):
    """One row per partition: degree statistics, dead nodes and strength.

    Columns: ``partition``, ``role``, ``size``, ``in_min``, ``in_mean``, ``in_max``, ``out_min``, ``out_mean``,
    ``out_max``, ``isolated``, ``sinks``, ``sources``, ``strength_mean``, ``in_hist`` (counts of in-degrees over
    ``bins`` equal bins from 0 to the maximum, a list).
    """
    import pandas as pd

    st = node_status(_masked(G, masks, "degree_table"))
    rows = []
    for i, p in enumerate(G.partitions):
        sel = st["partition"] == i
        ind, outd = st["in_degree"][sel], st["out_degree"][sel]
        top = max(int(ind.max()), 1)
        hist = np.histogram(ind, bins=bins, range=(0, top))[0].tolist()
        rows.append(dict(
            partition=p.name, role=p.role, size=p.size,
            in_min=int(ind.min()), in_mean=float(ind.mean()), in_max=int(ind.max()),
            out_min=int(outd.min()), out_mean=float(outd.mean()), out_max=int(outd.max()),
            isolated=int(st["isolated"][sel].sum()), sinks=int(st["sink"][sel].sum()),
            sources=int(st["source"][sel].sum()), strength_mean=float(st["strength"][sel].mean()), in_hist=hist,
        ))
    return pd.DataFrame(rows)


def removable_edges(G, *, masks=None) -> dict:
    """Per block, the kept edges that only feed sinks or only come from sources (they cannot carry signal from
    input to output), as bool arrays in edge (parameter) order, and their count under ``"<block>:count"``.

    This is the local, one-hop view; :func:`graphprune.analysis.global_.effective_mask` gives the exact global
    answer (edges on no input-output path).
    """
    H = _masked(G, masks, "removable_edges")
    st = node_status(H)
    dead_end = st["sink"] | st["isolated"]
    no_input = st["source"] | st["isolated"]
    out = {}
    for b in H.blocks:
        so, do = H.node_offset(b.src), H.node_offset(b.dst)
        S, D = b.broadcast_nodes(no_input[so : so + b.n_src], dead_end[do : do + b.n_dst])
        kept = H.block_mask(b).numpy() if b.is_weight else np.ones(b.num_edges, dtype=bool)
        r = (kept & (D | S)).reshape(-1)
        out[b.name] = r
        out[f"{b.name}:count"] = int(r.sum())
    return out
