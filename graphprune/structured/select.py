"""Node scores and the choice of the groups to remove.

A node criterion scores every coupled group (:func:`~graphprune.structured.node_groups`); higher means more
important. :func:`select_nodes` removes the lowest-scored groups, per layer (the same fraction in every layer) or
globally, in multiples of ``round_to``, and returns node masks for :func:`~graphprune.structured.shrink`.

Criteria (``NODE_CRITERIA``; add one with :func:`register_node_criterion`, a function
``fn(G, groups, seed) -> array of one score per group``):

- ``"leverage"`` (graph): a node's share of ``sum |w_e| R_e`` over the weight edges at the node, with ``R_e`` the
  effective resistance of edge ``e`` in its block, each block normalised to sum 1 (the node leverage the spectral
  default uses to choose its effective width; Spielman and Srivastava, SIAM J. Comput. 40(6), 2011,
  doi:10.1137/080734029). A group scores the sum over its nodes.
- ``"degree"`` (graph): kept weight edges at the group's nodes under the graph's masks (after an unstructured
  pass, the nodes it left most connected); ties are broken at random with ``seed``.
- ``"l2"`` / ``"l1"`` (peers): the group magnitude of Torch-Pruning's default importance (Fang et al., "DepGraph:
  Towards Any Structural Pruning", CVPR 2023, doi:10.1109/CVPR52729.2023.01544): for every weight the group's
  nodes index, the sum of ``|w|^p`` over the node's row or column, averaged over those weights, then divided by
  the mean of its layer.
- ``"random"``: uniform scores from ``seed``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .._validation import Interval, Options, check_graph, check_param, numpy_rng
from ..errors import ParameterError
from ..graph_resistance import effective_resistance
from .groups import node_groups

__all__ = ["NODE_CRITERIA", "DEFAULT_KINDS", "SELECT_ALLOCATIONS", "node_scores", "select_nodes",
           "register_node_criterion", "kept_weights", "amount_for"]

#: Group kinds removed by default: MLP neurons, channels and whole query heads (the hidden width and whole
#: key/value groups only on request).
DEFAULT_KINDS = ("neuron", "channel", "head")
#: Allowed values of ``select_nodes(allocation=...)``.
SELECT_ALLOCATIONS = ("uniform", "global")

NODE_CRITERIA: dict = {}


def register_node_criterion(name: str):
    """Decorator registering ``fn(G, groups, seed, parts=None) -> numpy array`` (one score per group) as criterion
    ``name``; ``parts`` (a set of partition names, or None for all) says which groups' scores are needed."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"The 'name' parameter of register_node_criterion must be a non-empty str. Got "
                             f"{name!r} instead.")

    def deco(fn):
        NODE_CRITERIA[name] = fn
        return fn

    return deco


def _node_sums(G, per_block, parts=None):
    """Per-partition node totals of ``per_block(b) -> (values shaped like b.weight) or None``, each block's values
    spread on its source and destination nodes; only blocks at ``parts`` (all when None)."""
    out = {p.name: np.zeros(p.size) for p in G.partitions}
    count = {p.name: np.zeros(p.size) for p in G.partitions}
    for b in G.weight_blocks:
        if parts is not None and b.src not in parts and b.dst not in parts:
            continue
        v = per_block(b)
        if v is None:
            continue
        s, t = b.edge_index("channel")
        flat = v.reshape(-1)
        out[b.src] += np.bincount(s, flat, minlength=b.n_src)
        out[b.dst] += np.bincount(t, flat, minlength=b.n_dst)
        count[b.src] += 1
        count[b.dst] += 1
    return out, count


def _group_totals(groups, values, counts=None):
    scores = np.zeros(len(groups))
    for g in groups:
        tot = sum(float(values[p][idx].sum()) for p, idx in g.nodes.items())
        if counts is not None:
            n = sum(float(counts[p][idx].sum()) for p, idx in g.nodes.items())
            tot = tot / n if n else 0.0
        scores[g.id] = tot
    return scores


@register_node_criterion("leverage")
def _leverage(G, groups, seed, parts=None):
    def lev(b):
        R = effective_resistance(G, b, view="channel", method="auto")
        v = b.weight.detach().abs().to("cpu", torch.float64) * torch.nan_to_num(R.to("cpu", torch.float64), nan=0.0,
                                                                                  posinf=0.0)
        v = v.masked_fill(~G.block_mask(b).cpu(), 0.0).numpy()
        total = v.sum()
        return v / total if total > 0 else None

    values, _ = _node_sums(G, lev, parts)
    return _group_totals(groups, values)


@register_node_criterion("degree")
def _degree(G, groups, seed, parts=None):
    values, _ = _node_sums(G, lambda b: G.block_mask(b).to(torch.float64).numpy(), parts)
    jitter = numpy_rng(seed, owner="select_nodes").random(len(groups)) * 1e-3  # ties only
    return _group_totals(groups, values) + jitter


