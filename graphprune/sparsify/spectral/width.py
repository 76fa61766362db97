"""The effective width of a spectral sparsifier: which nodes stay when the budget is below the node count, the
budgets their blocks can use, and the masks inside them (``SpectralSparsifier(width="auto")``, the default).

A connected graph on ``n`` nodes needs ``n - 1`` edges, and a spectral sparsifier needs more (Spielman and
Srivastava keep ``O(n log n / eps^2)``). When a block's budget is below that, spreading ``k`` edges over every node
leaves most nodes with no edge and breaks the paths through the network (layer collapse). The functions here first
choose which nodes stay, then sample spectrally within them. They hold no state: the sparsifier passes them its
parameters and what it computed (budgets, leverages, the resistance :class:`~.leverage.Engine`) as arguments, and
keeps what they return.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..allocation import erk_counts
from ..sampling import weighted_sample

__all__ = ["choose_width", "positive_tiers", "resolve_positive", "NEGATIVE_FACTOR", "NARROW_NODES", "channel_sizes",
           "counted_by_channels", "spatial_flattens", "resolve_min_nodes", "cover_floors", "fitted_budgets",
           "keeps_all", "mask_within", "edge_cover", "grid_edge_cover"]


def choose_width(graph, units, dense, budgets, d, *, allocation, edges_per_node, min_nodes, channels=False,
                 cover=True, engine, positive_paths=False):
    """``(kept, width, budgets, positive)``: the kept nodes per partition (bool arrays; all True where nothing is
    removed), the fraction kept per partition, per-block budgets (``None``: the allocation's own, unchanged) and
    whether ``positive_paths`` applies (:func:`resolve_positive`).

    ``units`` are the prunable units, ``dense`` the units kept dense, ``budgets`` the allocation's edges per
    prunable unit (``allocation``: ``"erk"``, ``"nodes"`` (started from uniform counts), ``"uniform"`` or a dict)
    and ``engine`` the resistance :class:`~.leverage.Engine` of the node scores.

    Edges per node ``E = K / sum_b (n_src + n_dst)``; when ``E < edges_per_node`` every hidden partition keeps the
    fraction ``f = E / edges_per_node`` of its nodes (at least ``min_nodes``; ``"auto"``: see
    :func:`resolve_min_nodes`), those of highest leverage summed over the adjacent blocks (each block's leverages
    normalised to sum 1). Partitions reached only through identity edges keep the nodes a kept node feeds.

    ``channels`` (True, False or ``"auto"``, see :func:`counted_by_channels`) names the partitions reached only
    through identity edges that count as the nodes that feed them (:func:`channel_sizes`: a flattened
    ``C x H x W`` feature map counts ``C``, not ``C H W``), in ``E`` and in the ERK budgets (the Linear after the
    flatten has ``C`` inputs there). With ``cover`` (the default) each block's budget is at least the edges that
    cover its kept nodes (:func:`cover_floors`). Where ``positive_paths`` applies (True, or ``"auto"`` on a
    network whose narrowest reduced layer keeps at most :data:`NARROW_NODES` nodes) the nodes of a reduced
    partition are ranked by :func:`positive_tiers` first and by leverage within a tier (partitions are visited in
    topological order, so the kept sources are known).
    """
    spatial = spatial_flattens(graph) if "auto" in (channels, min_nodes) else frozenset()
    counted = counted_by_channels(graph, channels, spatial)
    min_nodes = resolve_min_nodes(graph, min_nodes, spatial)
    alloc = allocation
    ks = dict(budgets)
    if counted:
        size = channel_sizes(graph, counted)
        if alloc == "erk":
            ks.update(_erk_by_channels(units, size, d))
        nodes = sum(size[b.src] + size[b.dst] for b in units)
    else:
        nodes = sum(b.n_src + b.n_dst for b in units)
    E = sum(ks[b.name] for b in units) / max(nodes, 1)
    f = min(1.0, E / float(edges_per_node))
    hidden = any(p.role == "hidden" for p in graph.partitions)
    score = {p.name: np.zeros(p.size) for p in graph.partitions}
    for b in units:
        if f >= 1.0 or not hidden:
            break
        lev = engine.leverage(graph, b).reshape(-1).numpy()
        total = lev.sum()
        if total <= 0:
            continue
        s, t = b.edge_index("channel")
        score[b.src] += np.bincount(s, lev, minlength=b.n_src)[: graph.partition(b.src).size] / total
        score[b.dst] += np.bincount(t, lev, minlength=b.n_dst)[: graph.partition(b.dst).size] / total
    weight_dst = {b.dst for b in graph.weight_blocks}
    n_kept = {}  # nodes kept per partition fed by a weight block
    if f < 1.0:
        for p in graph.partitions:
            if p.role == "hidden" and p.name in weight_dst:
                n_kept[p.name] = min(p.size, max(int(min_nodes), math.ceil(f * p.size)))
    reduced = {name: n for name, n in n_kept.items() if n < graph.partition(name).size}
    positive = resolve_positive(positive_paths, reduced)
    kept, width = {}, {}
    for p in graph.partitions:
        keep = np.ones(p.size, dtype=bool)
        if f < 1.0 and p.role == "hidden":
            if p.name in weight_dst:
                n = n_kept[p.name]
                keep = np.zeros(p.size, dtype=bool)
                order = np.argsort(-score[p.name], kind="stable")
                if positive:
                    tier = positive_tiers(graph, p.name, kept)
                    if tier is not None:  # tiers first, leverage within a tier
                        order = order[np.argsort(tier[order], kind="stable")]
                keep[order[:n]] = True
            else:  # reached through identity edges only: keep what kept nodes feed
                keep = np.zeros(p.size, dtype=bool)
                for ib in graph.blocks:
                    if ib.dst == p.name and not ib.is_weight:
                        src_keep = kept.get(ib.src, np.ones(graph.partition(ib.src).size, dtype=bool))
                        keep[ib.dst_index[src_keep[ib.src_index]]] = True
                if not keep.any():
                    keep[:] = True
        kept[p.name] = keep
        width[p.name] = float(keep.mean()) if p.size else 1.0
    fit = alloc in ("erk", "igq", "nodes")  # uniform and dict budgets are the user's, per block: kept as given
    fitted = fitted_budgets(graph, units, dense, d, ks, kept, alloc, channels=counted, cover=cover) if fit else None
    return kept, width, fitted, positive


#: ``positive_paths="auto"``: the positive ranking applies when the narrowest reduced layer keeps at most this many
#: nodes, one below the floor of 4 that ``min_nodes="auto"`` keeps on networks counted by positions (so only
#: networks with a flatten of a spatial map, or a smaller ``min_nodes``, reach it). Chosen on the study's sixth
#: question and its post-training runs, then tested in a seventh (docs/source/guides/study.md): on networks pruned
#: at initialisation the ranking helps at every width, but on trained ones it costs points (the MNIST-1D CNN after
#: training: 20.5% against 28.9% at 100x, where its narrowest layer keeps 6 channels; a trained LeNet-style CNN
#: keeping 3: 21.6% against 36.6%).
NARROW_NODES = 3


def resolve_positive(positive_paths, n_kept) -> bool:
    """Whether ``positive_paths`` (True, False or ``"auto"``) applies, given ``n_kept``: the number of nodes kept
    per reduced partition (partition name -> int; empty when no node is removed). ``"auto"``: when some reduced
    partition keeps at most :data:`NARROW_NODES` nodes, where a layer whose few kept nodes are all silenced by
    their rectifier at initialisation is likely (each is, with probability about one half) and the whole network
    then trains from a constant; never where no node is removed."""
    if not n_kept:
        return False
    if positive_paths == "auto":
        return min(n_kept.values()) <= NARROW_NODES
    return bool(positive_paths)


def positive_tiers(graph, name, kept):
    """The tier of every node of partition ``name`` under ``positive_paths`` (lower first), or None when no weight
    block from a hidden partition ends there (a layer fed by the input, whose sign is not known).

    ``net`` is a node's summed in-weight (every kernel tap) from the kept nodes (``kept``: partition name -> bool
    array) of hidden partitions, ``bias`` its bias (:attr:`Block.bias <graphprune.graph.Block.bias>`; 0 where
    the export found none). Tier 0: ``net > 0`` and ``bias >= 0``; tier 1: ``net > 0``; tier 2: the rest. On
    non-negative inputs (after a ReLU, a max pooling, a flatten of them) a tier-0 node's pre-activation grows with
    every input, so it passes a signal at initialisation whatever the inputs' scale; a tier-1 node passes one
    only when its inputs outweigh its negative bias, which they stop doing as pruning shrinks them; a node whose
    kept in-weights sum below zero is silenced by a ReLU on most inputs (a dead path).
    """
    size = graph.partition(name).size
    net, bias, found = np.zeros(size), np.zeros(size), False
    for b in graph.weight_blocks:
        if b.dst != name:
            continue
        if b.bias is not None:
            bias += b.bias.detach().double().cpu().numpy()[:size]
        if graph.partition(b.src).role != "hidden" or b.src not in kept:
            continue
        s, t = b.edge_index("channel")
        w = b.weight.detach().reshape(-1).double().cpu().numpy()
        on = kept[b.src][s]
        net += np.bincount(t[on], w[on], minlength=b.n_dst)[:size]
        found = True
    if not found:
        return None
    return np.where(net > 0, np.where(bias >= 0, 0, 1), 2)


def channel_sizes(graph, counted=None) -> dict:
    """Node count of every partition, a partition reached only through identity edges counted as the nodes that
    feed it when they are fewer: a flattened ``C x H x W`` feature map counts its ``C`` channels (each channel's
    ``H W`` positions are copies of one node of the layer before); a residual add or a concatenation counts its
    own size. ``counted`` (a set of partition names, default every such partition) limits the rule to those."""
    through = _identity_only(graph)
    size = {}
    for p in graph.partitions:  # in topological order
        n = p.size
        if p.name in through and (counted is None or p.name in counted):
            fed = _fed(graph, p.name, size)
            n = min(n, fed) if fed else n
        size[p.name] = n
    return size


def spatial_flattens(graph) -> frozenset:
    """The partitions reached only through identity edges that hold at least a quarter as many positions per
    feeding node as feeding nodes: a flattened ``C x H x W`` map with ``4 H W >= C`` and ``H W > 1`` (the 2-D
    CNNs of the study: 16 channels of 64 positions; a LeNet-style 32 of 16), not one with fewer (the MNIST-1D
    CNN: 256 channels of 10; VGG's 512 of 49). The rule of ``channels="auto"``; :func:`resolve_min_nodes`
    follows it."""
    through = _identity_only(graph)
    size, out = {}, set()
    for p in graph.partitions:  # in topological order
        n = p.size
        if p.name in through:
            fed = _fed(graph, p.name, size)
            if fed and n > fed and 4 * n >= fed * fed:  # positions per node (n / fed) at least fed / 4
                out.add(p.name)
                n = fed
        size[p.name] = n
    return frozenset(out)


def _identity_only(graph) -> frozenset:
    """Hidden partitions reached only through identity edges (no weight block ends there): flattens, residual
    adds, concatenations."""
    weight_dst = {b.dst for b in graph.weight_blocks}
    return frozenset(p.name for p in graph.partitions if p.role == "hidden" and p.name not in weight_dst)


def _fed(graph, name, size) -> int:
    """Nodes feeding partition ``name`` through identity edges, each feeder counted as in ``size`` (else its
    size)."""
    return sum(size.get(ib.src, graph.partition(ib.src).size) for ib in graph.blocks
               if ib.dst == name and not ib.is_weight)


def counted_by_channels(graph, channels, spatial=None) -> frozenset:
    """The partitions :func:`channel_sizes` counts by their feeding nodes under the option ``channels``: none
    (False), every partition reached only through identity edges (True), or :func:`spatial_flattens` (``"auto"``;
    ``spatial``: its result, if already computed)."""
    if channels == "auto":
        return spatial_flattens(graph) if spatial is None else spatial
    return _identity_only(graph) if channels else frozenset()


def resolve_min_nodes(graph, min_nodes, spatial=None) -> int:
    """``min_nodes`` as an int: ``"auto"`` is 1 on a network with a :func:`spatial_flattens` map (its layers are
    narrow, few channels each spread over many positions) and 4 otherwise (``spatial``: that function's result,
    if already computed)."""
    if min_nodes == "auto":
        return 1 if (spatial_flattens(graph) if spatial is None else spatial) else 4
    return int(min_nodes)


def _kept_channels(graph, name, kept) -> int:
    """Kept nodes of a partition, counted as in :func:`channel_sizes` (a flattened map: its kept channels)."""
    n = int(kept[name].sum())
    p = graph.partition(name)
    if p.role != "hidden" or name in {b.dst for b in graph.weight_blocks}:
        return n
    fed = sum(_kept_channels(graph, ib.src, kept) for ib in graph.blocks if ib.dst == name and not ib.is_weight)
    return min(n, fed) if fed else n


def _erk_by_channels(blocks, size, d) -> dict:
    """ERK budgets (:func:`~graphprune.sparsify.allocation.erk_counts`) with a Linear's inputs counted as in
    :func:`channel_sizes`: a Linear after a flatten has ``C`` inputs, not ``C H W``."""
    from types import SimpleNamespace

    def shape(b):
        s = list(b.weight.shape)
        if b.grid.lead == "dst" and not b.grid.kernel and size[b.src] < b.n_src:
            s[1] = size[b.src]
        return s

    return erk_counts([SimpleNamespace(name=b.name, num_edges=b.num_edges, weight=SimpleNamespace(shape=shape(b)))
                       for b in blocks], d)


def cover_floors(graph, blocks, kept, cap) -> dict:
    """The fewest edges with which each block covers its kept nodes, at most ``cap``: ``max(sources,
    destinations)``, the size of the greedy :func:`edge_cover`, with sources counted only in a hidden layer (an
    input needs no out-edge) and a flattened map counted by its kept channels (one edge per channel reaches it).

    With every block at or above its floor, every kept destination has an edge from a kept source and every kept
    hidden source an edge to a kept destination, so by induction over the layers every kept node lies on an
    input-output path: no layer collapses, and every output (class) has a path from the input.
    """
    floor = {}
    for b in blocks:
        if kept[b.src].all() and kept[b.dst].all():
            n_src, n_dst = b.n_src, b.n_dst
        else:
            s, t = b.edge_index("channel")
            on = graph.block_mask(b).reshape(-1).numpy() & kept[b.src][s] & kept[b.dst][t]
            n_src, n_dst = np.unique(s[on]).size, np.unique(t[on]).size
        n_src = min(n_src, _kept_channels(graph, b.src, kept))
        need = max(n_src if graph.partition(b.src).role == "hidden" else 0, n_dst)
        floor[b.name] = min(int(need), cap[b.name])
    return floor


def fitted_budgets(graph, units, dense, d, base, kept, alloc, *, channels=frozenset(), cover=True):
    """Budgets in proportion to each block's kept nodes (``"nodes"``) or to its ERK budget (``base``), capped at
    the edges among its kept nodes and water-filled, so no budget is spent on edges that lead nowhere; ``units``
    are the prunable units, ``dense`` those kept dense (their whole size).

    With ``cover`` and nodes removed, each block's budget is also at least its :func:`cover_floors` (blocks
    below it are held there and the rest water-filled again), when the floors fit in the total. ``"nodes"``
    counts the partitions named in ``channels`` (a set, see :func:`counted_by_channels`) by their kept channels."""
    ks = {b.name: b.num_edges for b in dense}
    todo = list(units)
    total = round(d * sum(b.num_edges for b in todo)) if alloc == "nodes" else sum(int(base[b.name]) for b in todo)
    cap, nodes = {}, {}
    for b in todo:
        if kept[b.src].all() and kept[b.dst].all():  # no node removed around the block: every available edge
            cap[b.name] = graph.block_kept(b)  # (no mask built for an unmasked block: a 7B head's would be 125 MiB)
        else:
            avail = graph.block_mask(b).reshape(-1).numpy()
            s, t = b.edge_index("channel")
            cap[b.name] = int((avail & kept[b.src][s] & kept[b.dst][t]).sum())
        if alloc == "nodes":
            src = _kept_channels(graph, b.src, kept) if b.src in channels else int(kept[b.src].sum())
            nodes[b.name] = src + int(kept[b.dst].sum())
        else:
            nodes[b.name] = max(float(base[b.name]), 1e-12)
    floor = {}
    if cover and not all(k.all() for k in kept.values()):
        floor = cover_floors(graph, todo, kept, cap)
        if sum(floor.values()) > total:  # the budget cannot cover every kept node: no floors
            floor = {}
    low = set()  # blocks held at their floor
    while True:
        full, budget = set(), total - sum(floor[n] for n in low)
        while True:
            free = [b.name for b in todo if b.name not in full and b.name not in low]
            denom = sum(nodes[n] for n in free)
            eps = (budget - sum(cap[n] for n in full)) / denom if denom else 0.0
            over = {n for n in free if eps * nodes[n] >= cap[n]}
            if not over:
                break
            full |= over
        under = {n for n in free if eps * nodes[n] < floor.get(n, 0)}
        if not under:
            break
        low |= under
    raw = {n: (cap[n] if n in full else floor[n] if n in low else eps * nodes[n]) for n in cap}
    out = {n: int(math.floor(v)) for n, v in raw.items()}
    short = total - sum(out.values())  # largest remainders first, within caps (and the block's size)
    for n in sorted(raw, key=lambda n: raw[n] - out[n], reverse=True):
        if short <= 0:
            break
        size = next(b.num_edges for b in todo if b.name == n)
        if out[n] < size:
            out[n] += 1
            short -= 1
    ks.update(out)
    return ks


def keeps_all(b, kept) -> bool:
    """Whether no node around block ``b`` was removed (``kept`` None: none anywhere)."""
    return kept is None or bool(kept[b.src].all() and kept[b.dst].all())


#: ``positive_paths``: the factor on the leverage of a negative edge out of a hidden partition, so that the cover
#: and the sampling take positive edges first (a negative one only where the positive ones run out, or where its
#: leverage is a thousand times larger).
NEGATIVE_FACTOR = 1e-3


def _prefer_positive(ctx, lev):
    """``lev`` (a flat float64 array of the block's edges, modified in place) with the leverage of each negative
    edge multiplied by :data:`NEGATIVE_FACTOR` when the block's source partition is hidden."""
    if ctx.graph.partition(ctx.block.src).role == "hidden":
        w = ctx.weight.detach().reshape(-1).cpu().numpy()
        lev[w < 0] *= NEGATIVE_FACTOR
    return lev


def mask_within(ctx, k, kept, lev, *, guard, engine, positive=False) -> torch.Tensor:
    """``k`` edges of the block among its kept nodes: an edge cover of the kept nodes first (``guard``), then
    successive sampling proportional to ``w_e R_e`` with resistances of the induced subgraph; the highest-leverage
    edges outside it if the induced subgraph is smaller than the budget.

    ``lev`` is the block's leverage on the graph as it is, a flat float64 array the caller hands over (it is
    overwritten), where no node of the block was removed (:func:`keeps_all`; LLM densities); None otherwise, and
    ``engine`` (a :class:`~.leverage.Engine`) computes the leverages needed. A linear, embedding or 1x1
    convolution block with every edge available then takes :func:`_mask_whole_grid`: one float64 array per edge
    (the engine's buffer: resistances, then leverages, then sampling keys) and two bool arrays, with the same
    masks; other blocks use per-edge index arrays (about four 8-byte arrays per edge at the peak).

    ``positive`` (``positive_paths``, where nodes were removed, ``kept`` not None): the leverage of a negative edge
    out of a hidden partition is multiplied by :data:`NEGATIVE_FACTOR` before the cover and the sampling.
    """
    b, G = ctx.block, ctx.graph
    positive = bool(positive) and kept is not None
    if positive and lev is not None:
        lev = _prefer_positive(ctx, lev)
    avail = ctx.available.reshape(-1).cpu().numpy()
    whole = keeps_all(b, kept)
    if whole and _grid_order(b) is not None and k < avail.size and bool(avail.all()):
        return _mask_whole_grid(ctx, k, lev, guard=guard)
    if whole:
        induced, s, t = avail, None, None
    else:
        s, t = b.edge_index("channel")
        induced = avail & kept[b.src][s] & kept[b.dst][t]
    keep = np.zeros(avail.size, dtype=bool)
    n_induced = int(np.count_nonzero(induced))
    if n_induced <= k:
        keep |= induced
        rest = k - n_induced
        if rest > 0:  # the induced subgraph is smaller than the budget: best leverage outside it
            lev = engine.leverage(G, b).reshape(-1).numpy()
            if positive:
                lev = _prefer_positive(ctx, lev.copy())
            out = np.flatnonzero(avail & ~induced)
            keep[out[np.argsort(-lev[out], kind="stable")[:rest]]] = True
        return torch.from_numpy(keep).reshape(ctx.available.shape)
    if not whole:
        full = G.param_mask(b.param).clone()
        part = torch.from_numpy(induced).reshape(ctx.available.shape)
        b.set_rows(full, part)
        lev = engine.leverage(G, b, {b.param: full}).reshape(-1).numpy()
        lev = np.where(induced, lev, 0.0)
        if positive:
            lev = _prefer_positive(ctx, lev)
    if guard:
        if s is None:
            s, t = b.edge_index("channel")
        keep |= edge_cover(induced, lev, s, t, k)
    del s, t
    rest = k - int(np.count_nonzero(keep))
    if rest > 0:
        keep |= weighted_sample(lev, rest, ctx.rng, cand=induced, exclude=keep)
    return torch.from_numpy(keep).reshape(ctx.available.shape)


def edge_cover(induced, lev, s, t, k):
    """Greedy edge cover of the kept nodes within a budget of ``k`` edges: each destination node (best first)
    takes its highest-leverage edge to a source not yet covered, if any, else its best edge; then every source
    still uncovered takes its best edge, while the budget lasts.

    Ties go to the lower edge index. Each destination looks at its 64 best edges only (plenty to find a free
    source), found by a partition of its edges, and the sources' best edges by a grouped maximum, so the cost is
    linear in the edges (no sort of the whole block, and no copy of it when every edge is available).
    """
    keep = np.zeros(induced.size, dtype=bool)
    if k <= 0:
        return keep
    if bool(induced.all()):
        cand, tc, lc = None, t, lev
    else:
        cand = np.flatnonzero(induced)
        if cand.size == 0:
            return keep
        tc, lc = t[cand], lev[cand]
    if tc.size > 1 and not bool((tc[1:] >= tc[:-1]).all()):  # destinations not contiguous (e.g. (in, out) layouts)
        perm = np.argsort(tc, kind="stable")
        cand = perm if cand is None else cand[perm]
        tc, lc = tc[perm], lc[perm]
        del perm
    starts = np.flatnonzero(tc[1:] != tc[:-1]) + 1
    starts = np.concatenate([np.zeros(1, dtype=starts.dtype), starts])
    ends = np.r_[starts[1:], tc.size]
    seg_max = np.maximum.reduceat(lc, starts)
    best_first = np.argsort(-seg_max, kind="stable")
    covered = np.zeros(int(s.max()) + 1, dtype=bool)
    used = 0
    # each destination's best edge (ties: the first); when their sources all differ (a depthwise convolution: one
    # source per destination) no destination meets a covered source, and the greedy below is these edges
    seg = np.repeat(np.arange(starts.size), ends - starts)
    at_max = np.flatnonzero(lc == seg_max[seg])
    first = at_max[np.r_[True, seg[at_max][1:] != seg[at_max][:-1]]]
    del seg, at_max
    best_edge = first if cand is None else cand[first]
    if np.unique(s[best_edge]).size == best_edge.size:
        chosen = best_edge[best_first[:k]]
        keep[chosen] = True
        covered[s[chosen]] = True
        used = chosen.size
        best_first = best_first[:0]
    for i in best_first:
        if used >= k:
            return keep
        a, b = int(starts[i]), int(ends[i])
        lv = lc[a:b]
        if b - a > 64:  # the 64 best: everything at or above the 64th largest value, ties included
            top = np.flatnonzero(lv >= np.partition(lv, b - a - 64)[b - a - 64])
        else:
            top = np.arange(b - a)
        top = top[np.argsort(-lv[top], kind="stable")][:64]
        edges = (a + top) if cand is None else cand[a:b][top]
        src = s[edges]
        free = np.flatnonzero(~covered[src])
        j = int(free[0]) if free.size else 0
        keep[edges[j]] = True
        covered[src[j]] = True
        used += 1
    if used < k:
        rest = np.flatnonzero(induced & ~covered[s])  # ascending edge index
        if rest.size:
            sr, lr = s[rest], lev[rest]
            best = np.full(covered.size, -np.inf)
            np.maximum.at(best, sr, lr)
            tie = lr == best[sr]
            first_idx = np.full(covered.size, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first_idx, sr[tie], rest[tie])
            first = first_idx[first_idx != np.iinfo(np.int64).max]  # one per uncovered source, by source
            first = first[np.argsort(-lev[first], kind="stable")[: k - used]]
            keep[first] = True
    return keep


# -- dense blocks at LLM scale: the same masks, in place, with no per-edge index ----------------------------------
def _grid_order(b):
    """How a block's edges lie in parameter order when they form a full ``(dst, src)`` grid
    (:attr:`Grid.order <graphprune.layout.Grid.order>`); None for identity blocks."""
    return b.grid.order if b.is_weight else None


def _by_dst(b, flat):
    """A flat per-edge array as a ``(n_dst, n_src)`` view, rows destinations (a transposed view for ``"src"``)."""
    if _grid_order(b) == "dst":
        return flat.reshape(b.n_dst, b.n_src)
    return flat.reshape(b.n_src, b.n_dst).T


def _mask_whole_grid(ctx, k, lev, *, guard, chunk=1 << 22) -> torch.Tensor:
    """:func:`mask_within` for a block with no node removed, every edge available and a grid layout (every
    block of an LLM): the same masks, with memory of one float64 array (the leverage ``lev``, which becomes the
    sampling keys in place) and two bool arrays per edge.

    The cover is :func:`grid_edge_cover`; the rest is :func:`~graphprune.sparsify.sampling.weighted_sample` with
    the keys written over the leverage (``overwrite=True``: a histogram pass, no sort and no index array).
    """
    b = ctx.block
    keep = np.zeros(lev.size, dtype=bool)
    if guard:
        rows, cols = grid_edge_cover(_by_dst(b, lev), k, chunk=chunk)
        _by_dst(b, keep)[rows, cols] = True
        del rows, cols
    rest = k - int(np.count_nonzero(keep))
    if rest > 0:
        keep |= weighted_sample(lev, rest, ctx.rng, exclude=keep, overwrite=True, chunk=chunk)
    return torch.from_numpy(keep).reshape(ctx.available.shape)


def grid_edge_cover(L, k, *, top=64, chunk=1 << 22):
    """:func:`edge_cover` of a block whose every edge is available, from its leverage as a ``(n_dst, n_src)``
    array (rows destinations; a transposed view is fine): the chosen edges as ``(rows, cols)``.

    The same greedy and ties: destinations by their best leverage (ties: lower destination), each taking the best
    of its ``top`` best edges (ties: lower source) to an uncovered source, else its best; then each uncovered
    source's best edge (ties: lower destination), best first, while the budget lasts. Rows are read in chunks:
    memory is ``n_dst x top`` indices plus a chunk, never an index per edge. When the destinations' best sources
    are all different (a common case) no destination meets a covered source and the greedy is one step.
    """
    n_dst, n_src = L.shape
    if k <= 0 or L.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    per = max(1, chunk // max(n_src, 1))
    t = min(top, n_src)
    cand = np.empty((n_dst, t), dtype=np.int64)
    best = np.empty(n_dst)
    for r in range(0, n_dst, per):
        X = np.ascontiguousarray(L[r : r + per])
        if n_src <= t:
            c = np.argsort(-X, axis=1, kind="stable")
        else:  # the t-th largest per row (torch.topk: exact values, fast), then the entries at or above it
            thr = torch.topk(torch.from_numpy(X), t, dim=1).values[:, t - 1 :].numpy()
            sel = X >= thr
            for i in np.flatnonzero(sel.sum(axis=1) > t):  # ties at the threshold: the lower columns first
                tie = np.flatnonzero(X[i] == thr[i, 0])
                sel[i, tie[t - int(np.count_nonzero(X[i] > thr[i, 0])) :]] = False
            rr, cc = np.nonzero(sel)  # exactly t per row, columns ascending
            del sel
            cc = cc.reshape(-1, t)
            vals = X[rr.reshape(-1, t), cc]
            c = np.take_along_axis(cc, np.argsort(-vals, axis=1, kind="stable"), axis=1)
            del rr, cc, vals
        cand[r : r + per] = c
        best[r : r + per] = X[np.arange(X.shape[0]), c[:, 0]]
        del X, c
    order = np.argsort(-best, kind="stable")[:k]
    covered = np.zeros(n_src, dtype=bool)
    first = cand[order, 0]
    if np.unique(first).size == first.size:
        cols = first
    else:
        cols = np.empty(order.size, dtype=np.int64)
        for i, d in enumerate(order.tolist()):
            row = cand[d]
            c = int(row[int(np.argmax(~covered[row]))])  # the first free source, else the best (index 0)
            cols[i] = c
            covered[c] = True
    covered[cols] = True
    rows = order
    used = order.size
    if used < k and not covered.all():
        top_v = np.full(n_src, -np.inf)
        top_r = np.zeros(n_src, dtype=np.int64)
        for r in range(0, n_dst, per):
            X = np.ascontiguousarray(L[r : r + per])
            m, a = X.max(axis=0), X.argmax(axis=0) + r
            better = m > top_v  # strictly: an earlier row keeps a tie
            top_v[better], top_r[better] = m[better], a[better]
            del X
        src = np.flatnonzero(~covered)
        src = src[np.argsort(-top_v[src], kind="stable")[: k - used]]
        rows = np.concatenate([rows, top_r[src]])
        cols = np.concatenate([cols, src])
    return rows, cols
