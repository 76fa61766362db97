"""Cheap effective-resistance approximations measured against the exact engine, in the same run.

1. Degree approximation R_ij ~ 1/d_i + 1/d_j on dense bipartite blocks with half-normal weights (and on the same
   blocks at 90% random sparsity, where it degrades).
2. Spielman-Srivastava JL projections (k = 24 log N / eps^2 rows, sparse LU solves) on whole multipartite graphs,
   against the exact dense engine.

Columns: time (median of --runs), median and max relative error over all edges, time ratio approx / exact.

    .venv/bin/python benchmarks/bench_approx.py [--runs 3]
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import timed_peak  # noqa: E402

import graphprune  # noqa: E402
from graphprune.resistance import bipartite_resistance, degree_resistance  # noqa: E402


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    e = np.abs(a[keep] - b[keep]) / np.abs(b[keep])
    return np.median(e), e.max()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"median of {args.runs} runs")
    print(f"{'case':<34} {'method':<8} {'time s':>8} {'med rel err':>12} {'max rel err':>12} {'t/exact':>8}")
    for m, n, dens in [(256, 256, 1.0), (1024, 1024, 1.0), (4096, 1024, 1.0), (1024, 1024, 0.1)]:
        B = np.abs(rng.standard_normal((m, n)))
        if dens < 1:
            B[rng.random((m, n)) > dens] = 0
        Bt = torch.from_numpy(B)
        te, _, Re = timed_peak(lambda Bt=Bt: bipartite_resistance(Bt), args.runs)
        td, _, Rd = timed_peak(lambda Bt=Bt: degree_resistance(Bt), args.runs)
        med, mx = rel_err(Rd, Re)
        label = f"block {m}x{n} density {dens:g}"
        print(f"{label:<34} {'exact':<8} {te:8.3f} {'':>12} {'':>12} {1:8.2f}")
        print(f"{label:<34} {'degree':<8} {td:8.3f} {med:12.2e} {mx:12.2e} {td / te:8.2f}")
    import torchvision

    torch.manual_seed(0)
    cases = [("mlp 784-300-100-10 @90%", torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(),
                                                              torch.nn.Linear(300, 100), torch.nn.ReLU(),
                                                              torch.nn.Linear(100, 10)), torch.randn(1, 784)),
             ("resnet18 channel graph @90%", torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))]
    for label, model, x in cases:
        G = graphprune.from_model(model, x)
        G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.9, seed=0))
        te, _, Re = timed_peak(lambda G=G: graphprune.effective_resistance(G, method="exact"), 1)
        flat_e = np.concatenate([Re[k].reshape(-1).numpy() for k in Re])
        for eps in (0.5, 0.3):
            tj, _, Rj = timed_peak(lambda G=G, eps=eps: graphprune.effective_resistance(G, method="jl", eps=eps),
                                   args.runs)
            flat_j = np.concatenate([Rj[k].reshape(-1).numpy() for k in Rj])
            med, mx = rel_err(flat_j, flat_e)
            print(f"{label + f' N={G.num_nodes}':<34} {f'jl {eps}':<8} {tj:8.3f} {med:12.2e} {mx:12.2e} "
                  f"{tj / te:8.2f}")
        print(f"{label + f' N={G.num_nodes}':<34} {'exact':<8} {te:8.3f} {'':>12} {'':>12} {1:8.2f}")


if __name__ == "__main__":
    main()
