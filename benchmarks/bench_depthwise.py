"""The default ``"spectral"`` on depthwise and grouped convolutions against plain ones: cost per weight.

torchvision models with random init (nothing downloaded), exported once at 1x3x224x224, then
``graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0)`` timed (median of ``--runs``). Columns: prunable
weights, weight blocks, connected components of the blocks' bipartite graphs in the channel view (a depthwise
convolution has one per channel), time, microseconds per weight and that cost's ratio to resnet18's in the same
run. Target (issue 22): every model within 2x of resnet18's cost per weight.

    .venv/bin/python benchmarks/bench_depthwise.py [--runs 3] [--only resnet18,efficientnet_b0] [--profile]

``--profile`` prints, per model, the seconds spent in the exact engine, in the edge cover and elsewhere (one
extra run, instrumented).
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import graphprune  # noqa: E402

MODELS = ("resnet18", "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "mobilenet_v3_small",
          "mobilenet_v3_large")


def build(name):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    return graphprune.from_model(model, torch.randn(1, 3, 224, 224))


def run(G):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0)


def components(G):
    """Connected components of every weight block's channel-view bipartite graph (one per group of a
    convolution; a dense block is one)."""
    return sum(int(b.groups or 1) for b in G.weight_blocks)


class Split:
    """Seconds inside the exact engine and the edge cover during one run (wrapping the module functions)."""

    def __init__(self):
        import importlib

        res = importlib.import_module("graphprune.resistance")
        width = importlib.import_module("graphprune.sparsify.spectral.width")  # graphprune.sparsify is also a function
        self.targets = [(res, "bipartite_resistance"), (width, "edge_cover")]
        self.seconds = {name: 0.0 for _, name in self.targets}
        self.saved = []

    def __enter__(self):
        for mod, name in self.targets:
            inner = getattr(mod, name)

            def timed(*a, _inner=inner, _name=name, **k):
                t = time.perf_counter()
                try:
                    return _inner(*a, **k)
                finally:
                    self.seconds[_name] += time.perf_counter() - t

            self.saved.append((mod, name, inner))
            setattr(mod, name, timed)
        return self

    def __exit__(self, *exc):
        for mod, name, inner in self.saved:
            setattr(mod, name, inner)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated model names (resnet18 is always run first)")
    ap.add_argument("--profile", action="store_true", help="one extra instrumented run per model")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = [n for n in MODELS if not args.only or n in args.only.split(",") or n == "resnet18"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), sparsify(G, 'spectral', sparsity=0.9, "
          f"seed=0), median of {args.runs}")
    head = f"{'model':<20} {'weights':>11} {'blocks':>6} {'components':>10} {'time s':>8} {'us/weight':>10} " \
           f"{'vs resnet18':>11}"
    if args.profile:
        head += f" {'engine s':>9} {'cover s':>8} {'other s':>8}"
    print(head)
    base = None
    for name in names:
        G = build(name)
        weights = sum(b.num_edges for b in G.weight_blocks)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            run(G)
            times.append(time.perf_counter() - t)
        dt = statistics.median(times)
        per = dt / weights * 1e6
        base = per if base is None else base
        ratio = per / base
        line = (f"{name:<20} {weights:>11,} {len(G.weight_blocks):>6} {components(G):>10,} {dt:>8.2f} "
                f"{per:>10.3f} {ratio:>10.2f}x")
        if args.profile:
            with Split() as split:
                t = time.perf_counter()
                run(G)
                total = time.perf_counter() - t
            eng, cov = split.seconds["bipartite_resistance"], split.seconds["edge_cover"]
            line += f" {eng:>9.2f} {cov:>8.2f} {total - eng - cov:>8.2f}"
        print(line + ("" if name == "resnet18" else ("  ok <=2x" if ratio <= 2 else "  MISS >2x")), flush=True)


if __name__ == "__main__":
    main()
