"""Full connectivity report of torchvision resnet18 at 90% sparsity (target: under 60 s on the 2-core machine).

Times graphprune.report (local, global and spectral metrics) on spectral and random masks, median of --runs,
next to the export and the sparsification of the same model measured in the same run.

    .venv/bin/python benchmarks/bench_report.py [--runs 3]
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import timed_peak  # noqa: E402

import graphprune  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    x = torch.randn(1, 3, 224, 224)
    t_exp, _, G = timed_peak(lambda: graphprune.from_model(model, x), args.runs)
    print(f"resnet18, 90% sparsity, median of {args.runs}")
    print(f"{'step':<34} {'time s':>8} {'peak MiB':>9} {'target':>8}")
    print(f"{'export':<34} {t_exp:8.2f} {'':>9} {'':>8}")
    for method in ("spectral", "random"):
        t_sp, _, masks = timed_peak(lambda m=method: graphprune.sparsify(G, m, sparsity=0.9, seed=0), args.runs)
        t_rep, mem, rep = timed_peak(lambda masks=masks: graphprune.report(G, masks), args.runs)
        t_fast, _, _ = timed_peak(lambda masks=masks: graphprune.report(G, masks, spectral=False), args.runs)
        print(f"{method + ' masks':<34} {t_sp:8.2f} {'':>9} {'':>8}")
        print(f"{method + ' report (full)':<34} {t_rep:8.2f} {mem:9.0f} {'ok <60s' if t_rep < 60 else 'MISS':>8}")
        print(f"{method + ' report (no spectral)':<34} {t_fast:8.2f} {'':>9} {'':>8}")
        print(f"   summary: {rep}")


if __name__ == "__main__":
    main()
