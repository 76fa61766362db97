"""Exact effective resistances of dense bipartite blocks (half-normal weights): graphprune against peers.

Peers, measured in the same run: numpy.linalg.pinv of the full Laplacian (up to 2048x2048), PyGSP's
``utils.resistance_distance`` (up to 1024; its answers are checked too) and networkx ``resistance_distance``
(256 only). Each measurement runs in a fresh process (peak memory = high-water RSS of the computation, from
/proc/self/status after resetting it); times are the median of --runs. Errors are the max relative error
against numpy.linalg.pinv in float64 (or against our float64 result where pinv is too slow to run).

The flop floor of the method is 3 m n^2 + 2/3 n^3 (SYRK + POTRF + TRTRI + 2 TRSM, n the smaller side) at the
dgemm/sgemm rate measured here.

Targets (2-core machine): >= 30x faster than pinv at 2048x2048 with max rel error < 1e-10 (float64);
4096x11008 in < 12 s (float64) and < 7 s (float32); within 1.5x of the flop floor.

    .venv/bin/python benchmarks/bench_resistance.py [--runs 5] [--sizes 256,1024,2048,4096,4096x11008]
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import timed_peak  # noqa: E402


def make_block(m, n, seed=0):
    return np.abs(np.random.default_rng(seed).standard_normal((m, n)))


def _compute(method, B):
    import torch

    from graphprune.resistance import bipartite_resistance, laplacian_from_biadjacency

    m, n = B.shape
    if method in ("graphprune-f64", "graphprune-f32"):
        dt = torch.float64 if method.endswith("64") else torch.float32
        return bipartite_resistance(torch.from_numpy(B), dtype=dt).numpy()
    if method == "numpy-pinv":
        Lp = np.linalg.pinv(laplacian_from_biadjacency(B))
        d = np.diag(Lp)
        return d[:m, None] + d[None, m:] - 2 * Lp[:m, m:]
    if method == "pygsp":
        import scipy.sparse as sp
        from pygsp.utils import resistance_distance

        rd = resistance_distance(sp.csc_matrix(laplacian_from_biadjacency(B)))
        return np.asarray(rd.tocsr()[:m, m:].todense())
    if method == "networkx":
        import networkx as nx

        G = nx.Graph()
        G.add_weighted_edges_from((i, m + j, B[i, j]) for i in range(m) for j in range(n))
        rd = nx.resistance_distance(G, weight="weight", invert_weight=False)
        return np.array([[rd[i][m + j] for j in range(n)] for i in range(m)])
    raise ValueError(method)


def _work(method, m, n, runs, out_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    _compute(method, make_block(8, 8))  # warm-up: load libraries and start BLAS threads outside the measurement
    B = make_block(m, n)
    t, peak, R = timed_peak(lambda: _compute(method, B), runs)
    np.save(out_path, np.asarray(R, dtype=np.float64))
    return t, peak


def measure(method, m, n, runs):
    ctx = mp.get_context("spawn")
    fd, path = tempfile.mkstemp(suffix=".npy")
    os.close(fd)
    with ctx.Pool(1) as pool:
        t, peak = pool.apply(_work, (method, m, n, runs, path))
    R = np.load(path)
    os.remove(path)
    return t, peak, R


def gemm_rate(dtype, n=2048, runs=5):
    from scipy.linalg import blas

    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n)).astype(dtype))
    f = blas.dgemm if dtype == np.float64 else blas.sgemm
    f(1.0, a, a)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f(1.0, a, a)
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="256,1024,2048,4096,4096x11008")
    args = ap.parse_args()
    sizes = []
    for s in args.sizes.split(","):
        a, _, b = s.partition("x")
        sizes.append((int(a), int(b or a)))
    rates = {np.float64: gemm_rate(np.float64), np.float32: gemm_rate(np.float32)}
    print(f"{os.cpu_count()} cores; dgemm {rates[np.float64] / 1e9:.1f} GFLOP/s, sgemm "
          f"{rates[np.float32] / 1e9:.1f} GFLOP/s; median of {args.runs} runs")
    hdr = (f"{'block':>11} {'method':<15} {'time s':>9} {'peak MiB':>9} {'max rel err':>12} {'vs ours f64':>11} "
           f"{'floor s':>8} {'/floor':>6}")
    print(hdr)
    print("-" * len(hdr))
    for m, n in sizes:
        label = f"{m}x{n}"
        small = min(m, n)
        large = max(m, n)
        methods = ["graphprune-f64", "graphprune-f32"]
        if large <= 2048:
            methods.append("numpy-pinv")
        if large <= 1024:
            methods.append("pygsp")
        if large <= 256:
            methods.append("networkx")
        res = {}
        for meth in methods:
            runs = args.runs if meth.startswith("graphprune") or large <= 1024 else max(1, min(args.runs, 3))
            res[meth] = (*measure(meth, m, n, runs), runs)
        ref = res["numpy-pinv"][2] if "numpy-pinv" in res else res["graphprune-f64"][2]
        ref_name = "pinv" if "numpy-pinv" in res else "ours-f64"
        ours = res["graphprune-f64"][0]
        for meth in methods:
            t, peak, R, runs = res[meth]
            err = np.nanmax(np.abs(R - ref) / np.abs(ref)) if meth != "graphprune-f64" or ref_name == "pinv" else 0.0
            floor = ""
            ratio = ""
            if meth.startswith("graphprune"):
                flops = 3 * large * small**2 + 2 / 3 * small**3
                fl = flops / rates[np.float64 if meth.endswith("64") else np.float32]
                floor, ratio = f"{fl:8.2f}", f"{t / fl:6.2f}"
            note = "" if runs == args.runs else f" (median of {runs})"
            errs = f"{err:12.2e}" if not (meth == "graphprune-f64" and ref_name != "pinv") else f"{'(reference)':>12}"
            print(f"{label:>11} {meth:<15} {t:9.3f} {peak:9.0f} {errs} {t / ours:10.1f}x {floor:>8} {ratio:>6}{note}")
        del res
    print("max rel err: against numpy.linalg.pinv where it ran, else against graphprune float64. "
          "'vs ours f64' = time / graphprune float64 time (e.g. 40x = the peer is 40 times slower).")


if __name__ == "__main__":
    main()
