"""Matplotlib figures of connectivity reports, sized for a page 1024 px wide and up (headless, Agg)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

__all__ = ["density_figure", "degree_figure", "spectra_figure", "report_figure", "figure_data_uri",
           "singular_values"]

#: Relative singular values below this are numerical zeros and are not drawn.
EPS = 1e3 * np.finfo(np.float64).eps
_WIDTH = 11.0  # inches; shown at the page's width


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_data_uri(fig, dpi: int = 110) -> str:
    """PNG data URI of ``fig`` (closed afterwards)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _short(name, width=22):
    return name if len(name) <= width else "…" + name[-(width - 1):]


def density_figure(frames: dict):
    """Kept (solid) and effective (hatched) density per block, one bar group per block, one colour per candidate;
    log scale when densities span more than a decade."""
    plt = _plt()
    names = list(frames)
    blocks = list(next(iter(frames.values())).block)
    n = len(blocks)
    fig, ax = plt.subplots(figsize=(_WIDTH, 3.4))
    width = 0.8 / len(names)
    x = np.arange(n)
    vals = []
    for i, name in enumerate(names):
        f = frames[name].set_index("block").reindex(blocks)
        c = f"C{i}"
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, f.density, width * 0.95, color=c, alpha=0.35, label=name if len(names) > 1 else "kept")
        ax.bar(xs, f.effective_density, width * 0.55, color=c, label=None if len(names) > 1 else "effective")
        vals += [v for v in np.concatenate([f.density.to_numpy(), f.effective_density.to_numpy()]) if v > 0]
    if vals and max(vals) / min(vals) > 20:
        ax.set_yscale("log")
        ax.set_ylim(min(vals) / 1.5, min(1.5, max(vals) * 4))
    else:
        ax.set_ylim(0, min(1.05, max(vals, default=1.0) * 1.2))
    first = next(iter(frames.values())).set_index("block")
    if n <= 8 and "layer" in first:  # room for the layer type under each name
        labels = [f"{_short(b)}\n{first.loc[b, 'layer']}" for b in blocks]
    else:
        labels = [_short(b) for b in blocks]
    if n > 60:  # too many names to read: block positions, names in the table
        ax.set_xlabel("block (network order; names in the table)")
    else:
        ax.set_xticks(x, labels, rotation=60 if n > 8 else 0, ha="right" if n > 8 else "center",
                      fontsize=7 if n > 20 else 8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("fraction of weights")
    ax.set_title("kept (light) and effective (dark) density per block", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(names) if len(names) > 1 else 2, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    return fig


def degree_figure(rep, *, max_blocks: int = 24):
    """Histograms of the kept in-degree of each block's destination nodes (small multiples, six a row); the
    dense in-degree is marked, dead neurons (degree 0) in red."""
    plt = _plt()
    G = rep.graph
    names = list(rep.frame.block)[:max_blocks]
    ncol = min(6, max(len(names), 1))
    nrow = math.ceil(len(names) / ncol) if names else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(_WIDTH, 1.75 * nrow + 0.4), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        deg = rep.block_degrees[name]["in"]
        b = G.block(name)
        full = b.num_edges // max(b.n_dst, 1)
        top = max(int(deg.max()) if deg.size else 1, 1)
        bins = np.linspace(0, top + 1, min(top + 2, 21))
        cnt, edges = np.histogram(deg, bins=bins)
        colors = ["#d62728" if lo < 1 else "#4c78a8" for lo in edges[:-1]]
        ax.bar(edges[:-1], cnt, np.diff(edges), align="edge", color=colors, edgecolor="white", linewidth=0.3)
        ax.set_title(f"{_short(name, 26)}\n(dense {full})", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_xlim(0, top + 1)
    fig.supxlabel("kept in-degree of the block's output nodes (red: 0, dead)", fontsize=8)
    fig.supylabel("nodes", fontsize=8)
    fig.tight_layout()
    return fig


def singular_values(B, *, dense_limit: int = 1024, k: int = 160) -> np.ndarray:
    """Singular values of a biadjacency, largest first: all of them up to ``dense_limit`` rows or columns,
    else the ``k`` largest (ARPACK)."""
    import scipy.sparse as sp

    m, n = B.shape
    if min(m, n) <= dense_limit:
        A = B.toarray() if hasattr(B, "toarray") else np.asarray(B)
        return np.linalg.svd(A, compute_uv=False)
    from scipy.sparse.linalg import svds

    k = min(k, min(m, n) - 1)
    v0 = np.random.default_rng(0).standard_normal(min(m, n))
    return np.sort(svds(sp.csr_array(B), k=k, return_singular_vectors=False, v0=v0))[::-1]


def pick_blocks(frame, n=3):
    """``n`` blocks spread over the network: the largest of each of ``n`` consecutive stretches of blocks."""
    names, totals = list(frame.block), list(frame.total)
    if len(names) <= n:
        return names
    cuts = np.linspace(0, len(names), n + 1).round().astype(int)
    return [names[a + int(np.argmax(totals[a:b]))] for a, b in zip(cuts, cuts[1:]) if b > a]


def spectra_figure(reports: dict, blocks, *, view: str = "channel"):
    """Per block, the singular values of ``|W|`` of the dense reference and of each candidate, divided by the
    dense block's largest; values below :data:`EPS` (numerical zeros) are not drawn and are counted in the
    legend."""
    plt = _plt()
    first = next(iter(reports.values()))
    R = first.reference
    fig, axes = plt.subplots(1, len(blocks), figsize=(_WIDTH, 3.1), squeeze=False)
    for ax, name in zip(axes[0], blocks):
        sd = singular_values(R.biadjacency(R.block(name), view=view))
        scale = sd[0] if sd.size and sd[0] > 0 else 1.0
        series = [("dense", sd, "k")] + [
            (cand, singular_values(rep.graph.biadjacency(rep.graph.block(name), view=view)), f"C{i}")
            for i, (cand, rep) in enumerate(reports.items())]
        lo, dropped = 1.0, []
        for label, s, c in series:
            r = s / scale
            keep = r > EPS
            if (~keep).any():
                dropped.append(f"{label} {int((~keep).sum())}")
            if keep.any():
                lo = min(lo, float(r[keep].min()))
            ax.plot(np.flatnonzero(keep) + 1, r[keep], color=c, lw=1.2, ls="--" if label == "dense" else "-",
                    label=label)
        ax.set_yscale("log")
        ax.set_ylim(max(lo / 2, EPS), 1.5)
        note = "index"
        if dropped:
            text = ", ".join(dropped)
            note += "\n≈0, not drawn: " + (text if len(text) < 48 else text[:46] + "…")
        ax.set_xlabel(note, fontsize=7)
        ax.set_title(_short(name, 34), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    axes[0][0].set_ylabel("σᵢ / σ₁(dense)", fontsize=8)
    fig.suptitle("singular values of |W| (channel view)" if view == "channel" else "singular values of |W|",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def report_figure(rep, *, blocks=None):
    """One figure for :meth:`ConnectivityReport.plot`: density per block, in-degree histograms of up to three
    blocks, and the spectra of ``blocks`` (default the largest)."""
    plt = _plt()
    blocks = blocks or pick_blocks(rep.frame, 2)
    fig, ax = plt.subplots(1, 3, figsize=(_WIDTH, 3.4))
    x = np.arange(len(rep.frame))
    ax[0].bar(x - 0.2, rep.frame.density, 0.4, label="kept")
    ax[0].bar(x + 0.2, rep.frame.effective_density, 0.4, label="effective")
    ax[0].set_xticks(x, [_short(b, 14) for b in rep.frame.block], rotation=90, fontsize=6)
    ax[0].set_title("density per block", fontsize=9)
    ax[0].legend(fontsize=7)
    for name in pick_blocks(rep.frame, 3):
        deg = rep.block_degrees[name]["in"]
        ax[1].hist(deg, bins=20, histtype="step", label=_short(name, 18))
    ax[1].set_title("kept in-degree", fontsize=9)
    ax[1].legend(fontsize=6)
    R = rep.reference
    name = blocks[0]
    sd = singular_values(R.biadjacency(R.block(name)))
    ss = singular_values(rep.graph.biadjacency(rep.graph.block(name)))
    for s, label, ls in ((sd, "dense", "--"), (ss, "sparse", "-")):
        r = s / (sd[0] if sd.size and sd[0] > 0 else 1.0)
        r = r[r > EPS]
        ax[2].plot(np.arange(1, r.size + 1), r, ls=ls, label=label)
    ax[2].set_yscale("log")
    ax[2].set_title(f"σᵢ/σ₁: {_short(name, 24)}", fontsize=9)
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig
