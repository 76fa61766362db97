"""Connectivity reports: one call, a per-block table with reasons for undefined values, a summary, the layered
picture of the network as data, and the same content as a self-contained HTML page, markdown and JSON.

This module builds the data; :mod:`graphprune.analysis.render` turns it into pages. The report walks the blocks a
fixed number of times, whatever the metrics asked for: the forward and backward sweeps of
:mod:`graphprune.analysis.traversal` (the ones behind :mod:`graphprune.analysis.global_`: degrees, strength,
reachability, input-output path counts, the SynFlow objective, components) and one sweep of per-block rows
(effective edges, dead neurons, spectral metrics). No whole-graph edge array is built; memory beyond the masks is
per block. Undefined values carry the :class:`~graphprune.analysis.reasons.Reason` the analysers give, rendered
here as short phrases (the ``na`` column).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from .._validation import VIEWS, check_graph
from ..errors import ParameterError
from . import global_
from .glossary import SCHEMA_VERSION, block_columns, summary_items
from .partition_graph import layer_label, network_layout
from .reasons import Reason
from .spectral import similarity_and_reason, spectrum_metrics_and_reasons
from .traversal import backward_sweep, collapse_findings, forward_sweep

__all__ = ["ConnectivityReport", "Comparison", "report", "compare"]


# ---------------------------------------------------------------------------------------------------------------
# the steps of report()
# ---------------------------------------------------------------------------------------------------------------
def _sweeps(H, max_cut_edges):
    """The forward sweep (everything the report shows) and the backward sweep, in one dict."""
    sw = forward_sweep(H, owner="report", degrees=True, paths=True, synflow=True, components=True,
                       max_cut_edges=max_cut_edges)
    sw["bwd"] = backward_sweep(H, sw["order"])
    return sw


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


class _EffectiveEdges:
    """Effective edges per parameter: counted per block, or OR-ed into one mask for a parameter that backs several
    blocks (tied weights, row slices), so an edge effective in any of its uses counts once."""

    def __init__(self, H):
        import torch

        uses = {}
        for b in H.weight_blocks:
            uses[b.param] = uses.get(b.param, 0) + 1
        self.total = sum(math.prod(H.param_shapes[p]) for p in uses)
        self.shared = {p: torch.zeros(H.param_shapes[p], dtype=torch.bool) for p, c in uses.items() if c > 1}
        self.counts = {}

    def add(self, b, eff, n_eff):
        """Record block ``b``'s effective edges (``eff``: bool per edge in parameter order; ``n_eff`` of them)."""
        import torch

        if b.param not in self.shared:
            self.counts[b.param] = n_eff
            return
        b.or_rows(self.shared[b.param], torch.from_numpy(eff).reshape(b.weight.shape))

    def alive(self, b, n_eff):
        """Whether block ``b`` (with ``n_eff`` effective edges of its own) keeps an effective edge: its own, or, for
        a parameter with several uses, one effective in any use within the block's rows (a row slice, such as the
        k rows of a packed in_proj, is alive only through its own rows), as :func:`layer_collapse` decides."""
        if b.param not in self.shared:
            return n_eff > 0
        return bool(b.rows(self.shared[b.param]).any())

    def kept(self):
        return sum(self.counts.values()) + sum(int(e.sum()) for e in self.shared.values())


def _block_row(H, b, sw, effective):
    """The counting columns of a block's row (kept, effective, dead ends) and its kept degrees."""
    s, d = b.edge_index()
    keep = H.block_mask(b).reshape(-1).numpy()
    off = sw["offsets"]
    eff = keep & sw["fwd"][s + off[b.src]] & sw["bwd"][d + off[b.dst]]
    n_eff = int(eff.sum())
    effective.add(b, eff, n_eff)
    out_deg = np.bincount(s[keep], minlength=b.n_src)
    in_deg = np.bincount(d[keep], minlength=b.n_dst)
    kept = int(keep.sum())
    row = dict(block=b.name, layer=layer_label(b), param=b.param, src=b.src, dst=b.dst, kept=kept,
               total=b.num_edges, density=kept / b.num_edges if b.num_edges else 1.0, effective_kept=n_eff,
               effective_density=n_eff / b.num_edges if b.num_edges else 1.0,
               dead_inputs=int((out_deg == 0).sum()), dead_outputs=int((in_deg == 0).sum()))
    return row, {"in": in_deg, "out": out_deg}