def _magnitude(p):
    def score(G, groups, seed, parts=None):
        values, counts = _node_sums(G, lambda b: b.weight.detach().abs().to("cpu", torch.float64).pow(p).numpy(),
                                    parts)
        s = _group_totals(groups, values, counts)
        layers = {}
        for g in groups:
            layers.setdefault(g.layer, []).append(g.id)
        for ids in layers.values():
            m = s[ids].mean()
            if m > 0:
                s[ids] = s[ids] / m
        return s

    return score


register_node_criterion("l2")(_magnitude(2))
register_node_criterion("l1")(_magnitude(1))


@register_node_criterion("random")
def _random(G, groups, seed, parts=None):
    return numpy_rng(seed, owner="select_nodes").random(len(groups))


def node_scores(G, criterion: str = "leverage", *, groups=None, seed=0, kinds=None, model=None,
                calibration=None) -> np.ndarray:
    """One score per group of ``node_groups(G)`` (higher: more important).

    Parameters
    ----------
    G : MultipartiteGraph
    criterion : str, default "leverage"
        A name of ``NODE_CRITERIA`` (see the module docstring).
    groups : list of NodeGroup, optional
        ``node_groups(G)``, when already computed.
    seed : int, numpy Generator or torch Generator, default 0
        For ``"random"`` and the tie-breaks of ``"degree"``.
    kinds : tuple of str, optional
        Only the prunable groups of these kinds need scores (the blocks at no such group are skipped; the other
        groups' scores are then partial).
    model : torch.nn.Module, optional
        The model ``G`` was exported from; needed with ``calibration``.
    calibration : tensor, dict of tensors or iterable of batches, optional
        Model inputs: the criterion then runs on the activation-weighted graph, edge weights
        ``|w_ij| * ||X_j||_2`` (:func:`~graphprune.structured.activations.activation_graph`; data-aware ``"l2"``
        is the diagonal optimal-brain-damage cost of removing a node).
    """
    check_graph(G, "node_scores")
    check_param("criterion", criterion, [Options(tuple(NODE_CRITERIA))], "node_scores")
    groups = node_groups(G) if groups is None else groups
    if calibration is not None or model is not None:
        if calibration is None or model is None:
            raise ParameterError("node_scores takes 'model' and 'calibration' together (data-aware scores need the "
                                 f"model the graph came from and its inputs). Got model={type(model).__name__}, "
                                 f"calibration={type(calibration).__name__}.")
        from .activations import activation_graph

        G = activation_graph(G, model, calibration, owner="node_scores")
    parts = None
    if kinds is not None:
        parts = {p for g in groups if g.prunable and g.kind in kinds for p in g.nodes}
    return np.asarray(NODE_CRITERIA[criterion](G, groups, seed, parts), dtype=np.float64)


