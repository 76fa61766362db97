"""Export time of torchvision resnet18 and a GPT-2-small-sized transformer (targets: < 2 s and < 10 s).

Prints a table: median of N runs, min, the forward pass of the same model measured in the same run, and the
ratio export / forward (the exporter traces and runs one forward for shapes).

    .venv/bin/python benchmarks/bench_export.py [--runs 5]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _models import GPT2Sized  # noqa: E402

import graphprune  # noqa: E402


def timed(fn, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    import torchvision

    cases = [
        ("resnet18", torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), 2.0),
        ("gpt2-small-sized", GPT2Sized(), torch.randint(0, 50257, (1, 64)), 10.0),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs}")
    print(f"{'model':<18} {'weights':>12} {'edges':>12} {'export s':>9} {'min s':>7} {'forward s':>9} "
          f"{'ratio':>6} {'target s':>8} {'ok':>3}")
    for name, model, x, target in cases:
        model.eval()
        med, mn, G = timed(lambda model=model, x=x: graphprune.from_model(model, x), args.runs)
        with torch.no_grad():
            fwd, _, _ = timed(lambda model=model, x=x: model(x), args.runs)
        nw = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2)
        print(f"{name:<18} {nw:>12,} {G.num_weight_edges:>12,} {med:>9.3f} {mn:>7.3f} {fwd:>9.3f} "
              f"{med / fwd:>6.1f} {target:>8.1f} {'yes' if med < target else 'NO':>3}")


if __name__ == "__main__":
    main()
