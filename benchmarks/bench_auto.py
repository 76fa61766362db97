"""Whether an approximate resistance engine gives the default's masks at a fraction of the exact engine's time, on
LLM-shaped blocks (the measurement behind ``resistance="auto"``'s rule).

Each case is one dense bfloat16 block with random-normal weights (std 0.02, random init as in bench_llm.py) pruned
alone by ``graphprune.sparsify(G, "spectral", sparsity=s, seed=0, resistance=..., dtype=...)``. Columns: time
(one run), the median relative error of the block's resistances against exact float64, and the overlap of the kept
edges with exact float64's mask for the same seed (``|A & B| / |A|``; the keys share their random draws, so 1.0
means the same mask), and the total variation distance between the block's sampling distributions ``p_e ~ w_e R_e``
under the engine and under exact float64 (``TV``: 0 is the same distribution). The overlap understates agreement
under ``width="auto"``: its edge cover is taken first, and one edge of the cover that differs shifts the random draws
of every later candidate (the keys are drawn in position order over the candidates left), so two nearly equal
distributions can share only ~0.8-0.9 of their edges; the TV distance has no such coupling. Peers in the same run:
exact float64 with another seed (how much two exact masks differ by chance alone) and magnitude (how much a mask
that ignores resistances differs; its TV is that of ``p_e ~ w_e``).

The trained case (``--trained``, on by default): the committed byte-level Llama of the LM study
(``graphprune.experiments.lm``; decoder projections pruned, embedding and head dense as in the study), pruned by
``graphprune.prune(..., "spectral", permanent=True)`` with each engine: the overlap with exact float64's masks over
all pruned weights and the held-out perplexity per byte (dense, and magnitude as the peer), after the TV distances
of the degree approximation and of magnitude to exact's sampling distribution over the pruned blocks.

    .venv/bin/python benchmarks/bench_auto.py [--sizes 4096x4096,11008x4096] [--sparsities 0.5,0.9] [--no-trained]
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import graphprune  # noqa: E402


def block(m, n, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(n, m, bias=False)).to(torch.bfloat16)
    with torch.no_grad():
        net[0].weight.normal_(0.0, 0.02)
    return graphprune.from_model(net, torch.randn(1, n, dtype=torch.bfloat16))


def tv_distance(w, R, Re):
    """Total variation distance between the sampling distributions ``p_e ~ w_e R_e`` and ``w_e Re_e`` (one draw):
    ``0.5 sum |p - p_exact|``; the magnitude peer is ``R = 1``. Zero means the same distribution."""
    p, q = w * np.nan_to_num(R), w * np.nan_to_num(Re)  # NaN: no edge (a zero weight)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4096x4096,11008x4096", help="out x in, comma-separated")
    ap.add_argument("--sparsity", type=float, default=0.5, help="the trained case's sparsity")
    ap.add_argument("--sparsities", default="0.5", help="the blocks' sparsities, comma-separated")
    ap.add_argument("--no-trained", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one run per row")
    print(f"{'block':<12} {'sparsity':>8} {'engine':<22} {'time s':>8} {'t/exact64':>9} {'R med rel err':>13} "
          f"{'TV':>9} {'overlap':>8}")
    cases = [(size, float(s)) for size in args.sizes.split(",") if size for s in args.sparsities.split(",") if s]
    for size, sparsity in cases:
        m, n = (int(v) for v in size.split("x"))
        G = block(m, n)
        b = G.weight_blocks[0]
        flops = graphprune.resistance.exact_block_flops(m, n)
        auto = graphprune.resistance.choose_method(m, n)[0]
        rows = [("exact float64", dict(resistance="exact"), 0), ("exact float32", dict(resistance="exact",
                dtype=torch.float32), 0), ("degree float64", dict(resistance="degree"), 0),
                ("exact float64 seed 1", dict(resistance="exact"), 1)]
        print(f"{size:<12} {sparsity:8.3f} exact engine ~{flops / 1e9:.1f} GFLOP; resistance='auto' picks {auto}")
        ref_mask = ref_t = None
        Re = graphprune.effective_resistance(G, b, method="exact").numpy()
        w = b.weight.detach().abs().double().numpy()
        for label, opts, seed in rows:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                mask = graphprune.sparsify(G, "spectral", sparsity=sparsity, seed=seed, **opts)[b.param]
                dt = time.perf_counter() - t
            if ref_mask is None:
                ref_mask, ref_t = mask, dt
            err = tv = ""
            if seed == 0 and label != "exact float64":
                kw = dict(method=opts["resistance"], dtype=opts.get("dtype", torch.float64))
                R = graphprune.effective_resistance(G, b, **kw).double().numpy()
                err = f"{np.nanmedian(np.abs(R - Re) / Re):.2e}"
                tv = f"{tv_distance(w, R, Re):.2e}"
            overlap = int((mask & ref_mask).sum()) / int(ref_mask.sum())
            print(f"{size:<12} {sparsity:8.3f} {label:<22} {dt:8.2f} {dt / ref_t:9.2f} {err:>13} {tv:>9} "
                  f"{overlap:8.4f}", flush=True)
        t = time.perf_counter()
        mag = graphprune.sparsify(G, "magnitude", sparsity=sparsity, seed=0)[b.param]
        dt = time.perf_counter() - t
        overlap = int((mag & ref_mask).sum()) / int(ref_mask.sum())
        print(f"{size:<12} {sparsity:8.3f} {'magnitude (peer)':<22} {dt:8.2f} {dt / ref_t:9.2f} {'':>13} "
              f"{tv_distance(w, np.ones_like(w), Re):9.2e} {overlap:8.4f}", flush=True)

    if not args.no_trained:
        trained(args.sparsity)


def trained(sparsity):
    from graphprune.experiments.lm import perplexity, splits
    from graphprune.experiments.lm_study import KEEP_DENSE, load_model

    _, test = splits()
    ids = {"input_ids": test[:32].reshape(1, -1)}
    print(f"\ntrained byte-level Llama (LM study model), sparsity {sparsity}, decoder projections pruned")
    print(f"{'engine':<22} {'time s':>8} {'overlap':>8} {'perplexity':>11}")
    print(f"{'dense':<22} {'':>8} {'':>8} {perplexity(load_model(), test):11.4f}")
    G = graphprune.from_model(load_model(), ids)
    tvs, mags = [], []
    for b in G.weight_blocks:
        if b.param in KEEP_DENSE:
            continue
        w = b.weight.detach().abs().double().numpy()
        Re = graphprune.effective_resistance(G, b, method="exact").numpy()
        Rd = graphprune.effective_resistance(G, b, method="degree").numpy()
        tvs.append(tv_distance(w, Rd, Re))
        mags.append(tv_distance(w, np.ones_like(w), Re))
    print(f"TV distance to exact's sampling distribution over the {len(tvs)} pruned blocks: degree median "
          f"{np.median(tvs):.2e} (max {max(tvs):.2e}); magnitude median {np.median(mags):.2e} (min {min(mags):.2e})")
    rows = [("exact float64", "spectral", dict(resistance="exact")),
            ("exact float32", "spectral", dict(resistance="exact", dtype=torch.float32)),
            ("degree float64", "spectral", dict(resistance="degree")),
            ("exact float64 seed 1", "spectral", dict(resistance="exact")),
            ("magnitude (peer)", "magnitude", {})]
    ref = None
    for label, method, opts in rows:
        model = load_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            masks = graphprune.prune(model, ids, method, sparsity=sparsity, seed=1 if "seed 1" in label else 0,
                                     keep_dense=KEEP_DENSE, permanent=True, progress=False, **opts)
            dt = time.perf_counter() - t
        pruned = [k for k in masks if k not in KEEP_DENSE]
        ref = ref or {k: masks[k] for k in pruned}
        overlap = sum(int((masks[k] & ref[k]).sum()) for k in pruned) / sum(int(ref[k].sum()) for k in pruned)
        print(f"{label:<22} {dt:8.2f} {overlap:8.4f} {perplexity(model, test):11.4f}", flush=True)


if __name__ == "__main__":
    main()
