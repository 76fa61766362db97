"""What a structured prune bought: removed nodes per layer, parameters, MACs and measured latency, before and after.

:func:`shrink_summary` compares the dense model with its shrunk copy (from :func:`~graphprune.structured.shrink` or
``prune(..., structured=True)``) module by module. MACs are counted with forward hooks on the layers that hold
weights (Linear, ConvNd, Embedding lookups count 0, transformers' Conv1D); the matrix products inside attention
(scores and values) are left out, as in the usual counters (fvcore, thop). Latency is the median wall time of
``runs`` forward passes of each model, measured interleaved (run ``r`` of both models, then run ``r + 1``) so a
change of the machine's load touches both alike.
"""

from __future__ import annotations

import numbers
import statistics
import time

import numpy as np
import torch
from torch import nn

from .._validation import Interval, check_param
from ..errors import ParameterError

__all__ = ["ShrinkSummary", "shrink_summary", "count_macs", "edge_masks", "interleaved_latency"]


def edge_masks(G, node_masks) -> dict:
    """Edge masks of ``G`` (parameter -> bool tensor) that drop every weight edge at a removed node: the dense
    graph's view of a structured prune, for :func:`graphprune.report` (``report(G, edge_masks(G, keep),
    structured=summary)``) or any analyser.

    Parameters
    ----------
    G : MultipartiteGraph
        The dense model's graph (the one ``node_masks`` index).
    node_masks : dict of str to bool array
        Partition -> True for kept nodes (from :func:`~graphprune.structured.select_nodes`); partitions not
        named keep every node.

    Returns
    -------
    dict of str to torch.Tensor
        One mask per parameter of ``G``, combined with the graph's own masks (a parameter used by several blocks
        keeps an element only where every use keeps it).
    """
    from .._validation import check_graph

    check_graph(G, "edge_masks")
    out = {name: G.param_mask(name).clone() for name in G.params}
    for b in G.weight_blocks:
        ks = np.asarray(node_masks.get(b.src, np.ones(b.n_src, bool)), dtype=bool)
        kd = np.asarray(node_masks.get(b.dst, np.ones(b.n_dst, bool)), dtype=bool)
        if ks.shape != (b.n_src,) or kd.shape != (b.n_dst,):
            raise ParameterError(f"The 'node_masks' parameter of edge_masks must hold one bool per node of each "
                                 f"partition: block {b.name!r} has {b.n_src} source and {b.n_dst} destination nodes, "
                                 f"got {ks.shape} and {kd.shape}.")
        S, D = b.broadcast_nodes(ks, kd)
        b.and_rows(out[b.param], torch.from_numpy(np.broadcast_to(S & D, tuple(b.weight.shape)).copy()))
    return out


def _is_layer(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.MultiheadAttention)) or (
        type(m).__name__ == "Conv1D" and hasattr(m, "nf"))


def _call(model, inputs):
    with torch.no_grad():
        if isinstance(inputs, dict):
            return model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return model(*inputs)
        return model(inputs)


def count_macs(model: nn.Module, example_inputs) -> dict:
    """Multiply-accumulates per module (qualified name -> int) of one forward pass on ``example_inputs``.

    Linear: ``out.numel() * in_features``; ConvNd: ``out.numel() * in_channels / groups * prod(kernel)``
    (ConvTranspose: ``in.numel() * out_channels / groups * prod(kernel)``); transformers' Conv1D:
    ``out.numel() * nx``; ``nn.MultiheadAttention``: its input and output projections (``3 E^2`` and ``E^2`` per
    token, ``E kdim + E vdim + E^2`` with other key/value sizes); Embedding: 0 (a lookup). The model runs in its
    current mode under ``torch.no_grad``.
    """
    out: dict = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(mod, args, res):
        o = res[0] if isinstance(res, tuple) else res
        name = names[id(mod)]
        if isinstance(mod, nn.Linear):
            n = o.numel() * mod.in_features
        elif isinstance(mod, nn.modules.conv._ConvTransposeNd):
            n = args[0].numel() * (mod.out_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, nn.modules.conv._ConvNd):
            n = o.numel() * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, nn.MultiheadAttention):
            tokens = o.numel() // mod.embed_dim  # one output row per query position
            kv = args[1].numel() // mod.kdim if len(args) > 1 else tokens
            n = tokens * mod.embed_dim * mod.embed_dim * 2 + kv * mod.embed_dim * (mod.kdim + mod.vdim)
        elif isinstance(mod, nn.Embedding):
            n = 0
        else:  # transformers' Conv1D: weight (nx, nf)
            n = o.numel() * mod.weight.shape[0]
        out[name] = out.get(name, 0) + int(n)

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_layer(m)]
    try:
        _call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return out


