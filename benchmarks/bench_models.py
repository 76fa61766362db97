"""Spectral sparsification at 90% sparsity of whole models: wall time, peak memory, ratio to torch's random pruning.

Models (random init, nothing downloaded): torchvision resnet18 and a GPT-2-small-sized Linear stack (12 blocks of
768->2304, 768->768, 768->3072, 3072->768). For each: export (graphprune.from_model), spectral masks
(graphprune.sparsify, the paper's per-layer variant width="all"), writing them back (graphprune.apply_masks),
and, on a fresh copy of the model in the same process, ``torch.nn.utils.prune.random_unstructured`` on every
weight as the peer. Median of --runs; peak memory
is the RSS growth during one run (model copies are made before the measured region). A last line times
``analysis.components`` on a graph with 1e5 components.

Targets: resnet18 < 15 s, the GPT-2 stack < 60 s; export + spectral + apply peak extra RSS <= 3x the weights'
bytes (issue 10).

    .venv/bin/python benchmarks/bench_models.py [--runs 5]
"""

import argparse
import copy
import os
import sys

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import timed_peak  # noqa: E402
from _models import Stack  # noqa: E402

import graphprune  # noqa: E402


def torch_random(m):
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            prune.random_unstructured(mod, "weight", amount=0.9)
    return m


def graphprune_spectral(m, x):
    G = graphprune.from_model(m, x)
    masks = graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0, width="all")
    graphprune.apply_masks(m, G, masks)
    return m


def fresh(model, runs):
    """Copies made outside the measured region, handed out one per run."""
    copies = [copy.deepcopy(model) for _ in range(runs)]
    return lambda: copies.pop()


def components_1e5():
    from graphprune.analysis import components

    emb = nn.Embedding(100_000, 4)
    G = graphprune.from_model(emb, torch.zeros(1, 3, dtype=torch.long))
    keep = torch.zeros(100_000, 4, dtype=torch.bool)
    keep[:50, 0] = True
    H = G.with_masks({"weight": keep})
    return lambda: components(H)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    import torchvision

    cases = [("resnet18", torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), 15.0),
             ("gpt2-small stack", Stack(), torch.randn(1, 16, 768), 60.0)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs}")
    print(f"{'model':<17} {'weights':>12} {'method':<33} {'time s':>8} {'peak MiB':>9} {'x weights':>9} "
          f"{'ratio':>7}  target")
    for name, model, x, target in cases:
        nw = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
        wbytes = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        take = fresh(model, args.runs)
        t_peer, mem_peer, _ = timed_peak(lambda take=take: torch_random(take()), args.runs)
        G = graphprune.from_model(model, x)
        t_exp, mem_exp, _ = timed_peak(lambda model=model, x=x: graphprune.from_model(model, x), args.runs)
        t_sp, mem_sp, _ = timed_peak(lambda G=G: graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0, width="all"),
                                     args.runs)
        take = fresh(model, args.runs)
        t_all, mem_all, _ = timed_peak(lambda x=x, take=take: graphprune_spectral(take(), x), args.runs)
        ok = t_all < target and mem_all <= 3 * wbytes
        rows = [("torch prune.random_unstructured", t_peer, mem_peer, ""),
                ("graphprune export", t_exp, mem_exp, ""),
                ("graphprune spectral masks", t_sp, mem_sp, ""),
                ("graphprune export+spectral+apply", t_all, mem_all,
                 f"{'ok' if ok else 'MISS'} <{target:.0f}s, <=3x weights")]
        for meth, t, mem, tgt in rows:
            print(f"{name:<17} {nw:>12,} {meth:<33} {t:8.2f} {mem:9.0f} {mem / wbytes:8.2f}x {t / t_peer:6.1f}x  {tgt}")
        print(f"{name:<17} weights {wbytes:.0f} MiB")
    t_cc, _, lab = timed_peak(components_1e5(), args.runs)
    print(f"components of a graph with {len(set(lab.tolist())):,} components: {t_cc:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
