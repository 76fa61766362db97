"""The traversal behind the global metrics and the report, written once.

Blocks are walked in topological order (by destination partition): a forward sweep (kept degrees and strength,
reachability from the inputs, log path counts and the SynFlow objective, connected components) and a backward
sweep (what reaches an output). Each sweep holds one block's kept edges at a time: no whole-graph edge array is
built, and memory beyond the masks and a few arrays over the nodes is that of one block.

:mod:`graphprune.analysis.global_` (``reachability``, ``count_paths``, ``components``, ``layer_collapse``) and
:func:`graphprune.analysis.report` are both built on these functions; :func:`collapse_findings` writes the layer
collapse findings of both as :class:`~graphprune.analysis.reasons.Reason` objects.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ParameterError
from .reasons import Reason

__all__ = ["topological_blocks", "kept_edges", "forward_sweep", "backward_sweep", "collapse_findings"]


def topological_blocks(H, owner: str = "count_paths"):
    """The blocks sorted by destination partition, and the partition index; ParameterError on a backward block."""
    index = {p.name: i for i, p in enumerate(H.partitions)}
    for b in H.blocks:
        if index[b.src] >= index[b.dst]:
            raise ParameterError(f"{owner} needs partitions in topological order; block '{b.name}' goes from "
                                 f"'{b.src}' back to '{b.dst}'.")
    return sorted(H.blocks, key=lambda b: index[b.dst]), index


def role_nodes(H, role) -> np.ndarray:
    """Global ids of the nodes of every partition with ``role`` (``"input"``, ``"output"``)."""
    out = [np.arange(H.node_offset(p.name), H.node_offset(p.name) + p.size) for p in H.partitions if p.role == role]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def kept_edges(H, b, *, weights: bool = True):
    """Local ``(src, dst)`` of a block's kept edges and, for weight blocks with ``weights``, their ``|w|``
    (float64; None for identity blocks or without ``weights``)."""
    s, d = b.edge_index()
    if not b.is_weight:
        return s, d, None
    keep = H.block_mask(b).reshape(-1).numpy()
    if not weights:
        return s[keep], d[keep], None
    w = b.weight.detach().reshape(-1).abs().to("cpu").double().numpy()
    return s[keep], d[keep], w[keep]


def _logsumexp_into(target, idx, vals):
    """``target[i] = log(exp(target[i]) + sum(exp(vals[idx == i])))`` for every touched ``i``."""
    ok = np.isfinite(vals)
    if not ok.any():
        return
    idx, vals = idx[ok], vals[ok]
    mx = np.full(target.size, -np.inf)
    np.maximum.at(mx, idx, vals)
    tot = np.zeros(target.size)
    np.add.at(tot, idx, np.exp(vals - mx[idx]))
    touched = np.flatnonzero(tot > 0)
    target[touched] = np.logaddexp(target[touched], mx[touched] + np.log(tot[touched]))


class _Components:
    """Connected components merged block by block: labels of every node, memory per block only."""

    def __init__(self, n):
        self.labels = np.arange(n)

    def add(self, u, v):
        from scipy.sparse import csr_array
        from scipy.sparse.csgraph import connected_components

        if u.size == 0:
            return
        n = int(self.labels.max()) + 1
        lu, lv = self.labels[u], self.labels[v]
        A = csr_array((np.ones(lu.size), (lu, lv)), shape=(n, n))
        _, merged = connected_components(A, directed=False)
        self.labels = merged[self.labels]

    @property
    def count(self):
        return int(np.unique(self.labels).size)


def _log10_total(lp, outs):
    """log10 of the sum of ``exp(lp)`` over the output nodes ``outs``; ``-inf`` when none is reached."""
    v = lp[outs]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -math.inf
    m = v.max()
    return float((m + np.log(np.exp(v - m).sum())) / math.log(10))


def forward_sweep(H, *, owner: str = "report", degrees: bool = False, paths: bool = False, synflow: bool = False,
                  components: bool = False, max_cut_edges: int | None = None) -> dict:
    """One pass over the blocks in topological order.

    Always returns ``order``, ``index`` (partition index), ``offsets`` (partition -> first global node id) and
    ``fwd`` (bool per node: reachable from an input along kept edges, identity edges included). On request:
    ``in_degree``, ``out_degree`` and ``strength`` (``degrees``); ``log10_paths`` (``paths``: log10 of the number
    of input-output paths, parallel edges distinct, ``-inf`` when disconnected); ``log10_synflow`` (``synflow``:
    of the sum over paths of the product of ``|w|``, identity edges weight 1); ``components`` and
    ``component_labels`` (``components``: weakly connected components, labels numbered in order of their first
    node); ``cut_pairs`` (with ``max_cut_edges``: the number of distinct undirected node pairs while it stays at
    most ``max_cut_edges``, else None).

    Raises
    ------
    ParameterError
        A block goes from a later partition to an earlier one (the message names ``owner``).
    """
    order, index = topological_blocks(H, owner)
    n = H.num_nodes
    off = {p.name: H.node_offset(p.name) for p in H.partitions}
    fwd = np.zeros(n, dtype=bool)
    inputs = role_nodes(H, "input")
    fwd[inputs] = True
    if degrees:
        ind, outd, strength = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n)
    if paths:
        logp = np.full(n, -np.inf)
        logp[inputs] = 0.0
    if synflow:
        logw = np.full(n, -np.inf)
        logw[inputs] = 0.0
    comps = _Components(n) if components else None
    cut = max_cut_edges is not None
    pairs, n_pairs = [], 0
    for b in order:
        s, d, w = kept_edges(H, b, weights=degrees or synflow)
        gs, gd = s + off[b.src], d + off[b.dst]
        if degrees or synflow:
            wt = w if w is not None else np.ones(s.size)  # identity edges weigh 1
        if degrees:
            ind += np.bincount(gd, minlength=n)
            outd += np.bincount(gs, minlength=n)
            strength += np.bincount(gs, weights=wt, minlength=n) + np.bincount(gd, weights=wt, minlength=n)
        fwd[gd[fwd[gs]]] = True
        if paths:
            _logsumexp_into(logp, gd, logp[gs])
        if synflow:
            with np.errstate(divide="ignore"):
                _logsumexp_into(logw, gd, logw[gs] + np.log(wt))
        if components or cut:
            key = np.unique(np.minimum(gs, gd) * n + np.maximum(gs, gd)) if gs.size else np.zeros(0, dtype=np.int64)
            if components:
                comps.add(key // n, key % n)
            if cut and n_pairs <= max_cut_edges:
                pairs.append(key)
                n_pairs += key.size
    out = dict(order=order, index=index, offsets=off, fwd=fwd)
    outs = role_nodes(H, "output")
    if degrees:
        out.update(in_degree=ind, out_degree=outd, strength=strength)
    if paths:
        out["log10_paths"] = _log10_total(logp, outs)
    if synflow:
        out["log10_synflow"] = _log10_total(logw, outs)
    if components:
        out["components"] = comps.count
        out["component_labels"] = np.unique(comps.labels, return_inverse=True)[1].reshape(-1)
    if cut:
        out["cut_pairs"] = (int(np.unique(np.concatenate(pairs)).size) if pairs and n_pairs <= max_cut_edges
                            else None)
    return out


def backward_sweep(H, order) -> np.ndarray:
    """Bool per node: reaches an output node along kept edges (identity edges included); ``order`` from
    :func:`forward_sweep` or :func:`topological_blocks`."""
    n = H.num_nodes
    bwd = np.zeros(n, dtype=bool)
    bwd[role_nodes(H, "output")] = True
    for b in reversed(order):
        s, d, _ = kept_edges(H, b, weights=False)
        gs, gd = s + H.node_offset(b.src), d + H.node_offset(b.dst)
        bwd[gs[bwd[gd]]] = True
    return bwd


def collapse_findings(H, fwd, bwd, collapsed) -> list[Reason]:
    """Layer collapse, as reasons: input and output disconnected (code ``"disconnected"``), each block in
    ``collapsed`` (names of blocks with no effective edge; code ``"layer_collapsed"``), and each partition with no
    node on an input-output path (code ``"partition_cut_off"``), in that order."""
    found = []
    if not fwd[role_nodes(H, "output")].any():
        found.append(Reason("disconnected", "input and output are disconnected"))
    for name in collapsed:
        found.append(Reason("layer_collapsed", f"layer collapsed: block '{name}' has no effective edge",
                            {"block": name}))
    alive = fwd & bwd
    for p in H.partitions:
        off = H.node_offset(p.name)
        if not alive[off : off + p.size].any():
            found.append(Reason("partition_cut_off",
                                f"partition '{p.name}' is cut off (no node on an input-output path)",
                                {"partition": p.name, "size": p.size}))
    return found
