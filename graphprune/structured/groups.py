"""Coupled node groups: the nodes of a multipartite graph that structured pruning must remove together.

Removing a neuron or a channel from a model removes a node of its graph, and with it every node that cannot exist
without it. The graph already holds each coupling as structural edges; this module reads them:

- **Identity (feature) edges** couple their ends: a residual add ties channel ``i`` of every operand to channel
  ``i`` of the sum; a concatenation maps each operand's channel to its offset; flatten maps channel ``c`` to its
  ``H*W`` features; slices and splits (``chunk``, ``split``, ``x[..., a:b]``) map a channel to its copy; a channel
  shuffle maps it through its permutation. Connected components of these edges are the groups.
- **Grouped convolutions** couple each convolution group's input and output channels: the group is removed whole
  (a depthwise convolution's input channel with its output channels).
- **Attention** couples a head's query channels with its outputs (score edges), and grouped-query attention shares
  key and value channels between the query heads of a group: a query head is one group, and the key/value
  channels of a group of query heads are a ``"kv_group"`` group that goes only with all its query heads.
- **Tied weights** back several blocks with one parameter: groups meeting in a tied parameter are one group.

What the walk saw besides edges (``G.channel_uses``, :mod:`graphprune.export.uses`) decides the rest: a
normalisation over the channels (LayerNorm, RMSNorm, a softmax over channels) makes a group ``"width"`` (its
removal changes the normalised outputs, so it is only removed on request); a module the exporter skipped
(``skip_unsupported=True``) or a tensor broadcast against the channels in a layout the walk could not follow makes
the groups through it unprunable, with the reason. Groups that reach the model's inputs or outputs are never
pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_graph
from ..errors import UnsupportedOperationError
from ..graph import MultipartiteGraph

__all__ = ["NodeGroup", "node_groups", "GROUP_KINDS"]

#: Kinds of node groups, see :class:`NodeGroup`.
GROUP_KINDS = ("neuron", "channel", "head", "kv_group", "width")


@dataclass(eq=False)
class NodeGroup:
    """Nodes that are removed together.

    Attributes
    ----------
    id : int
        Position in the list :func:`node_groups` returns.
    kind : {"neuron", "channel", "head", "kv_group", "width"}
        ``"neuron"`` (Linear outputs), ``"channel"`` (convolution outputs), ``"head"`` (a query head, with its
        keys and values when they are not shared), ``"kv_group"`` (the key and value channels of a group of query
        heads under grouped-query attention; removed only with all its heads), ``"width"`` (a group whose channels
        a normalisation or a softmax mixes with others: the transformer hidden width, removed only on request).
    nodes : dict of str to numpy.ndarray
        Partition name -> sorted local node indices.
    layer : str
        The partition that names the group's layer (the first partition of the group in the graph's order, or the
        attention output for heads): groups of one layer share it, for per-layer allocation.
    prunable : bool
        False when the group reaches the model's inputs or outputs, or passes through an unknown coupling.
    reason : str or None
        Why the group is not prunable.
    parent : int or None
        For a query head under grouped-query attention: the id of its ``"kv_group"``.
    children : list of int
        For a ``"kv_group"``: the ids of its query heads.
    mixed : list of str
        Where the group's channels are mixed with channels outside it (a LayerNorm, an RMSNorm, a softmax over
        channels): the ops, for messages. Such groups (``"width"``, or heads under a norm over every head) change
        the mixed outputs when removed; they are removed only on request.
    """

    id: int
    kind: str
    nodes: dict
    layer: str
    prunable: bool = True
    reason: str | None = None
    parent: int | None = None
    children: list = field(default_factory=list)
    mixed: list = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of nodes."""
        return int(sum(v.size for v in self.nodes.values()))

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}[{len(v)}]" for k, v in list(self.nodes.items())[:4])
        more = ", ..." if len(self.nodes) > 4 else ""
        flag = "" if self.prunable else f", not prunable: {self.reason}"
        return f"NodeGroup({self.id}, {self.kind}, layer='{self.layer}', {parts}{more}{flag})"


