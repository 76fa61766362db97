"""Cost of computing each study method's masks (seconds, median of runs) on the MNIST-1D MLP and CNN.

    python benchmarks/bench_study_masks.py [--runs 3] [--compression 100]

One torch and one BLAS thread (as in the study's workers); ratios against iterative SynFlow measured in the same
run. The masks are computed on freshly initialised models, as in the study's init arm.
"""

import argparse
import statistics
import time

import graphprune
from graphprune._executor import limited_threads
from graphprune.experiments import METHODS, build_model, synthetic

ORDER = ["random", "magnitude", "snip", "grasp", "synflow", "synflow-iter", "spectral-paper", "spectral-erk",
         "spectral-graph", "spectral", "spectral-iter"]


def masks_seconds(model_name, method, density, runs):
    ds = synthetic(num_samples=512, num_features=40, num_classes=10, seed=0)
    times = []
    for r in range(runs):
        model = build_model(model_name, seed=r)
        G = graphprune.from_model(model, ds.x_train[:2])
        name, opts = METHODS[method]
        opts = dict(opts)
        if name in ("snip", "grasp", "synflow"):
            opts.update(model=model, data=ds.loader("train", batch_size=128, seed=r))
            if name == "synflow":
                opts["input_shape"] = (40,)
        sp = graphprune.get_sparsifier(name)(density=density, seed=r, **opts)
        t = time.perf_counter()
        sp.sparsify(G)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compression", type=float, default=100.0)
    p.add_argument("--models", default="mlp,cnn")
    args = p.parse_args()
    with limited_threads(1):
        for model_name in args.models.split(","):
            res = {m: masks_seconds(model_name, m, 1 / args.compression, args.runs) for m in ORDER}
            ref = res["synflow-iter"]
            print(f"\n{model_name} at {args.compression:g}x, median of {args.runs} (1 thread)")
            print(f"{'method':16s} {'masks s':>9s} {'/ synflow-iter':>15s}")
            for m in ORDER:
                print(f"{m:16s} {res[m]:9.3f} {res[m] / ref:15.3f}")


if __name__ == "__main__":
    main()
