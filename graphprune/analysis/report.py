"""Connectivity reports: one call, a per-block table with warnings, a summary, markdown/HTML/JSON and plots."""

from __future__ import annotations

import base64
import html
import io
import json
import math

import numpy as np

from ..errors import ParameterError
from . import global_, local
from .spectral import block_spectral_similarity, block_spectrum_metrics

__all__ = ["ConnectivityReport", "report", "compare"]


class ConnectivityReport:
    """The result of :func:`report`.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per weight block: ``block``, ``param``, ``src``, ``dst``, ``kept``, ``total``, ``density``,
        ``effective_kept``, ``effective_density``, ``dead_inputs`` (source nodes of the block with no kept edge in
        it), ``dead_outputs``, the spectral metrics (``algebraic_connectivity``, ``spectral_gap``,
        ``ramanujan_gap``, ``weighted_spectral_gap``, ``kappa`` and ``epsilon`` against the reference), ``notes``
        (why a metric is missing) and ``warnings``.
    partitions : pandas.DataFrame
        Degree statistics per partition (:func:`graphprune.analysis.local.degree_table`).
    summary : dict
        Whole-graph figures: density, effective density and sparsity, log10 of the number of input-output paths
        and of the SynFlow objective, components, isolated/sink/source node counts, articulation points and
        bridges (None past ``max_cut_edges``), layer collapse findings.
    """

    def __init__(self, frame, partitions, summary, graph, reference):
        self.frame = frame
        self.partitions = partitions
        self.summary = summary
        self._graph = graph
        self._reference = reference

    def __repr__(self):
        s = self.summary
        return (f"ConnectivityReport(blocks={len(self.frame)}, density={s['density']:.4f}, "
                f"effective_density={s['effective_density']:.4f}, warnings={len(s['warnings'])})")

    # -- exports -------------------------------------------------------------------------------------------------
    def to_json(self, path=None) -> str:
        """JSON with ``summary``, ``blocks`` and ``partitions`` (NaN and inf as null); written to ``path`` if given."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, (np.floating,)):
                return clean(float(x))
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        data = {"summary": clean(self.summary), "blocks": clean(self.frame.to_dict(orient="records")),
                "partitions": clean(self.partitions.to_dict(orient="records"))}
        text = json.dumps(data, indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def _summary_lines(self):
        s = self.summary
        return [
            f"density {s['density']:.4f} (effective {s['effective_density']:.4f}, effective sparsity "
            f"{s['effective_sparsity']:.4f})",
            f"log10 input-output paths {s['log10_paths']:.2f}; log10 SynFlow objective {s['log10_synflow']:.2f}",
            f"components {s['components']}; isolated {s['isolated']}, sinks {s['sinks']}, sources {s['sources']}; "
            f"articulation points {s['articulation_points']}, bridges {s['bridges']}",
        ] + [f"WARNING: {w}" for w in s["warnings"]]

    def _table_columns(self):
        cols = ["block", "kept", "total", "density", "effective_density", "dead_inputs", "dead_outputs",
                "algebraic_connectivity", "ramanujan_gap", "kappa", "warnings"]
        return [c for c in cols if c in self.frame.columns]

    def to_markdown(self, path=None) -> str:
        """A markdown summary and per-block table (no extra dependency)."""
        cols = self._table_columns()
        lines = ["# Connectivity report", ""] + [f"- {x}" for x in self._summary_lines()] + [""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for _, row in self.frame[cols].iterrows():
            lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
        text = "\n".join(lines) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_html(self, path=None, *, figures: bool = True) -> str:
        """One self-contained HTML page (figures embedded as PNG data URIs)."""
        cols = self._table_columns()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>"
                       for _, r in self.frame[cols].iterrows())
        items = "".join(f"<li>{html.escape(x)}</li>" for x in self._summary_lines())
        img = ""
        if figures:
            fig = self.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
            data = base64.b64encode(buf.getvalue()).decode()
            img = f'<img alt="connectivity plots" src="data:image/png;base64,{data}">'
        text = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>graphprune connectivity report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
            f"<h1>Connectivity report</h1><ul>{items}</ul><table><tr>{head}</tr>{body}</table>{img}</body></html>"
        )
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def plot(self, *, block=None):
        """A matplotlib Figure: in-degree distribution per partition, density (kept and effective) per block, and
        the singular-value spectrum of one block (``block``, default the largest) dense against sparse. Works
        headless (Agg)."""
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "module://matplotlib_inline.backend_inline"):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        G, R = self._graph, self._reference
        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        st = local.node_status(G)
        for i, p in enumerate(G.partitions):
            if p.role == "input":
                continue
            deg = st["in_degree"][st["partition"] == i]
            ax[0].hist(deg, bins=20, histtype="step", label=p.name[:18])
        ax[0].set_xlabel("in-degree")
        ax[0].set_ylabel("nodes")
        ax[0].set_title("degree distribution")
        if len(G.partitions) <= 12:
            ax[0].legend(fontsize=7)
        x = np.arange(len(self.frame))
        ax[1].bar(x - 0.2, self.frame["density"], 0.4, label="kept")
        ax[1].bar(x + 0.2, self.frame["effective_density"], 0.4, label="effective")
        ax[1].set_xticks(x, [b[:14] for b in self.frame["block"]], rotation=90, fontsize=7)
        ax[1].set_ylabel("density")
        ax[1].set_title("density per block")
        ax[1].legend(fontsize=8)
        b = G.block(block) if block is not None else max(G.weight_blocks, key=lambda b: b.num_edges)
        for graph, label in ((R, "dense"), (G, "sparse")):
            M = graph.biadjacency(graph.block(b.name)).toarray()
            ax[2].plot(np.linalg.svd(M, compute_uv=False) if max(M.shape) <= 3000 else [], label=label)
        ax[2].set_yscale("log")
        ax[2].set_title(f"singular values of |W|: {b.name[:30]}")
        ax[2].legend(fontsize=8)
        fig.tight_layout()
        return fig


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "inf" if v == math.inf else ("-inf" if v == -math.inf else "")
        return f"{v:.4g}"
    return str(v)


def report(graph, masks=None, reference=None, *, spectral: bool = True, view: str = "channel",
           max_spectral_nodes: int = 4096, max_cut_edges: int = 200_000, progress: bool = False) -> ConnectivityReport:
    """Local and global connectivity of a (pruned) network, per block, in one call.

    Parameters
    ----------
    graph : MultipartiteGraph
        The network; its own masks apply.
    masks : dict, optional
        Extra masks to apply first (e.g. a sparsifier's output).
    reference : MultipartiteGraph, optional
        The graph to compare spectra with; default the same graph without masks.
    spectral : bool, default True
        Compute the spectral metrics (the costly part).
    view : {"channel", "rolled"}
        Node view for the spectral metrics of convolution blocks.
    max_spectral_nodes : int
        Blocks with more nodes get NaN spectral similarity with a note (dense generalised eigenproblem).
    max_cut_edges : int
        Articulation points and bridges are counted when the kept simple graph has at most this many edges
        (None in the summary otherwise).
    progress : bool
        tqdm over blocks.

    Returns
    -------
    ConnectivityReport

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> G = graphprune.from_model(net, torch.randn(1, 8))
    >>> rep = graphprune.report(G, graphprune.sparsify(G, "random", sparsity=0.5, seed=0))
    >>> list(rep.frame.block), rep.summary["density"]
    (['0', '2'], 0.5)
    """
    import pandas as pd

    H = graph if masks is None else graph.with_masks(masks)
    R = reference if reference is not None else graph.with_masks(None, combine=False)
    eff = global_.effective_mask(H)
    st = local.node_status(H)
    rows = []
    blocks = H.weight_blocks
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="report", unit="block")
    for b in blocks:
        m = H.block_mask(b)
        e = eff[b.param] if b.param_slice is None else eff[b.param][b.param_slice[0] : b.param_slice[1]]
        s, d = b.edge_index()
        keep = m.reshape(-1).numpy()
        out_deg = np.bincount(s[keep], minlength=b.n_src)
        in_deg = np.bincount(d[keep], minlength=b.n_dst)
        row = dict(block=b.name, param=b.param, src=b.src, dst=b.dst, kept=int(m.sum()), total=b.num_edges,
                   density=float(m.float().mean()), effective_kept=int(e.sum()),
                   effective_density=float(e.float().mean()), dead_inputs=int((out_deg == 0).sum()),
                   dead_outputs=int((in_deg == 0).sum()))
        notes = []
        if spectral:
            Bs = H.biadjacency(b, view=view)
            met = block_spectrum_metrics(Bs)
            reason = met.pop("reason")
            if reason:
                notes.append(reason)
            row.update(met)
            if sum(Bs.shape) <= max_spectral_nodes:
                Bd = R.biadjacency(R.block(b.name), view=view).toarray()
                sim = block_spectral_similarity(Bd, Bs.toarray(), max_nodes=max_spectral_nodes)
            else:
                sim = dict(kappa=np.nan, epsilon=np.nan, reason=f"{sum(Bs.shape)} nodes > {max_spectral_nodes}")
            row["kappa"], row["epsilon"] = sim["kappa"], sim["epsilon"]
            if sim.get("reason"):
                notes.append(f"spectral similarity skipped: {sim['reason']}")
        warn = []
        if row["effective_kept"] == 0:
            warn.append("layer collapsed")
        elif row["effective_kept"] < row["kept"]:
            warn.append(f"{row['kept'] - row['effective_kept']} ineffective edges")
        if row["dead_outputs"]:
            warn.append(f"{row['dead_outputs']} dead neurons")
        row["notes"] = "; ".join(n for n in notes if n)
        row["warnings"] = "; ".join(warn)
        rows.append(row)
    frame = pd.DataFrame(rows)
    collapse = global_.layer_collapse(H)
    kept_eff = sum(int(v.sum()) for v in eff.values())
    total = sum(v.numel() for v in eff.values())
    summary = dict(
        density=H.density(), effective_density=kept_eff / total if total else 1.0,
        effective_sparsity=1.0 - (kept_eff / total if total else 1.0),
        log10_paths=global_.count_paths(H), log10_synflow=global_.count_paths(H, weighted=True),
        components=int(len(np.unique(global_.components(H)))), isolated=int(st["isolated"].sum()),
        sinks=int(st["sink"].sum()), sources=int(st["source"].sum()),
        layer_collapse=any(c.startswith(("layer collapsed", "input and output")) for c in collapse),
        warnings=collapse,
    )
    try:  # cut vertices and bridges: Python-speed algorithms, only for graphs small enough
        summary["articulation_points"] = int(global_.articulation_points(H, max_edges=max_cut_edges).size)
        summary["bridges"] = len(global_.bridges(H, max_edges=max_cut_edges))
    except ParameterError:
        summary["articulation_points"] = summary["bridges"] = None
    return ConnectivityReport(frame, local.degree_table(H), summary, H, R)


def compare(candidates: dict, graph=None, *, spectral: bool = True, **kwargs):
    """Several sparsifiers side by side: one row per candidate with the report's summary and block medians.

    Parameters
    ----------
    candidates : dict of str to (dict of masks or MultipartiteGraph)
        Name -> masks for ``graph`` (or an already masked graph).
    graph : MultipartiteGraph, optional
        Needed when the candidates are masks.

    Returns
    -------
    pandas.DataFrame
        Index: candidate name. Columns: density, effective density and sparsity, log10 paths and SynFlow,
        components, isolated/sinks/sources, layer collapse, collapsed blocks, median kappa and algebraic
        connectivity over blocks.
    """
    import pandas as pd

    from ..errors import ParameterError

    rows = {}
    for name, cand in candidates.items():
        if isinstance(cand, dict):
            if graph is None:
                raise ParameterError("compare() needs 'graph' when the candidates are masks.")
            rep = report(graph, cand, spectral=spectral, **kwargs)
        else:
            rep = report(cand, None, reference=graph, spectral=spectral, **kwargs)
        s = dict(rep.summary)
        s["collapsed_blocks"] = int((rep.frame.effective_kept == 0).sum())
        s["warnings"] = len(s["warnings"])
        if spectral:
            s["median_kappa"] = float(rep.frame.kappa.median())
            s["median_algebraic_connectivity"] = float(rep.frame.algebraic_connectivity.median())
        rows[name] = s
    return pd.DataFrame.from_dict(rows, orient="index")