def _na_text(reason: Reason) -> str:
    """The short phrase of the ``na`` column for an analyser's reason, from its code and numbers."""
    n = reason.numbers
    if reason.code == "disconnected":
        return f"disconnected: {n['components']} components (dense {n['dense_components']})"
    if reason.code == "average_degree":
        return f"average degree {n['average_degree']:.2f} < 3"
    if reason.code == "one_node_side":
        return "one node on a side"
    return reason.text


_UNDEFINED = Reason("undefined", "undefined")


def _spectral_columns(H, R, b, kept, view, max_spectral_nodes):
    """A block's spectral metrics and, per undefined or infinite one, its reason (``na``)."""
    Bs = H.biadjacency(b, view=view)
    factors = {}  # the block's Cholesky factors, shared by its spectral metrics and dropped after it
    cols, reasons = spectrum_metrics_and_reasons(Bs, factors=factors)
    na = {}
    for col, v in cols.items():
        if not math.isfinite(v):
            na[col] = "no kept edge" if kept == 0 else _na_text(reasons.get(col, _UNDEFINED))
    if cols["algebraic_connectivity"] == 0.0:
        na["algebraic_connectivity"] = "disconnected"
    nodes = sum(Bs.shape)
    if nodes <= max_spectral_nodes:
        Bd = R.biadjacency(R.block(b.name), view=view)
        sim, why = similarity_and_reason(Bd, Bs, max_nodes=max_spectral_nodes, factors=factors)
    else:
        sim = dict(kappa=np.nan, epsilon=np.nan)
        why = Reason("too_large", f"{nodes} nodes > max_spectral_nodes={max_spectral_nodes}",
                     {"nodes": nodes, "max_nodes": max_spectral_nodes})
    del factors
    cols["kappa"], cols["epsilon"] = sim["kappa"], sim["epsilon"]
    if why is not None:
        na["kappa"] = _na_text(why)
        na["epsilon"] = "κ = ∞" if math.isinf(cols["kappa"]) else na["kappa"]
    return cols, na


def _block_warnings(row) -> list[str]:
    """A block's own warnings: collapsed, ineffective edges, dead neurons."""
    warn = []
    if row["effective_kept"] == 0:
        warn.append("layer collapsed")
    elif row["effective_kept"] < row["kept"]:
        warn.append(f"{row['kept'] - row['effective_kept']} ineffective edges")
    if row["dead_outputs"]:
        warn.append(f"{row['dead_outputs']} dead neurons")
    return warn


