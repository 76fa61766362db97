"""Per-block jobs on an executor: serial against 2 local processes against a local Ray cluster.

    python benchmarks/bench_distributed.py [--llama-layers 1] [--runs 1]

Models: the GPT-2-small Linear stack of bench_models.py (48 blocks of 768x2304 / 768x768 / 768x3072 / 3072x768)
and Llama-2-7B-sized decoder layers (7 blocks each: q, k, v, o 4096x4096, gate and up 11008x4096, down
4096x11008; embedding and head kept dense). For each: wall time of spectral masks (float32 resistances on the
Llama layers) serial, on a 2-process pool and on local Ray (2 CPUs), the efficiency against the 2-worker bound,
the per-block overhead (a job that only ships its block and returns its packed mask: random at density 1), and
the driver's peak RSS. This machine has 2 cores, so the speed-up is bounded by 2.
"""

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _measure import hwm_mb, rss_mb, rss_reset  # noqa: E402
from _models import Stack  # noqa: E402
from bench_llm import build as build_llama  # noqa: E402

import graphprune  # noqa: E402


def timed(fn, runs):
    times, peak = [], 0.0
    for _ in range(runs):
        base = rss_mb()
        rss_reset()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        peak = max(peak, hwm_mb() - base)
    return statistics.median(times), peak


def measure(label, G, method, opts, executors, runs, keep_dense=()):
    n = len([b for b in G.weight_blocks if not any(b.param == k for k in keep_dense)])
    rows = {}
    for name, ex in executors.items():
        def masks(ex=ex):
            return graphprune.sparsify(G, method, sparsity=0.5, seed=0, executor=ex, keep_dense=list(keep_dense),
                                       **opts)

        def ship(ex=ex):
            return graphprune.sparsify(G, "random", density=1.0, seed=0, executor=ex, keep_dense=list(keep_dense))

        t, peak = timed(masks, runs)
        t0, _ = timed(ship, runs)
        rows[name] = (t, peak, t0)
    serial = rows["serial"][0]
    print(f"\n{label}: {n} blocks, {method} masks at 50% sparsity, median of {runs}")
    print(f"{'executor':10s} {'wall s':>8s} {'speed-up':>9s} {'efficiency':>11s} {'no-op job ms/block':>19s} "
          f"{'driver peak MiB':>16s}")
    for name, (t, peak, t0) in rows.items():
        workers = 1 if name == "serial" else 2
        print(f"{name:10s} {t:8.2f} {serial / t:9.2f} {serial / t / workers:11.2f} {1000 * t0 / n:19.1f} "
              f"{peak:16.0f}")
    print("no-op job: ship the block's weight and mask, return its packed mask (random at density 1): the "
          "per-block transfer and scheduling cost")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--llama-layers", type=int, default=1)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    pool = cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    executors = {"serial": None, "2 procs": pool}
    if not args.no_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        executors["ray (2)"] = "ray"
    list(pool.map(abs, [1, 2]))  # workers started before timing
    torch.manual_seed(0)
    stack = Stack()
    G = graphprune.from_model(stack, torch.randn(1, 4, 768))
    measure("GPT-2-small Linear stack", G, "spectral", {"width": "all"}, executors, args.runs)
    llama = build_llama(args.llama_layers)
    G = graphprune.from_model(llama, torch.randint(0, 32000, (1, 8)))
    measure(f"Llama-2-7B-sized, {args.llama_layers} layer(s)", G, "spectral",
            {"dtype": torch.float32, "width": "all"}, executors,
            args.runs, keep_dense=("embed_tokens.weight", "lm_head.weight"))
    pool.shutdown()


if __name__ == "__main__":
    main()
