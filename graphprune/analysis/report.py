"""Connectivity reports: one call, a per-block table with reasons for undefined values, a summary, a picture of
the network, and the same content as a self-contained HTML page, markdown and JSON.

The report walks the blocks a fixed number of times, whatever the metrics asked for: a forward sweep in
topological order (degrees, strength, reachability from the input, input-output path counts, the SynFlow
objective, components), a backward sweep (what reaches the output) and one sweep of per-block rows (effective
edges, dead neurons, spectral metrics). No whole-graph edge array is built; memory beyond the masks is per block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from .._validation import VIEWS, check_graph
from ..errors import ParameterError
from .global_ import _topological_blocks
from .glossary import SCHEMA_VERSION, block_columns, summary_items
from .spectral import block_spectral_similarity, block_spectrum_metrics

__all__ = ["ConnectivityReport", "Comparison", "report", "compare", "layer_label"]


# ---------------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------------
def layer_label(b) -> str:
    """A weight block's layer type and shape: ``"Conv2d 64→128 3×3"`` (input → output channels, kernel),
    ``"Linear 784→300"``, ``"Embedding 1000×64"``; ``"identity"`` for structural blocks."""
    if not b.is_weight:
        return "identity"
    w = tuple(int(x) for x in b.weight.shape)
    if b.layout == "linear":
        text = f"Linear {w[1]}→{w[0]}"
    elif b.layout == "embedding":
        text = f"Embedding {w[0]}×{w[1]}"
    else:
        k = "×".join(str(x) for x in w[2:])
        name = "Conv" if b.layout == "conv" else "ConvTranspose"
        text = f"{name}{len(w) - 2}d {b.n_src}→{b.n_dst} {k}"
        if b.groups != 1:
            text += f" g{b.groups}"
    if b.param_slice is not None:
        text += f" rows {b.param_slice[0]}:{b.param_slice[1]}"
    return text


# ---------------------------------------------------------------------------------------------------------------
# the sweeps
# ---------------------------------------------------------------------------------------------------------------


def _kept_edges(H, b):
    """Local ``(src, dst)`` of a block's kept edges and, for weight blocks, their ``|w|``."""
    s, d = b.edge_index()
    if not b.is_weight:
        return s, d, None
    keep = H.block_mask(b).reshape(-1).numpy()
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


def _sweep(H, *, max_cut_edges):
    """Forward and backward sweeps: per-node degrees, strength, reachability, log path counts, components and
    (while small) the simple undirected graph for cut vertices and bridges."""
    order, index = _topological_blocks(H, "report")
    n = H.num_nodes
    off = {p.name: H.node_offset(p.name) for p in H.partitions}
    ind, outd = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    strength = np.zeros(n)
    fwd = np.zeros(n, dtype=bool)
    logp = np.full(n, -np.inf)
    logw = np.full(n, -np.inf)
    inputs = [p for p in H.partitions if p.role == "input"]
    for p in inputs:
        fwd[off[p.name] : off[p.name] + p.size] = True
        logp[off[p.name] : off[p.name] + p.size] = 0.0
        logw[off[p.name] : off[p.name] + p.size] = 0.0
    comps = _Components(n)
    pairs, n_pairs = [], 0
    for b in order:
        s, d, w = _kept_edges(H, b)
        gs, gd = s + off[b.src], d + off[b.dst]
        ind += np.bincount(gd, minlength=n)
        outd += np.bincount(gs, minlength=n)
        wt = w if w is not None else np.ones(s.size)
        strength += np.bincount(gs, weights=wt, minlength=n) + np.bincount(gd, weights=wt, minlength=n)
        fwd[gd[fwd[gs]]] = True
        _logsumexp_into(logp, gd, logp[gs])
        with np.errstate(divide="ignore"):
            _logsumexp_into(logw, gd, logw[gs] + np.log(wt))
        key = np.unique(np.minimum(gs, gd) * n + np.maximum(gs, gd)) if gs.size else np.zeros(0, dtype=np.int64)
        comps.add(key // n, key % n)
        if n_pairs <= max_cut_edges:
            pairs.append(key)
            n_pairs += key.size
    bwd = np.zeros(n, dtype=bool)
    for p in H.partitions:
        if p.role == "output":
            bwd[off[p.name] : off[p.name] + p.size] = True
    for b in reversed(order):
        s, d, _ = _kept_edges(H, b)
        gs, gd = s + off[b.src], d + off[b.dst]
        bwd[gs[bwd[gd]]] = True
    outs = np.concatenate([np.arange(off[p.name], off[p.name] + p.size) for p in H.partitions
                           if p.role == "output"] or [np.zeros(0, dtype=np.int64)])

    def total(lp):
        v = lp[outs]
        v = v[np.isfinite(v)]
        if v.size == 0:
            return -math.inf
        m = v.max()
        return float((m + np.log(np.exp(v - m).sum())) / math.log(10))

    distinct = int(np.unique(np.concatenate(pairs)).size) if pairs and n_pairs <= max_cut_edges else None
    return dict(order=order, index=index, offsets=off, in_degree=ind, out_degree=outd, strength=strength,
                fwd=fwd, bwd=bwd, log10_paths=total(logp), log10_synflow=total(logw), components=comps.count,
                cut_pairs=distinct)


def _partition_table(H, sw, bins=10):
    import pandas as pd

    rows = []
    ind, outd = sw["in_degree"], sw["out_degree"]
    for p in H.partitions:
        sl = slice(sw["offsets"][p.name], sw["offsets"][p.name] + p.size)
        i, o = ind[sl], outd[sl]
        iso = (i == 0) & (o == 0)
        sink = (i > 0) & (o == 0) & (p.role != "output")
        src = (o > 0) & (i == 0) & (p.role != "input")
        alive = sw["fwd"][sl] & sw["bwd"][sl]
        rows.append(dict(
            partition=p.name, role=p.role, kind=p.kind, size=p.size,
            in_min=int(i.min()), in_mean=float(i.mean()), in_max=int(i.max()),
            out_min=int(o.min()), out_mean=float(o.mean()), out_max=int(o.max()),
            isolated=int(iso.sum()), sinks=int(sink.sum()), sources=int(src.sum()), dead=int((~alive).sum()),
            strength_mean=float(sw["strength"][sl].mean()),
            in_hist=np.histogram(i, bins=bins, range=(0, max(int(i.max()), 1)))[0].tolist(),
        ))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------------------------
def _clean(x):
    """JSON-ready: NaN and inf as None, numpy scalars and arrays as Python values."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class ConnectivityReport:
    """The result of :func:`report`.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per weight block: ``block`` (module path), ``layer`` (type and shape, e.g. ``"Conv2d 64→64
        3×3"``), ``param``, ``src``, ``dst``, ``kept``, ``total``, ``density``, ``effective_kept``,
        ``effective_density``, ``dead_inputs`` (source nodes of the block with no kept edge in it),
        ``dead_outputs``, the spectral metrics (``algebraic_connectivity``, ``spectral_gap``, ``ramanujan_gap``,
        ``weighted_spectral_gap``, ``kappa`` and ``epsilon`` against the reference), ``na`` (a dict column ->
        why its value is undefined or infinite), ``notes`` (the same reasons as one string) and ``warnings``.
    partitions : pandas.DataFrame
        Degree statistics per partition: ``partition``, ``role``, ``kind``, ``size``, in/out degree min, mean and
        max, ``isolated``, ``sinks``, ``sources``, ``dead`` (nodes on no input-output path), ``strength_mean``,
        ``in_hist``.
    summary : dict
        Whole-graph figures: ``density``, ``effective_density``, ``effective_sparsity``, ``log10_paths``,
        ``log10_synflow``, ``components``, ``isolated``, ``sinks``, ``sources``, ``dead_neurons`` (hidden nodes on
        no input-output path), ``articulation_points`` and ``bridges`` (None past ``max_cut_edges``),
        ``layer_collapse`` and ``warnings``.
    block_degrees : dict of str to dict
        Per block, ``"in"``: the kept in-degree of each destination node within the block, ``"out"``: the kept
        out-degree of each source node.
    """

    def __init__(self, frame, partitions, summary, graph, reference, block_degrees, options):
        self.frame = frame
        self.partitions = partitions
        self.summary = summary
        self.block_degrees = block_degrees
        self.options = options
        self._graph = graph
        self._reference = reference

    @property
    def graph(self):
        """The masked graph the report describes."""
        return self._graph

    def __repr__(self):
        s = self.summary
        return (f"ConnectivityReport(blocks={len(self.frame)}, density={s['density']:.4f}, "
                f"effective_density={s['effective_density']:.4f}, warnings={len(s['warnings'])})")

    # -- data ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document (see :meth:`to_json`) as Python objects."""
        from .network import network_layout

        blocks = []
        for rec in self.frame.to_dict(orient="records"):
            rec = dict(rec)
            rec["warnings"] = [w for w in rec["warnings"].split("; ") if w]
            rec.pop("notes", None)
            blocks.append(rec)
        return _clean(dict(
            schema="graphprune.report", version=SCHEMA_VERSION,
            options=self.options, summary=self.summary, blocks=blocks,
            partitions=self.partitions.to_dict(orient="records"),
            network=network_layout(self._graph, self),
            columns={c["key"]: {k: c[k] for k in ("label", "meaning", "reference")} for c in block_columns()},
            summary_items={c["key"]: {k: c[k] for k in ("label", "meaning", "reference")}
                           for c in summary_items()},
        ))

    def to_json(self, path=None) -> str:
        """The report as JSON, schema ``graphprune.report`` (documented in ``docs/report_schema.md``).

        Top-level keys: ``schema``, ``version`` (an int, bumped on incompatible changes), ``options``,
        ``summary``, ``blocks`` (one object per row of :attr:`frame`; ``na`` maps a column to the reason its value
        is null or infinite; ``warnings`` is a list), ``partitions``, ``network`` (the layered picture: partitions
        with their column and counts, blocks with densities) and the glossaries ``columns`` and
        ``summary_items``. NaN and infinity are written as null, with the reason in ``na``.
        """
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        _write(path, text)
        return text

    def _summary_lines(self):
        s = self.summary
        cut = "n/a (graph too large)" if s["articulation_points"] is None else s["articulation_points"]
        br = "n/a (graph too large)" if s["bridges"] is None else s["bridges"]
        return [
            f"density {s['density']:.4f} (effective {s['effective_density']:.4f}, effective sparsity "
            f"{s['effective_sparsity']:.4f})",
            f"log10 input-output paths {s['log10_paths']:.2f}; log10 SynFlow objective {s['log10_synflow']:.2f}",
            f"components {s['components']}; isolated {s['isolated']}, sinks {s['sinks']}, sources {s['sources']}; "
            f"dead neurons {s['dead_neurons']}; articulation points {cut}, bridges {br}",
        ] + [f"WARNING: {w}" for w in s["warnings"]]

    def to_markdown(self, path=None) -> str:
        """The same content as the page, in markdown: summary with meanings, per-block table (``n/a (reason)``
        for undefined values), glossary with references, partitions. No extra dependency."""
        from .html import report_markdown

        text = report_markdown(self)
        _write(path, text)
        return text

    def to_html(self, path=None, *, figures: bool = True) -> str:
        """One self-contained HTML page (styles, the table sorter and every figure inlined; opens offline).

        ``figures=False`` leaves out the matplotlib plots (the network picture, inline SVG, stays)."""
        from .html import report_page

        text = report_page(self, figures=figures)
        _write(path, text)
        return text

    def plot(self, *, block=None):
        """A matplotlib Figure: kept and effective density per block, the in-degree histogram of each block's
        destination nodes, and the normalised singular values of ``|W|`` (dense against sparse) of ``block``
        (default: up to four of the largest blocks), clipped at machine precision. Works headless (Agg)."""
        from .figures import report_figure

        return report_figure(self, blocks=None if block is None else [block])


class Comparison:
    """The result of :func:`compare`: several masked versions of one network side by side.

    Attributes
    ----------
    frame : pandas.DataFrame
        Index: candidate name; columns: the report's summary (density, effective density and sparsity, log10
        paths and SynFlow, components, isolated/sinks/sources, dead neurons, layer collapse), ``collapsed_blocks``,
        ``warnings`` (their count) and, with spectral metrics, ``median_kappa`` and
        ``median_algebraic_connectivity``. The frame's columns and methods are also reachable on the comparison
        itself (``cmp.density``, ``cmp.index``), as when :func:`compare` returned a DataFrame.
    reports : dict of str to ConnectivityReport
    na : dict of str to dict
        Per candidate, column -> why its value is infinite or undefined.
    """

    def __init__(self, frame, reports, na=None):
        self.frame = frame
        self.reports = reports
        self.na = na or {k: {} for k in reports}

    def __getattr__(self, name):
        if name.startswith("_") or name in ("frame", "reports", "na"):
            raise AttributeError(name)
        return getattr(self.frame, name)

    def __getitem__(self, key):
        return self.frame[key]

    def __len__(self):
        return len(self.frame)

    def __repr__(self):
        return f"Comparison({list(self.reports)})\n{self.frame!r}"

    def to_dict(self) -> dict:
        return _clean(dict(schema="graphprune.comparison", version=SCHEMA_VERSION,
                           summary=[{"candidate": k, **v, "na": self.na.get(k, {})}
                                    for k, v in self.frame.to_dict(orient="index").items()],
                           candidates={k: r.to_dict() for k, r in self.reports.items()}))

    def to_json(self, path=None) -> str:
        """JSON, schema ``graphprune.comparison``: ``schema``, ``version``, ``summary`` (one object per candidate,
        the columns of :attr:`frame`, ``candidate`` and ``na``) and ``candidates`` (name -> a ``graphprune.report``
        document)."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        _write(path, text)
        return text

    def to_markdown(self, path=None) -> str:
        """Summary rows, per-block densities side by side, and each candidate's warnings, in markdown."""
        from .html import comparison_markdown

        text = comparison_markdown(self)
        _write(path, text)
        return text

    def to_html(self, path=None, *, figures: bool = True) -> str:
        """One self-contained page: summary rows per candidate, per-block kept and effective densities side by
        side, the spectra of the largest blocks, and each candidate's network picture and table."""
        from .html import comparison_page

        text = comparison_page(self, figures=figures)
        _write(path, text)
        return text


def _write(path, text):
    if path is None:
        return
    import os

    folder = os.path.dirname(os.fspath(path))
    if folder and not os.path.isdir(folder):
        raise ParameterError(f"The folder of the 'path' parameter does not exist: {folder!r}. Create it first.")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------------------
def _check_masks(masks, who):
    from ..graph import MultipartiteGraph

    if masks is None or isinstance(masks, Mapping):
        return
    if isinstance(masks, MultipartiteGraph):
        raise ParameterError(f"The 'masks' parameter of {who} must be a dict of parameter name -> bool tensor. "
                             "Got a MultipartiteGraph instead: pass it as the first argument, or pass its .masks.")
    raise ParameterError(f"The 'masks' parameter of {who} must be a dict of parameter name -> bool tensor or "
                         f"None. Got {type(masks).__name__} instead.")


def _check_options(spectral, view, max_spectral_nodes, max_cut_edges, who):
    if not isinstance(spectral, (bool, np.bool_)):
        raise ParameterError(f"The 'spectral' parameter of {who} must be True or False. Got {spectral!r} instead.")
    if view not in VIEWS:
        raise ParameterError(f"The 'view' parameter of {who} must be one of {VIEWS}. Got {view!r} instead.")
    for name, v in (("max_spectral_nodes", max_spectral_nodes), ("max_cut_edges", max_cut_edges)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ParameterError(f"The '{name}' parameter of {who} must be a non-negative int. Got {v!r} instead.")


def report(G, masks=None, reference=None, *, spectral: bool = True, view: str = "channel",
           max_spectral_nodes: int = 4096, max_cut_edges: int = 200_000, progress: bool = False) -> ConnectivityReport:
    """Local and global connectivity of a (pruned) network, per block, in one call.

    Parameters
    ----------
    G : MultipartiteGraph
        The network; its own masks apply.
    masks : dict, optional
        Extra masks to apply first (e.g. a sparsifier's output), keyed by parameter name.
    reference : MultipartiteGraph, optional
        The graph to compare spectra with; default the same graph without masks.
    spectral : bool, default True
        Compute the spectral metrics (extreme eigenvalues only, see :mod:`graphprune.analysis.spectral`).
    view : {"channel", "rolled"}
        Node view for the spectral metrics of convolution blocks.
    max_spectral_nodes : int
        Blocks with more nodes get no spectral similarity (``kappa``, ``epsilon``), with the reason in ``na``.
    max_cut_edges : int
        Articulation points and bridges are counted when the kept simple graph has at most this many edges
        (None in the summary otherwise).
    progress : bool
        tqdm over blocks.

    Returns
    -------
    ConnectivityReport

    Raises
    ------
    ParameterError
        ``G`` is not a graph, ``masks`` is not a dict, or an option is out of range.

    Notes
    -----
    Three sweeps over the blocks (forward, backward, per-block rows); memory beyond the masks is that of one
    block. The spectral metrics cost two dense Cholesky factorisations per block (``O(N^3/3)``, ``N`` nodes) and a
    few dozen ``O(N^2)`` solves. The graph is not modified.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> G = graphprune.from_model(net, torch.randn(1, 8))
    >>> rep = graphprune.report(G, graphprune.sparsify(G, "random", sparsity=0.5, seed=0))
    >>> list(rep.frame.block), list(rep.frame.layer), rep.summary["density"]
    (['0', '2'], ['Linear 8→8', 'Linear 8→2'], 0.5)
    """
    import pandas as pd
    import torch

    from ..graph import MultipartiteGraph

    check_graph(G, "report")
    _check_masks(masks, "report")
    if reference is not None and not isinstance(reference, MultipartiteGraph):
        raise ParameterError("The 'reference' parameter of report must be a MultipartiteGraph or None. "
                             f"Got {type(reference).__name__} instead.")
    _check_options(spectral, view, max_spectral_nodes, max_cut_edges, "report")
    H = G if masks is None else G.with_masks(masks)
    R = reference if reference is not None else G.with_masks(None, combine=False)
    sw = _sweep(H, max_cut_edges=max_cut_edges)
    fwd, bwd, off = sw["fwd"], sw["bwd"], sw["offsets"]
    tied = {}
    for b in H.weight_blocks:
        tied[b.param] = tied.get(b.param, 0) + 1
    eff_param = {p: torch.zeros(H.param_shapes[p], dtype=torch.bool) for p, c in tied.items() if c > 1}
    eff_count = {}
    rows, degrees = [], {}
    blocks = H.weight_blocks
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="report", unit="block")
    for b in blocks:
        s, d = b.edge_index()
        m = H.block_mask(b)
        keep = m.reshape(-1).numpy()
        eff = keep & fwd[s + off[b.src]] & bwd[d + off[b.dst]]
        n_eff = int(eff.sum())
        if b.param in eff_param:
            full = eff_param[b.param]
            e = torch.from_numpy(eff).reshape(b.weight.shape)
            if b.param_slice is not None:
                full[b.param_slice[0] : b.param_slice[1]] |= e
            else:
                full |= e
        else:
            eff_count[b.param] = n_eff
        out_deg = np.bincount(s[keep], minlength=b.n_src)
        in_deg = np.bincount(d[keep], minlength=b.n_dst)
        degrees[b.name] = {"in": in_deg, "out": out_deg}
        kept = int(keep.sum())
        row = dict(block=b.name, layer=layer_label(b), param=b.param, src=b.src, dst=b.dst, kept=kept,
                   total=b.num_edges, density=kept / b.num_edges if b.num_edges else 1.0, effective_kept=n_eff,
                   effective_density=n_eff / b.num_edges if b.num_edges else 1.0,
                   dead_inputs=int((out_deg == 0).sum()), dead_outputs=int((in_deg == 0).sum()))
        na = {}
        if spectral:
            Bs = H.biadjacency(b, view=view)
            factors = {}  # the block's Cholesky factors, shared by its spectral metrics and dropped after it
            met = block_spectrum_metrics(Bs, _factors=factors)
            reason = met.pop("reason")
            row.update(met)
            for col in ("algebraic_connectivity", "spectral_gap", "ramanujan_gap", "weighted_spectral_gap"):
                if not math.isfinite(row[col]):
                    na[col] = _reason_for(col, reason, kept)
            if row["algebraic_connectivity"] == 0.0:
                na["algebraic_connectivity"] = "disconnected"
            if sum(Bs.shape) <= max_spectral_nodes:
                Bd = R.biadjacency(R.block(b.name), view=view)
                sim = block_spectral_similarity(Bd, Bs, max_nodes=max_spectral_nodes, _factors=factors)
            else:
                sim = dict(kappa=np.nan, epsilon=np.nan,
                           reason=f"{sum(Bs.shape)} nodes > max_spectral_nodes={max_spectral_nodes}")
            del factors
            row["kappa"], row["epsilon"] = sim["kappa"], sim["epsilon"]
            if sim.get("reason"):
                na["kappa"] = _short_reason(sim["reason"])
                na["epsilon"] = "κ = ∞" if math.isinf(row["kappa"]) else na["kappa"]
        warn = []
        if n_eff == 0:
            warn.append("layer collapsed")
        elif n_eff < kept:
            warn.append(f"{kept - n_eff} ineffective edges")
        if row["dead_outputs"]:
            warn.append(f"{row['dead_outputs']} dead neurons")
        row["na"] = na
        row["notes"] = "; ".join(f"{k}: {v}" for k, v in na.items())
        row["warnings"] = "; ".join(warn)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for p, e in eff_param.items():
        eff_count[p] = int(e.sum())
    total = sum(math.prod(H.param_shapes[p]) for p in tied)
    kept_eff = sum(eff_count.values())
    table = _partition_table(H, sw)
    findings = []
    outs = [p for p in H.partitions if p.role == "output"]
    if not any(fwd[off[p.name] : off[p.name] + p.size].any() for p in outs):
        findings.append("input and output are disconnected")
    for r in rows:
        p = r["param"]
        if not (bool(eff_param[p].any()) if p in eff_param else r["effective_kept"] > 0):
            findings.append(f"layer collapsed: block '{r['block']}' has no effective edge")
    for p, dead in zip(H.partitions, table.dead):
        if dead == p.size:
            findings.append(f"partition '{p.name}' is cut off (no node on an input-output path)")
    hidden = table.role == "hidden"
    ed = kept_eff / total if total else 1.0
    summary = dict(
        density=H.density(), effective_density=ed, effective_sparsity=1.0 - ed,
        log10_paths=sw["log10_paths"], log10_synflow=sw["log10_synflow"], components=sw["components"],
        isolated=int(table.isolated.sum()), sinks=int(table.sinks.sum()), sources=int(table.sources.sum()),
        dead_neurons=int(table.dead[hidden].sum()),
        layer_collapse=any(c.startswith(("layer collapsed", "input and output")) for c in findings),
        warnings=findings, articulation_points=None, bridges=None,
    )
    if sw["cut_pairs"] is not None and sw["cut_pairs"] <= max_cut_edges:
        from . import global_

        summary["articulation_points"] = int(global_.articulation_points(H, max_edges=max_cut_edges).size)
        summary["bridges"] = len(global_.bridges(H, max_edges=max_cut_edges))
    options = dict(spectral=bool(spectral), view=view, max_spectral_nodes=int(max_spectral_nodes),
                   max_cut_edges=int(max_cut_edges))
    return ConnectivityReport(frame, table, summary, H, R, degrees, options)


def _short_reason(reason):
    import re

    m = re.match(r"the sparse block has (\d+) connected components where the dense one has (\d+)", reason)
    if m:
        return f"disconnected: {m.group(1)} components (dense {m.group(2)})"
    return reason


def _reason_for(col, reason, kept):
    if kept == 0:
        return "no kept edge"
    parts = [r for r in reason.split("; ") if r]
    if col == "ramanujan_gap":
        for r in parts:
            if r.startswith("ramanujan"):
                return r.replace("ramanujan gap undefined: ", "")
    if col == "algebraic_connectivity":
        return "fewer than two nodes with edges"
    for r in parts:
        if r.startswith("spectral gaps"):
            return r.replace("spectral gaps undefined: ", "")
    return reason or "undefined"


def compare(candidates, G=None, *, spectral: bool = True, **kwargs) -> Comparison:
    """Several sparsifiers side by side on one network.

    Parameters
    ----------
    candidates : dict of str to (dict of masks or MultipartiteGraph)
        Name -> masks for ``G`` (or an already masked graph of the same network).
    G : MultipartiteGraph, optional
        The network; needed when the candidates are masks. The graph-first order of :func:`report` and
        :func:`graphprune.apply_masks`, ``compare(G, candidates)``, is accepted too.
    spectral : bool, default True
    **kwargs
        Passed to :func:`report` (``view``, ``max_spectral_nodes``, ``max_cut_edges``, ``progress``).

    Returns
    -------
    Comparison
        ``.frame`` (one row per candidate), ``.reports`` and ``to_html`` / ``to_markdown`` / ``to_json``.

    Raises
    ------
    ParameterError
        ``candidates`` is not a non-empty dict, a candidate is neither masks nor a graph, or masks come without
        ``G``.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> G = graphprune.from_model(net, torch.randn(1, 8))
    >>> cands = {m: graphprune.sparsify(G, m, sparsity=0.5, seed=0) for m in ("random", "magnitude")}
    >>> cmp = graphprune.compare(cands, G, spectral=False)
    >>> list(cmp.frame.index), float(cmp.frame.density.iloc[0])
    (['random', 'magnitude'], 0.5)
    """
    import pandas as pd

    from ..graph import MultipartiteGraph

    if isinstance(candidates, MultipartiteGraph) and isinstance(G, Mapping):
        candidates, G = G, candidates  # graph-first order, like report(G, masks) and apply_masks(model, G, masks)
    if not isinstance(candidates, Mapping) or not candidates:
        got = type(candidates).__name__ if isinstance(candidates, Mapping) is False else "an empty dict"
        raise ParameterError(
            "The 'candidates' parameter of compare must be a non-empty dict of name -> masks (or masked "
            f"MultipartiteGraph), e.g. compare({{'spectral': masks, 'random': masks2}}, G). Got {got} instead.")
    if G is not None:
        check_graph(G, "compare")
    reports = {}
    for name, cand in candidates.items():
        if isinstance(cand, MultipartiteGraph):
            reports[str(name)] = report(cand, None, reference=G, spectral=spectral, **kwargs)
        elif isinstance(cand, Mapping):
            if G is None:
                raise ParameterError(f"The 'G' parameter of compare is needed when the candidates are masks "
                                     f"(candidate {name!r}): call compare(candidates, G).")
            reports[str(name)] = report(G, cand, spectral=spectral, **kwargs)
        else:
            raise ParameterError(f"Candidate {name!r} of compare must be a dict of masks or a MultipartiteGraph. "
                                 f"Got {type(cand).__name__} instead.")
    rows, na = {}, {}
    for name, rep in reports.items():
        s = dict(rep.summary)
        s["collapsed_blocks"] = int((rep.frame.effective_kept == 0).sum())
        s["warnings"] = len(s["warnings"])
        why = {}
        for k in ("log10_paths", "log10_synflow"):
            if s[k] == -math.inf:
                why[k] = "input and output are disconnected"
        if spectral:
            f = rep.frame
            s["median_kappa"] = float(f.kappa.median())
            s["median_algebraic_connectivity"] = float(f.algebraic_connectivity.median())
            if math.isinf(s["median_kappa"]):
                why["median_kappa"] = f"{int(np.isinf(f.kappa).sum())} of {len(f)} blocks disconnected"
            elif math.isnan(s["median_kappa"]):
                why["median_kappa"] = "no block has κ (too large for max_spectral_nodes)"
            if math.isnan(s["median_algebraic_connectivity"]):
                why["median_algebraic_connectivity"] = "no block has two nodes with edges"
        rows[name] = s
        na[name] = why
    return Comparison(pd.DataFrame.from_dict(rows, orient="index"), reports, na)