def _summary(H, sw, rows, effective, table, max_cut_edges):
    """Whole-graph figures and the collapse findings (as reasons) of the report."""
    collapsed = [r["block"] for r in rows if not effective.alive(H.block(r["block"]), r["effective_kept"])]
    findings = collapse_findings(H, sw["fwd"], sw["bwd"], collapsed)
    hidden = table.role == "hidden"
    ed = effective.kept() / effective.total if effective.total else 1.0
    summary = dict(
        density=H.density(), effective_density=ed, effective_sparsity=1.0 - ed,
        log10_paths=sw["log10_paths"], log10_synflow=sw["log10_synflow"], components=sw["components"],
        isolated=int(table.isolated.sum()), sinks=int(table.sinks.sum()), sources=int(table.sources.sum()),
        dead_neurons=int(table.dead[hidden].sum()),
        layer_collapse=any(f.code in ("layer_collapsed", "disconnected") for f in findings),
        warnings=[f.text for f in findings], articulation_points=None, bridges=None,
    )
    if sw["cut_pairs"] is not None and sw["cut_pairs"] <= max_cut_edges:
        summary["articulation_points"] = int(global_.articulation_points(H, max_edges=max_cut_edges).size)
        summary["bridges"] = len(global_.bridges(H, max_edges=max_cut_edges))
    return summary, findings


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
    findings : list of Reason
        The summary's ``warnings`` as structured reasons (codes ``"disconnected"``, ``"layer_collapsed"``,
        ``"partition_cut_off"``; see :func:`graphprune.analysis.traversal.collapse_findings`).
    block_warnings : dict of str to list of str
        Per block, its warnings (the ``warnings`` column is the same list joined with ``"; "``).
    structured : object or None
        What a structured prune bought, when ``report(..., structured=...)`` was given one
        (:class:`graphprune.structured.ShrinkSummary`: ``summary``, ``layers``, ``nodes``).
    """

    def __init__(self, frame, partitions, summary, graph, reference, block_degrees, options, *, findings=(),
                 block_warnings=None, structured=None):
        self.frame = frame
        self.partitions = partitions
        self.summary = summary
        self.block_degrees = block_degrees
        self.options = options
        self.findings = list(findings)
        self.block_warnings = dict(block_warnings or {})
        self.structured = structured
        self._graph = graph
        self._reference = reference

    @property
    def graph(self):
        """The masked graph the report describes."""
        return self._graph

    @property
    def reference(self):
        """The graph the spectral metrics compare with (by default ``G`` without masks)."""
        return self._reference

    @property
    def network(self) -> dict:
        """The layered picture of the network as data (:func:`~graphprune.analysis.partition_graph.network_layout`
        with this report's densities and dead nodes): what the page draws and the JSON's ``network``."""
        return network_layout(self._graph, self)

    def __repr__(self):
        s = self.summary
        return (f"ConnectivityReport(blocks={len(self.frame)}, density={s['density']:.4f}, "
                f"effective_density={s['effective_density']:.4f}, warnings={len(s['warnings'])})")

    # -- data ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document (see :meth:`to_json`) as Python objects."""
        blocks = []
        for rec in self.frame.to_dict(orient="records"):
            rec = dict(rec)
            rec["warnings"] = list(self.block_warnings.get(rec["block"], []))
            rec.pop("notes", None)
            blocks.append(rec)
        doc = dict(
            schema="graphprune.report", version=SCHEMA_VERSION,
            options=self.options, summary=self.summary, blocks=blocks,
            partitions=self.partitions.to_dict(orient="records"),
            network=self.network,
            columns={c["key"]: {k: c[k] for k in ("label", "meaning", "reference")} for c in block_columns()},
            summary_items={c["key"]: {k: c[k] for k in ("label", "meaning", "reference")}
                           for c in summary_items()},
        )
        if self.structured is not None:
            s = self.structured
            doc["structured"] = dict(summary=dict(s.summary), layers=s.layers.to_dict(orient="records"),
                                     nodes=[] if s.nodes is None else s.nodes.to_dict(orient="records"))
        return _clean(doc)

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
        from .render.markdown import report_markdown

        text = report_markdown(self)
        _write(path, text)
        return text

    def to_html(self, path=None, *, figures: bool = True) -> str:
        """One self-contained HTML page (styles, the table sorter and every figure inlined; opens offline).

        ``figures=False`` leaves out the matplotlib plots (the network picture, inline SVG, stays)."""
        from .render.html import report_page

        text = report_page(self, figures=figures)
        _write(path, text)
        return text

    def plot(self, *, block=None):
        """A matplotlib Figure: kept and effective density per block, the in-degree histogram of each block's
        destination nodes, and the normalised singular values of ``|W|`` (dense against sparse) of ``block``
        (default: up to four of the largest blocks), clipped at machine precision. Works headless (Agg)."""
        from .render.figures import report_figure

        return report_figure(self, blocks=None if block is None else [block])


class Comparison:
    """The result of :func:`compare`: several masked versions of one network side by side.

    Attributes
    ----------
    frame : pandas.DataFrame
        Index: candidate name; columns: the report's summary (density, effective density and sparsity, log10
        paths and SynFlow, components, isolated/sinks/sources, dead neurons, layer collapse), ``collapsed_blocks``,
        ``warnings`` (their count) and, with spectral metrics, ``median_kappa`` and
        ``median_algebraic_connectivity``.
    reports : dict of str to ConnectivityReport
    na : dict of str to dict
        Per candidate, column -> why its value is infinite or undefined.
    """

    def __init__(self, frame, reports, na=None):
        self.frame = frame
        self.reports = reports
        self.na = na or {k: {} for k in reports}

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
        from .render.markdown import comparison_markdown

        text = comparison_markdown(self)
        _write(path, text)
        return text

    def to_html(self, path=None, *, figures: bool = True) -> str:
        """One self-contained page: summary rows per candidate, per-block kept and effective densities side by
        side, the spectra of the largest blocks, and each candidate's network picture and table."""
        from .render.html import comparison_page

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
           max_spectral_nodes: int = 4096, max_cut_edges: int = 200_000, progress: bool = False,
           structured=None) -> ConnectivityReport:
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
    structured : ShrinkSummary, optional
        What a structured prune bought (:func:`graphprune.structured.shrink_summary`): the page, the markdown and
        the JSON (key ``structured``) then show the removed nodes per partition, parameters and MACs per layer and
        the measured latency. Pass the dense graph and
        :func:`graphprune.structured.edge_masks` of the node masks as ``masks`` to see the shrunk network's
        connectivity beside it.

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

    from ..graph import MultipartiteGraph

    check_graph(G, "report")
    _check_masks(masks, "report")
    if reference is not None and not isinstance(reference, MultipartiteGraph):
        raise ParameterError("The 'reference' parameter of report must be a MultipartiteGraph or None. "
                             f"Got {type(reference).__name__} instead.")
    _check_options(spectral, view, max_spectral_nodes, max_cut_edges, "report")
    _check_structured(structured, "report")
    H = G if masks is None else G.with_masks(masks)
    R = reference if reference is not None else G.with_masks(None, combine=False)
    sw = _sweeps(H, max_cut_edges)
    effective = _EffectiveEdges(H)
    rows, degrees, warnings = [], {}, {}
    blocks = H.weight_blocks
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="report", unit="block")
    for b in blocks:
        row, degrees[b.name] = _block_row(H, b, sw, effective)
        na = {}
        if spectral:
            cols, na = _spectral_columns(H, R, b, row["kept"], view, max_spectral_nodes)
            row.update(cols)
        warnings[b.name] = _block_warnings(row)
        row["na"] = na
        row["notes"] = "; ".join(f"{k}: {v}" for k, v in na.items())
        row["warnings"] = "; ".join(warnings[b.name])
        rows.append(row)
    table = _partition_table(H, sw)
    summary, findings = _summary(H, sw, rows, effective, table, max_cut_edges)
    options = dict(spectral=bool(spectral), view=view, max_spectral_nodes=int(max_spectral_nodes),
                   max_cut_edges=int(max_cut_edges))
    return ConnectivityReport(pd.DataFrame(rows), table, summary, H, R, degrees, options, findings=findings,
                              block_warnings=warnings, structured=structured)


