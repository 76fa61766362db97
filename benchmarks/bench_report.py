"""Cost of the connectivity report: torchvision resnet18 at 90% sparsity (target: under 10 s with the spectral
columns on the 2-core machine) and one Linear(2048, 2048) block (target: well under the dense eigendecomposition).

Times graphprune.report (local, global and spectral metrics) and the HTML page on random and spectral masks, median
of --runs, next to the export and the sparsification measured in the same run; counts the whole-graph edge gathers
(``MultipartiteGraph.edge_arrays``) and per-block edge enumerations (``Block.edge_index``) one report makes; and
times the spectral row of a Linear(2048, 2048) block against the dense generalised eigendecomposition the report
used before (``scipy.linalg.eigh`` of the dense Laplacian, then all eigenvalues of the whitened sparse one).

    .venv/bin/python benchmarks/bench_report.py [--runs 3] [--skip-dense]
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import timed_peak  # noqa: E402

import graphprune  # noqa: E402
from graphprune.graph import Block, MultipartiteGraph  # noqa: E402
from graphprune.resistance import laplacian_from_biadjacency  # noqa: E402


def dense_kappa(Bd, Bs):
    """The peer: kappa by full dense eigendecompositions (what report(spectral=True) did before)."""
    Ld, Ls = laplacian_from_biadjacency(Bd), laplacian_from_biadjacency(Bs)
    w, U = scipy.linalg.eigh(Ld)
    keep = w > max(w.max(), 1.0) * Ld.shape[0] * np.finfo(float).eps * 10
    Ur = U[:, keep] / np.sqrt(w[keep])
    lam = scipy.linalg.eigvalsh(Ur.T @ Ls @ Ur)
    return lam.max() / lam.min()


def count_calls(fn):
    """Number of MultipartiteGraph.edge_arrays and Block.edge_index calls made by ``fn()``."""
    counts = {"edge_arrays": 0, "edge_index": 0}
    orig_ea, orig_ei = MultipartiteGraph.edge_arrays, Block.edge_index

    def ea(self, *a, **k):
        counts["edge_arrays"] += 1
        return orig_ea(self, *a, **k)

    def ei(self, *a, **k):
        counts["edge_index"] += 1
        return orig_ei(self, *a, **k)

    MultipartiteGraph.edge_arrays, Block.edge_index = ea, ei
    try:
        fn()
    finally:
        MultipartiteGraph.edge_arrays, Block.edge_index = orig_ea, orig_ei
    return counts


def row(step, t, mem="", target="", width=44):
    mem = f"{mem:9.0f}" if mem != "" else f"{'':>9}"
    print(f"{step:<{width}} {t:8.2f} {mem} {target:>12}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-dense", action="store_true", help="skip the dense eigendecomposition peer (about 30 s)")
    args = ap.parse_args()
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    x = torch.randn(1, 3, 224, 224)
    t_exp, _, G = timed_peak(lambda: graphprune.from_model(model, x), args.runs)
    print(f"threads: torch {torch.get_num_threads()}; median of {args.runs} runs; peak = RSS growth during one call")
    print(f"{'step':<44} {'time s':>8} {'peak MiB':>9} {'target':>12}")
    row("resnet18 export", t_exp)
    page = os.path.join(tempfile.mkdtemp(), "report.html")
    for method in ("random", "spectral"):
        t_sp, _, masks = timed_peak(lambda m=method: graphprune.sparsify(G, m, sparsity=0.9, seed=0), args.runs)
        t_rep, mem, rep = timed_peak(lambda masks=masks: graphprune.report(G, masks), args.runs)
        t_fast, _, _ = timed_peak(lambda masks=masks: graphprune.report(G, masks, spectral=False), args.runs)
        t_html, _, _ = timed_peak(lambda rep=rep: rep.to_html(page), 1)
        row(f"resnet18 {method} masks 90%", t_sp)
        row(f"resnet18 {method} report (spectral)", t_rep, mem, "ok < 10 s" if t_rep < 10 else "MISS < 10 s")
        row(f"resnet18 {method} report (no spectral)", t_fast)
        row(f"resnet18 {method} report.to_html", t_html)
    calls = count_calls(lambda: graphprune.report(G, masks))
    nb = len(G.weight_blocks)
    print(f"one report on resnet18: {calls['edge_arrays']} edge_arrays calls, {calls['edge_index']} edge_index "
          f"calls over {len(G.blocks)} blocks ({nb} weight blocks)")

    # one Linear(2048, 2048) block at 90% sparsity: the spectral row against the dense eigendecomposition
    torch.manual_seed(0)
    lin = torch.nn.Linear(2048, 2048, bias=False)
    H = graphprune.from_model(lin, torch.randn(1, 2048))
    m = graphprune.sparsify(H, "random", sparsity=0.9, seed=0)
    t_all, mem_all, rep = timed_peak(lambda: graphprune.report(H, m), args.runs)
    t_none, _, _ = timed_peak(lambda: graphprune.report(H, m, spectral=False), args.runs)
    print()
    print(f"{'Linear(2048, 2048), 90% random':<44} {'time s':>8} {'peak MiB':>9} {'ratio':>12}")
    row("report (spectral)", t_all, mem_all)
    row("report (no spectral)", t_none)
    if not args.skip_dense:
        b = H.weight_blocks[0]
        Bd = H.biadjacency(b).toarray()
        Bs = H.with_masks(m).biadjacency(b).toarray()
        t_dense, mem_dense, kd = timed_peak(lambda: dense_kappa(Bd, Bs), 1)
        row("peer: dense eigendecomposition (kappa only)", t_dense, mem_dense, f"{t_dense / t_all:.1f}x")
        k = float(rep.frame.kappa.iloc[0])
        print(f"kappa: report {k:.6f}, dense {kd:.6f} (relative difference {abs(k - kd) / kd:.1e})")


if __name__ == "__main__":
    main()