def _params(model: nn.Module) -> dict:
    """Parameter elements per layer module (qualified name -> int), each tensor counted once (tied weights)."""
    seen, out = set(), {}
    for name, m in model.named_modules():
        if not _is_layer(m):
            continue
        n = 0
        for p in m.parameters(recurse=isinstance(m, nn.MultiheadAttention)):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        out[name] = n
    return out


def _shape(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"{m.in_features}→{m.out_features}"
    if isinstance(m, nn.modules.conv._ConvNd):
        k = "×".join(str(k) for k in m.kernel_size)
        return f"{m.in_channels}→{m.out_channels} {k}" + (f" g{m.groups}" if m.groups > 1 else "")
    if isinstance(m, nn.Embedding):
        return f"{m.num_embeddings}×{m.embedding_dim}"
    if isinstance(m, nn.MultiheadAttention):
        return f"{m.embed_dim}, {m.num_heads} heads"
    return "×".join(str(s) for s in m.weight.shape)


def interleaved_latency(models, example_inputs, runs: int = 5) -> list:
    """Median forward time (seconds) of each model on ``example_inputs``, under ``torch.no_grad``: one warm-up
    each, then ``runs`` rounds of one run of every model in turn, so a change of the machine's load touches every
    model alike. The models run in their current mode."""
    for m in models:
        _call(m, example_inputs)  # warm-up
    times = [[] for _ in models]
    for _ in range(runs):
        for i, m in enumerate(models):
            t = time.perf_counter()
            _call(m, example_inputs)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


class ShrinkSummary:
    """The result of :func:`shrink_summary`.

    Attributes
    ----------
    layers : pandas.DataFrame
        One row per layer module of the dense model: ``module``, ``type``, ``shape_before``, ``shape_after``,
        ``params_before``, ``params_after``, ``macs_before``, ``macs_after``.
    nodes : pandas.DataFrame or None
        With ``G`` and ``node_masks``: one row per partition that lost nodes: ``partition``, ``nodes``, ``kept``,
        ``removed``.
    summary : dict
        Totals: ``params_before``, ``params_after``, ``macs_before``, ``macs_after``, ``param_ratio`` and
        ``mac_ratio`` (before / after); with latency, ``latency_before_s``, ``latency_after_s`` (medians),
        ``speedup`` (before / after) and ``speedup_per_mac_ratio`` (speed-up over MAC reduction, 1 when the time
        follows the MACs).
    """

    def __init__(self, layers, nodes, summary):
        self.layers, self.nodes, self.summary = layers, nodes, summary

    def __repr__(self) -> str:
        s = self.summary
        text = (f"ShrinkSummary(params {s['params_before']:,} -> {s['params_after']:,} ({s['param_ratio']:.2f}x), "
                f"MACs {s['macs_before']:,} -> {s['macs_after']:,} ({s['mac_ratio']:.2f}x)")
        if "speedup" in s:
            text += f", latency {s['latency_before_s'] * 1e3:.2f} -> {s['latency_after_s'] * 1e3:.2f} ms " \
                    f"({s['speedup']:.2f}x)"
        return text + ")"

    def to_markdown(self) -> str:
        """The totals and the per-layer table as markdown (pandas ``to_markdown`` needs tabulate; written here)."""
        lines = [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v:,}" for k, v in self.summary.items()]
        cols = list(self.layers.columns)
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in self.layers.itertuples(index=False):
            lines.append("| " + " | ".join(str(v) for v in row) + " |")
        return "\n".join(lines) + "\n"


def shrink_summary(before: nn.Module, after: nn.Module, example_inputs, *, G=None, node_masks=None,
                   latency: bool = True, runs: int = 5) -> ShrinkSummary:
    """Compare a dense model with its shrunk copy: nodes, parameters, MACs and latency.

    Parameters
    ----------
    before, after : torch.nn.Module
        The dense model and the shrunk one (same module names; ``after`` from
        :func:`~graphprune.structured.shrink` on a copy of ``before``).
    example_inputs : tensor, tuple or dict
        One forward pass's inputs (the batch whose MACs and latency are measured).
    G, node_masks : optional
        The graph of ``before`` and the node masks that were removed (for the per-partition node table).
    latency : bool, default True
        Measure the median forward time of both models (eval mode, ``torch.no_grad``).
    runs : int, default 5
        Timed runs per model (after one warm-up each).

    Returns
    -------
    ShrinkSummary

    Raises
    ------
    ParameterError
        ``after`` has a layer module that ``before`` does not, or ``node_masks`` without ``G``.

    Notes
    -----
    The models are run, never modified; their training flags are restored.

    Examples
    --------
    >>> import copy, torch, graphprune
    >>> from graphprune.structured import shrink_summary
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> small = copy.deepcopy(net)
    >>> keep = graphprune.prune(small, torch.randn(1, 8), "l2", sparsity=0.5, structured=True, progress=False)
    >>> s = shrink_summary(net, small, torch.randn(4, 8), latency=False)
    >>> s.summary["params_before"], s.summary["params_after"]
    (178, 90)
    """
    import pandas as pd

    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, nn.Module):
            raise ParameterError(f"The '{name}' parameter of shrink_summary must be a torch.nn.Module. Got "
                                 f"{type(value).__name__} instead.")
    check_param("runs", runs, [Interval(numbers.Integral, 1, None, closed="left")], "shrink_summary")
    if node_masks is not None and G is None:
        raise ParameterError("The 'node_masks' parameter of shrink_summary needs 'G' (the graph of the dense "
                             "model the masks index). Pass G=graphprune.from_model(before, example_inputs).")
    flags = [(m, m.training) for model in (before, after) for m in model.modules()]
    before.eval()
    after.eval()
    try:
        mods_b, mods_a = dict(before.named_modules()), dict(after.named_modules())
        extra = [n for n, m in mods_a.items() if _is_layer(m) and n not in mods_b]
        if extra:
            raise ParameterError(f"The 'after' parameter of shrink_summary has layer {extra[0]!r}, which 'before' "
                                 "does not: pass the dense model and its shrunk copy.")
        macs_b, macs_a = count_macs(before, example_inputs), count_macs(after, example_inputs)
        par_b, par_a = _params(before), _params(after)
        rows = []
        for name, m in mods_b.items():
            if not _is_layer(m) or name not in par_b:
                continue
            a = mods_a.get(name)
            if isinstance(m, nn.Linear) and _inside_mha(name, mods_b):
                continue  # counted with its attention
            rows.append(dict(module=name, type=type(m).__name__, shape_before=_shape(m),
                             shape_after=_shape(a) if a is not None else "removed",
                             params_before=par_b[name], params_after=par_a.get(name, 0),
                             macs_before=macs_b.get(name, 0), macs_after=macs_a.get(name, 0)))
        layers = pd.DataFrame(rows)
        summary = dict(params_before=int(layers.params_before.sum()), params_after=int(layers.params_after.sum()),
                       macs_before=int(sum(macs_b.values())), macs_after=int(sum(macs_a.values())))
        summary["param_ratio"] = summary["params_before"] / max(summary["params_after"], 1)
        summary["mac_ratio"] = summary["macs_before"] / max(summary["macs_after"], 1)
        if latency:
            tb, ta = interleaved_latency([before, after], example_inputs, runs)
            summary.update(latency_before_s=tb, latency_after_s=ta, speedup=tb / ta)
            summary["speedup_per_mac_ratio"] = summary["speedup"] / summary["mac_ratio"]
        nodes = None
        if node_masks is not None:
            nrows = []
            for p in G.partitions:
                k = node_masks.get(p.name)
                if k is None:
                    continue
                kept = int(np.asarray(k).sum())
                if kept < p.size:
                    nrows.append(dict(partition=p.name, nodes=p.size, kept=kept, removed=p.size - kept))
            nodes = pd.DataFrame(nrows, columns=["partition", "nodes", "kept", "removed"])
    finally:
        for m, flag in flags:
            m.training = flag
    return ShrinkSummary(layers, nodes, summary)


def _inside_mha(name: str, modules: dict) -> bool:
    parent = name.rpartition(".")[0]
    return parent in modules and isinstance(modules[parent], nn.MultiheadAttention) and parent != name