def _check_structured(structured, who):
    """A ShrinkSummary-like object (``summary`` dict, ``layers`` frame, ``nodes`` frame or None) or None."""
    if structured is None:
        return
    ok = isinstance(getattr(structured, "summary", None), dict) and hasattr(structured, "layers") and hasattr(
        structured, "nodes")
    if not ok:
        raise ParameterError(f"The 'structured' parameter of {who} must be a ShrinkSummary "
                             "(graphprune.structured.shrink_summary(dense, shrunk, x)) or None. Got "
                             f"{type(structured).__name__} instead.")


def compare(candidates, G=None, *, spectral: bool = True, structured=None, **kwargs) -> Comparison:
    """Several sparsifiers side by side on one network.

    Parameters
    ----------
    candidates : dict of str to (dict of masks or MultipartiteGraph)
        Name -> masks for ``G`` (or an already masked graph of the same network).
    G : MultipartiteGraph, optional
        The network; needed when the candidates are masks. The graph-first order of :func:`report` and
        :func:`graphprune.apply_masks`, ``compare(G, candidates)``, is accepted too.
    spectral : bool, default True
    structured : dict of str to ShrinkSummary, optional
        Per candidate name, what its structured prune bought (:func:`graphprune.structured.shrink_summary`): its
        report gets it, and the comparison table the columns ``params_after``, ``mac_ratio`` and (with latency)
        ``speedup``.
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
    if structured is not None:
        if not isinstance(structured, Mapping) or not set(map(str, structured)) <= set(map(str, candidates)):
            got = sorted(map(str, structured)) if isinstance(structured, Mapping) else type(structured).__name__
            raise ParameterError("The 'structured' parameter of compare must be a dict of candidate name -> "
                                 f"ShrinkSummary, naming only candidates. Got {got} instead.")
        for v in structured.values():
            _check_structured(v, "compare")
    reports = _candidate_reports(candidates, G, spectral, kwargs, structured or {})
    rows, na = {}, {}
    for name, rep in reports.items():
        rows[name], na[name] = _comparison_row(rep, spectral)
    return Comparison(pd.DataFrame.from_dict(rows, orient="index"), reports, na)


def _candidate_reports(candidates, G, spectral, kwargs, structured):
    """One report per candidate (masks for ``G``, or an already masked graph against ``G``)."""
    from ..graph import MultipartiteGraph

    reports = {}
    for name, cand in candidates.items():
        kwargs = dict(kwargs, structured=structured.get(name, structured.get(str(name))))
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
    return reports


def _comparison_row(rep, spectral):
    """A candidate's row of the comparison (its report's summary, collapsed blocks, medians) and the reasons of
    its infinite or undefined values."""
    s = dict(rep.summary)
    s["collapsed_blocks"] = int((rep.frame.effective_kept == 0).sum())
    s["warnings"] = len(s["warnings"])
    if rep.structured is not None:
        st = rep.structured.summary
        s.update(params_after=int(st["params_after"]), mac_ratio=float(st["mac_ratio"]))
        if "speedup" in st:
            s["speedup"] = float(st["speedup"])
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
    return s, why
