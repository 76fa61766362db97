"""``make demo``: the small study (MLP on MNIST-1D, 6 methods including graphprune's default spectral method, an
effective width then spectral sampling, and the paper's plain per-layer spectral sampling; 4 densities, 1 seed), a
connectivity report of the default spectral masks at 100x compression and a page comparing the six methods' masks
at 100x. Prints the accuracy table and the file paths."""

import os

import torch

import graphprune
from graphprune.experiments import METHODS, Schedule, build_model, mnist1d, run_study

DEMO_METHODS = ["spectral", "spectral-paper", "random", "magnitude", "snip", "synflow-iter"]


def compare_page(path, compression=100.0, seed=0):
    """Write the page comparing the demo's methods at ``compression`` on the MLP (random init) and return its path."""
    ds = mnist1d()
    model = build_model("mlp", seed=seed)
    G = graphprune.from_model(model, ds.x_train[:2])
    cands = {}
    for method in DEMO_METHODS:
        name, opts = METHODS[method]
        opts = dict(opts)
        if name in ("snip", "grasp", "synflow"):
            opts.update(model=model, data=ds.loader("train", batch_size=128, seed=seed))
            if name == "synflow":
                opts["input_shape"] = (ds.num_features,)
        sparsifier = graphprune.get_sparsifier(name)(density=1.0 / compression, seed=seed, **opts)
        cands[method] = sparsifier.sparsify(G)
    graphprune.compare(cands, G).to_html(path)
    return path


def main():
    out = run_study("mlp", "mnist1d", methods=DEMO_METHODS,
                    compressions=[10, 31.6228, 100, 316.2278], seeds=[0], schedule=Schedule(epochs=40),
                    out_dir="data/results", jobs=2, tag="demo_mlp_mnist1d")
    with open(out["markdown"]) as f:
        print(f.read())
    ds = mnist1d()
    model = build_model("mlp", seed=0)
    G = graphprune.from_model(model, ds.x_train[:2])
    masks = graphprune.sparsify(G, "spectral", density=0.01, seed=0)
    rep = graphprune.report(G, masks)
    path = os.path.join("data", "results", "demo_report_spectral_100x.html")
    rep.to_html(path)
    print(rep)
    page = compare_page(os.path.join("data", "results", "demo_compare_100x.html"))
    print(f"results: {out['csv']}")
    print(f"plot:    {out['plot']}")
    print(f"table:   {out['markdown']}")
    print(f"report:  {path}")
    print(f"compare: {page}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
