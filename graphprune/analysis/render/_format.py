"""Number and value formatting shared by the HTML and markdown renderers (one spelling of every figure)."""

from __future__ import annotations

import math

import numpy as np

from ..glossary import summary_items

__all__ = ["num", "pct", "count", "is_missing", "fmt_value", "summary_value", "describe", "compare_columns"]


def num(v, digits=4):
    """A number in ``digits`` significant figures; scientific notation outside [1e-3, 1e5)."""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        mant, ex = f"{v:.{digits - 2}e}".split("e")
        return f"{mant}e{int(ex)}"
    return f"{v:.{digits}g}"


def pct(v):
    """A fraction as a percentage with three significant figures: ``"12.5%"``."""
    v = float(v)
    if v == 0:
        return "0%"
    return f"{100 * v:#.3g}".rstrip(".") + "%"


def count(n):
    """Compact count: 9,408; 36.9k; 1.18M; 7.00G."""
    n = int(n)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if n >= div:
            scale = 1e3 if suf == "k" else div
            return f"{n / scale:.3g}{suf}"
    return f"{n:,}"


def is_missing(v):
    """None, NaN or infinite: a value shown with its reason instead of a number."""
    return v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v))


def fmt_value(v, fmt):
    """A value in a glossary ``format``: ``"pct"``, ``"int"``, ``"bool"`` or a number."""
    if fmt == "pct":
        return pct(v)
    if fmt == "int":
        return f"{int(v):,}"
    if fmt == "bool":
        return "yes" if v else "no"
    return num(v)


def summary_value(key, s):
    """A summary figure as ``(text, why)``: ``why`` says why it is n/a or infinite, else empty."""
    v = s.get(key)
    if v is None:
        return "n/a", "graph larger than max_cut_edges" if key in ("articulation_points", "bridges") else ""
    if isinstance(v, float) and math.isinf(v):
        return ("−∞" if v < 0 else "∞"), "input and output are disconnected" if key.startswith("log10") else ""
    fmt = next(c["format"] for c in summary_items() if c["key"] == key)
    return fmt_value(v, fmt), ""


def describe(G):
    """One line on a graph's size: partitions, nodes, weight blocks, prunable weights."""
    nw = sum(b.num_edges for b in G.weight_blocks)
    return (f"{len(G.partitions)} partitions ({G.num_nodes:,} nodes), {len(G.weight_blocks)} weight blocks, "
            f"{nw:,} prunable weights")


_COMPARE_COLS = ["params_after", "mac_ratio", "speedup", "density", "effective_density", "effective_sparsity",
                 "log10_paths", "log10_synflow", "dead_neurons", "components", "collapsed_blocks", "median_kappa",
                 "median_algebraic_connectivity"]
_EXTRA = {
    "params_after": dict(key="params_after", label="parameters", format="int",
                         meaning="Parameters of the shrunk model's layers (structured pruning).",
                         reference="graphprune.structured.shrink_summary", url=""),
    "mac_ratio": dict(key="mac_ratio", label="MAC reduction", format="num",
                      meaning="Dense MACs over the shrunk model's, one forward pass of the example inputs.",
                      reference="graphprune.structured.count_macs", url=""),
    "speedup": dict(key="speedup", label="speed-up", format="num",
                    meaning="Dense latency over the shrunk model's (medians of interleaved runs on this machine).",
                    reference="graphprune.structured.shrink_summary", url=""),
    "collapsed_blocks": dict(key="collapsed_blocks", label="collapsed blocks", format="int",
                             meaning="Blocks with no effective edge (layer collapse).",
                             reference="H. Tanaka et al. NeurIPS 2020.", url=""),
    "median_kappa": dict(key="median_kappa", label="median κ", format="num",
                         meaning="Median over blocks of κ (1 is a perfect spectral copy; ∞ when most blocks are "
                                 "disconnected).", reference="D. A. Spielman, S.-H. Teng. SIAM J. Comput. 2011.",
                         url="https://doi.org/10.1137/08074489X"),
    "median_algebraic_connectivity": dict(key="median_algebraic_connectivity", label="median λ₂", format="num",
                                          meaning="Median over blocks of the algebraic connectivity.",
                                          reference="M. Fiedler. Czechoslovak Math. J. 1973.",
                                          url="https://doi.org/10.21136/CMJ.1973.101168"),
}


def compare_columns(frame):
    """The glossary entries of the comparison table's columns present in ``frame``, in page order."""
    items = {c["key"]: c for c in summary_items()}
    items.update(_EXTRA)
    return [items[k] for k in _COMPARE_COLS if k in frame.columns]


def structured_rows(st) -> list:
    """(label, value, meaning) of a structured prune's totals (:class:`graphprune.structured.ShrinkSummary`), for
    the report's cards and its markdown."""
    s = st.summary
    rows = [("Parameters", f"{s['params_before']:,} → {s['params_after']:,}",
             f"{s['param_ratio']:.2f}x fewer, in the layers that hold weights"),
            ("MACs", f"{s['macs_before']:,} → {s['macs_after']:,}",
             f"{s['mac_ratio']:.2f}x fewer multiply-accumulates in one forward pass of the example inputs")]
    if "speedup" in s:
        rows.append(("Latency", f"{s['latency_before_s'] * 1e3:.2f} ms → {s['latency_after_s'] * 1e3:.2f} ms",
                     f"{s['speedup']:.2f}x faster (median of interleaved runs on this machine); "
                     f"{s['speedup_per_mac_ratio']:.2f} of the MAC reduction"))
    if st.nodes is not None:
        removed = int(st.nodes["removed"].sum()) if len(st.nodes) else 0
        rows.append(("Removed nodes", f"{removed:,}", f"neurons, channels and heads' nodes in "
                                                       f"{len(st.nodes)} partitions"))
    return rows