class _UnionFind:
    def __init__(self, n):
        self.parent = np.arange(n, dtype=np.int64)

    def find_all(self):
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def union(self, a, b):
        """Union ``a[i]`` with ``b[i]`` for every i (vectorised, repeated until stable)."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.size == 0:
            return
        while True:
            ra, rb = self.find_all()[a], self.find_all()[b]
            diff = ra != rb
            if not diff.any():
                return
            lo, hi = np.minimum(ra[diff], rb[diff]), np.maximum(ra[diff], rb[diff])
            self.parent[hi] = np.minimum(self.parent[hi], lo)  # roots point at smaller roots
            np.minimum.at(self.parent, hi, lo)


def _ids(G, part, local):
    return G.node_offset(part) + np.asarray(local, dtype=np.int64)


def _attention_outputs(G):
    """Attention output partition -> (score blocks, value blocks) into it."""
    out = {}
    for b in G.blocks:
        if not b.is_weight and b.edge_kind == "score":
            out.setdefault(b.dst, ([], []))[0].append(b)
    for b in G.blocks:
        if not b.is_weight and b.edge_kind == "feature" and b.dst in out:
            out[b.dst][1].append(b)
    return out


def _by_src(src, dst):
    """Sources in increasing order and, for each, the sorted array of its destinations."""
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    keys, starts = np.unique(src, return_index=True)
    return keys, np.split(dst, starts[1:])


def _heads(G, O, scores, values):
    """The head structure of attention output ``O``: ``(heads, head_of, units)``: ``heads`` lists the output
    nodes of each head, ``head_of`` maps an output node to its head, ``units`` maps each source partition to
    ``(source nodes, frozenset of the heads each touches)``."""
    n = G.partition(O).size
    finest = None
    for b in scores:  # the score block whose sources reach the fewest outputs holds the query heads
        reach = np.bincount(b.src_index, minlength=b.n_src)
        m = reach[reach > 0].max() if reach.any() else 0
        if finest is None or m < finest[0]:
            finest = (m, b)
    b = finest[1]
    _, dsts = _by_src(b.src_index, b.dst_index)
    heads = sorted({tuple(d.tolist()) for d in dsts}, key=lambda k: k[0])
    heads = [np.array(h, dtype=np.int64) for h in heads]
    head_of = np.full(n, -1, dtype=np.int64)
    for h, nodes in enumerate(heads):
        if (head_of[nodes] >= 0).any():
            raise UnsupportedOperationError(
                f"Attention output '{O}': the score edges of '{b.src}' overlap between heads; the head structure is "
                "unknown, so its heads cannot be grouped.")
        head_of[nodes] = h
    if (head_of < 0).any() or len({len(h) for h in heads}) != 1:
        raise UnsupportedOperationError(
            f"Attention output '{O}': its score edges do not split its {n} outputs into heads of equal size; the head "
            "structure is unknown, so its heads cannot be grouped.")
    units = []
    for blk in scores + values:
        srcs, hs = _by_src(blk.src_index, head_of[blk.dst_index])
        units.append((blk.src, srcs, [frozenset(np.unique(h).tolist()) for h in hs]))
    return heads, head_of, units


def node_groups(G: MultipartiteGraph) -> list[NodeGroup]:
    """The groups of nodes that must be removed together to prune ``G``'s model structurally.

    Parameters
    ----------
    G : MultipartiteGraph
        A graph from :func:`graphprune.from_model` (its ``channel_uses`` record normalisations and skipped
        modules); a graph built by hand is grouped from its edges alone.

    Returns
    -------
    list of NodeGroup
        Every node of every partition is in exactly one group, in the order of the graph's partitions. Groups that
        reach an input or output partition, or a coupling the exporter did not follow, have ``prunable=False`` and
        a ``reason``.

    Raises
    ------
    ParameterError
        ``G`` is not a MultipartiteGraph.
    UnsupportedOperationError
        The score edges of an attention do not split its outputs into heads (a head structure the grouping does
        not know): the message names the attention and the partition.

    Notes
    -----
    Connected components of the identity (feature) edges, of each convolution group, of each attention head and
    of each key/value group, found with a vectorised union-find (``O((N + E_identity) log N)``); weight blocks
    need no work per edge. ``G`` is not modified.

    Examples
    --------
    >>> import torch, graphprune
    >>> from graphprune.structured import node_groups
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> groups = node_groups(graphprune.from_model(net, torch.randn(1, 4)))
    >>> [(g.kind, g.layer, g.prunable) for g in groups if g.prunable]
    [('neuron', '0', True), ('neuron', '0', True), ('neuron', '0', True)]
    """
    check_graph(G, "node_groups")
    A, B = [], []  # node pairs to unite

    def pair(a, b):
        A.append(np.asarray(a, dtype=np.int64).ravel())
        B.append(np.asarray(b, dtype=np.int64).ravel())

    attn = _attention_outputs(G)
    value_blocks = {id(b) for _, vs in attn.values() for b in vs}
    for b in G.blocks:
        if not b.is_weight and b.edge_kind == "feature" and id(b) not in value_blocks:
            pair(_ids(G, b.src, b.src_index), _ids(G, b.dst, b.dst_index))
        elif b.is_weight and b.grid.groups > 1:  # a grouped convolution (the grid's groups are 1 otherwise)
            g = b.groups  # each convolution group's inputs and outputs go together
            ins, outs = b.n_src // g, b.n_dst // g
            rep = _ids(G, b.src, np.arange(g) * ins)
            i, o = np.arange(b.n_src), np.arange(b.n_dst)
            pair(rep[i // ins], _ids(G, b.src, i))
            pair(rep[o // outs], _ids(G, b.dst, o))
    tied = {}
    for b in G.weight_blocks:  # a tied parameter: the same rows and columns in every use
        tied.setdefault(b.param, []).append(b)
    for blocks in tied.values():
        for other in blocks[1:]:
            for side in ("src", "dst"):
                a, c = _tied_side(blocks[0], side), _tied_side(other, side)
                if a is not None and c is not None and G.partition(a).size == G.partition(c).size:
                    n = G.partition(a).size
                    pair(_ids(G, a, np.arange(n)), _ids(G, c, np.arange(n)))
    heads_info = {}
    for O, (scores, values) in attn.items():
        heads, head_of, units = _heads(G, O, scores, values)
        reps = _ids(G, O, [h[0] for h in heads])
        pair(reps[head_of], _ids(G, O, np.arange(head_of.size)))
        kv_sets = {}
        for part, srcs, touched in units:
            ids = _ids(G, part, srcs)
            single = np.array([len(t) == 1 for t in touched])
            if single.any():
                pair(reps[[next(iter(t)) for t, s in zip(touched, single) if s]], ids[single])
            for t, node in zip(touched, ids):
                if len(t) > 1:
                    kv_sets.setdefault(t, []).append(node)
        sets = list(kv_sets)
        for i, a in enumerate(sets):
            for c in sets[i + 1:]:
                if a & c:
                    raise UnsupportedOperationError(
                        f"Attention output '{O}': key/value channels are shared by overlapping sets of query heads "
                        f"({sorted(a)} and {sorted(c)}); the grouped-query structure is unknown.")
        for nodes in kv_sets.values():
            nodes = np.array(nodes)
            pair(nodes[:1].repeat(nodes.size), nodes)
        heads_info[O] = (heads, kv_sets)
    uf = _UnionFind(G.num_nodes)
    if A:
        uf.union(np.concatenate(A), np.concatenate(B))
    return _collect(G, uf.find_all(), heads_info)


def _tied_side(b, side):
    """The partition whose nodes index the rows (dst) or columns (src) of a tied parameter's tensor."""
    if b.param_slice is not None:
        return None
    return getattr(b, b.grid.storage_side(0 if side == "dst" else 1))  # dst: dim 0 (rows); src: dim 1