def select_nodes(G, amount: float, *, criterion: str = "leverage", allocation: str = "uniform",
                 kinds=DEFAULT_KINDS, round_to: int = 1, groups=None, scores=None, seed=0, model=None,
                 calibration=None) -> dict:
    """Choose the groups to remove: node masks (partition -> bool array, True = kept) for :func:`shrink`.

    Parameters
    ----------
    G : MultipartiteGraph
    amount : float in [0, 1)
        Fraction of the eligible groups to remove: in every layer (``"uniform"``) or over all layers
        (``"global"``).
    criterion : str, default "leverage"
        The node score (``NODE_CRITERIA``); ignored when ``scores`` is given.
    allocation : {"uniform", "global"}, default "uniform"
        ``"uniform"``: the same fraction in every layer (the counts a Hugging Face config can hold). ``"global"``:
        the lowest scores over all layers, each layer's scores divided by their mean first; every layer keeps at
        least ``round_to`` groups. Query heads under grouped-query attention are always removed uniformly: the
        same number in every key/value group of a layer.
    kinds : tuple of str, default ("neuron", "channel", "head")
        Group kinds that may be removed; add ``"width"`` for the transformer hidden width, ``"kv_group"`` for whole
        key/value groups (with their query heads).
    round_to : int, default 1
        Every layer of neurons or channels keeps a multiple of ``round_to`` groups (hardware-friendly sizes): the
        kept count is rounded down (at least ``round_to``).
    groups : list of NodeGroup, optional
        ``node_groups(G)``, when already computed.
    scores : array, optional
        One score per group (from :func:`node_scores` or your own).
    seed : int, numpy Generator or torch Generator, default 0
    model, calibration : optional
        Data-aware scores (:func:`node_scores`): the model ``G`` came from and calibration inputs.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    ParameterError
        A bad argument (the message names it, the constraint and the value).

    Notes
    -----
    A layer is the groups that share :attr:`NodeGroup.layer`. Per layer of ``n`` groups, ``round(amount * n)``
    are removed (more, so that the kept count is a multiple of ``round_to``), never all of them. Does not
    modify ``G``.

    Examples
    --------
    >>> import torch, graphprune
    >>> from graphprune.structured import select_nodes
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> keep = select_nodes(graphprune.from_model(net, torch.randn(1, 4)), 0.5, criterion="l2")
    >>> int(keep["0"].sum())
    4
    """
    owner = "select_nodes"
    check_graph(G, owner)
    check_param("amount", amount, [Interval(numbers.Real, 0, 1, closed="left")], owner)
    check_param("allocation", allocation, [Options(SELECT_ALLOCATIONS)], owner)
    check_param("round_to", round_to, [Interval(numbers.Integral, 1, None, closed="left")], owner)
    if isinstance(kinds, str) or not all(k in ("neuron", "channel", "head", "kv_group", "width") for k in kinds):
        raise ParameterError(f"The 'kinds' parameter of select_nodes must be a tuple of group kinds among "
                             f"'neuron', 'channel', 'head', 'kv_group', 'width'. Got {kinds!r} instead.")
    groups = node_groups(G) if groups is None else groups
    if scores is None:
        scores = node_scores(G, criterion, groups=groups, seed=seed, kinds=tuple(kinds), model=model,
                             calibration=calibration)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(groups),):
        raise ParameterError(f"The 'scores' parameter of select_nodes must hold one score per group "
                             f"({len(groups)}). Got shape {scores.shape} instead.")
    kinds = tuple(kinds)
    removed = set()
    # query heads of grouped-query attention: the same number in every key/value group
    for g in groups:
        if g.kind == "kv_group" and g.prunable:
            kids = [c for c in g.children if groups[c].prunable and (not groups[c].mixed or "width" in kinds)]
            if "head" in kinds and len(kids) == len(g.children) > 1:
                r = min(len(kids) - 1, int(round(amount * len(kids))))
                removed.update(sorted(kids, key=lambda c: scores[c])[:r])
    kv = [g for g in groups if g.kind == "kv_group" and g.prunable and "kv_group" in kinds]
    layers = {}
    for g in groups:
        if not g.prunable or g.kind not in kinds or g.parent is not None or g.kind == "kv_group":
            continue
        if g.mixed and "width" not in kinds:  # heads mixed by a norm over all heads: only on request
            continue
        layers.setdefault((g.kind, g.layer), []).append(g.id)
    for g in kv:
        layers.setdefault(("kv_group", g.layer), []).append(g.id)
    step = lambda kind: round_to if kind in ("neuron", "channel", "width") else 1  # noqa: E731
    if allocation == "uniform":
        for (kind, _), ids in layers.items():
            n = len(ids)
            keep = _rounded(n - int(round(amount * n)), n, step(kind))
            removed.update(sorted(ids, key=lambda i: scores[i])[: n - keep])
    else:
        norm = {}
        for ids in layers.values():
            m = float(np.mean(scores[ids])) if ids else 1.0
            for i in ids:
                norm[i] = scores[i] / m if m > 0 else scores[i]
        pool = sorted(norm, key=norm.get)
        target = int(round(amount * len(pool)))
        chosen = set(pool[:target])
        for (kind, _), ids in layers.items():
            n = len(ids)
            keep = _rounded(n - sum(i in chosen for i in ids), n, step(kind))
            removed.update(sorted(ids, key=lambda i: scores[i])[: n - keep])
    from .shrink import node_masks_from_groups

    return node_masks_from_groups(G, groups, sorted(removed))


def _rounded(keep, n, step):
    """Kept count rounded down to a multiple of ``step`` (at least ``step``, or ``n`` if smaller)."""
    if step > 1:
        keep = int(step * (keep // step))
    return int(min(n, max(keep, min(step, n), 1)))


def kept_weights(G, node_masks) -> int:
    """Weight elements left after removing the nodes ``node_masks`` drops (each parameter counted once).

    Exact for the shapes :func:`shrink` builds: a block keeps (kept rows) x (kept columns) x kernel taps, a grouped
    convolution keeps whole groups.
    """
    total, seen = 0, set()
    for b in G.weight_blocks:
        if b.param in seen:
            continue
        seen.add(b.param)
        k_src = int(np.asarray(node_masks.get(b.src, np.ones(b.n_src, bool))).sum())
        k_dst = int(np.asarray(node_masks.get(b.dst, np.ones(b.n_dst, bool))).sum())
        if b.grid.groups > 1:  # a grouped convolution keeps whole groups: (kept dim-0 nodes) x dim 1 x taps
            per = b.weight.shape[1] * b.kernel_size
            total += (k_dst if b.grid.lead == "dst" else k_src) * per
        else:
            total += k_src * k_dst * b.kernel_size
    return int(total)


def amount_for(G, ratio: float, **select_options) -> tuple[float, dict]:
    """The ``amount`` of :func:`select_nodes` whose masks keep about ``1 / ratio`` of the weights (bisection, 20
    steps); returns ``(amount, node masks)``."""
    check_param("ratio", ratio, [Interval(numbers.Real, 1, None, closed="left")], "amount_for")
    base = kept_weights(G, {})
    target = base / ratio
    lo, hi, best = 0.0, 0.999, (0.0, select_nodes(G, 0.0, **select_options))
    for _ in range(20):
        mid = (lo + hi) / 2
        keep = select_nodes(G, mid, **select_options)
        if kept_weights(G, keep) > target:
            lo = mid
        else:
            hi, best = mid, (mid, keep)
    if math.isclose(best[0], 0.0):
        best = (hi, select_nodes(G, hi, **select_options))
    return best