def _collect(G, root, heads_info):
    parts = G.partitions
    offsets = [G.node_offset(p.name) for p in parts]
    uniq, first, inv = np.unique(root, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
    label = rank[inv.ravel()]  # groups numbered in order of their first node
    members = [dict() for _ in uniq]
    for p, off in zip(parts, offsets):
        lab = label[off : off + p.size]
        srt = np.argsort(lab, kind="stable")
        lab_s = lab[srt]
        cuts = np.flatnonzero(np.diff(lab_s)) + 1
        for chunk in np.split(srt, cuts):
            if chunk.size:
                members[int(lab[chunk[0]])][p.name] = np.sort(chunk)
    uses = getattr(G, "channel_uses", None) or ()
    weight_dst = {b.dst: b for b in G.weight_blocks}
    sliced = {b.dst: b for b in G.weight_blocks if b.param_slice is not None}
    packed_src = {b.src: b for b in G.weight_blocks if b.param_slice is not None}
    groups = []
    for i, nodes in enumerate(members):
        first_part = next(iter(nodes))
        kind = "channel" if any(G.partition(p).kind == "channel" for p in nodes) else "neuron"
        groups.append(NodeGroup(i, kind, nodes, first_part))
    # attention heads and key/value groups
    node_label = lambda part, idx: int(label[G.node_offset(part) + idx])  # noqa: E731
    for O, (heads, kv_sets) in heads_info.items():
        head_ids = [node_label(O, h[0]) for h in heads]
        if len(set(head_ids)) != len(head_ids):
            for gid in set(head_ids):
                _refuse(groups[gid], f"several heads of attention '{O}' are coupled by other edges")
        for gid in head_ids:
            groups[gid].kind, groups[gid].layer = "head", O
        for touched, nodes in kv_sets.items():
            gid = int(label[nodes[0]])
            g = groups[gid]
            g.kind, g.layer = "kv_group", O
            g.children = sorted({head_ids[h] for h in touched})
            for c in g.children:
                groups[c].parent = gid
    # what can be removed
    role = {p.name: p.role for p in parts}
    by_part = {}
    for u in uses:
        by_part.setdefault(u.part, []).append(u)
    for g in groups:  # channels mixed with channels outside the group (a norm, a softmax over channels)
        for p, idx in g.nodes.items():
            for u in by_part.get(p, ()):
                if u.kind == "reduce" and u.index is not None:
                    lab = u.index[idx]
                    lab = lab[lab >= 0]
                    if lab.size and not np.isin(np.flatnonzero(np.isin(u.index, lab)), idx).all():
                        g.mixed.append(f"{u.op} at {u.where}")
        if g.mixed and g.kind not in ("head", "kv_group"):
            g.kind = "width"
    for g in groups:
        ends = [p for p in g.nodes if role[p] in ("input", "output")]
        if ends:
            _refuse(g, f"it reaches the model's {role[ends[0]]} '{ends[0]}'")
            continue
        tokens = [p for p in g.nodes if G.partition(p).kind == "token"]
        if tokens:
            _refuse(g, f"its nodes in '{tokens[0]}' are token positions, not features")
            continue
        fed = [p for p in g.nodes if p in packed_src]
        if fed:
            b = packed_src[fed[0]]
            _refuse(g, f"its nodes feed the packed parameter '{b.param}' (an nn.MultiheadAttention ties its "
                       "embed_dim to its heads; its input width cannot shrink without replacing the module)")
            continue
        packed = [p for p in g.nodes if p in sliced]
        if packed:
            b = sliced[packed[0]]
            _refuse(g, f"its nodes are rows {b.param_slice} of the packed parameter '{b.param}' (an "
                       "nn.MultiheadAttention keeps its query width equal to embed_dim; heads cannot be removed "
                       "without replacing the module)")
            continue
        if not any(p in weight_dst for p in g.nodes) and g.kind not in ("head", "kv_group"):
            _refuse(g, "no weight produces its nodes")
            continue
        for p in g.nodes:
            for u in by_part.get(p, ()):
                if u.kind == "skipped":
                    _refuse(g, f"it passes through {u.where}, which has no adapter (skip_unsupported): its "
                               "coupling is unknown")
                elif u.kind in ("param", "module") and u.index is None:
                    _refuse(g, f"'{u.name}' is applied to its channels at {u.where} in a layout the exporter "
                               "could not follow")
                elif u.kind == "reduce" and u.index is None:
                    _refuse(g, f"{u.op} at {u.where} mixes its channels in a layout the exporter could not follow")
            if not g.prunable:
                break
    return groups


def _refuse(g, reason):
    if g.prunable:
        g.prunable, g.reason = False, reason

