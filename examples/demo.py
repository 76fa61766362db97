"""``make demo``: the small study (MLP on MNIST-1D, 5 methods including spectral, 4 densities, 1 seed) and a
connectivity report of the spectral masks at 100x compression. Prints the accuracy table and the file paths."""

import os

import torch

import graphprune
from graphprune.experiments import Schedule, build_model, mnist1d, run_study


def main():
    out = run_study("mlp", "mnist1d", methods=["spectral", "random", "magnitude", "snip", "synflow-iter"],
                    compressions=[10, 31.6228, 100, 316.2278], seeds=[0], schedule=Schedule(epochs=40),
                    out_dir="data/results", jobs=2, tag="demo_mlp_mnist1d")
    print(open(out["markdown"]).read())
    ds = mnist1d()
    model = build_model("mlp", seed=0)
    G = graphprune.from_model(model, ds.x_train[:2])
    masks = graphprune.sparsify(G, "spectral", density=0.01, seed=0)
    rep = graphprune.report(G, masks)
    path = os.path.join("data", "results", "demo_report_spectral_100x.html")
    rep.to_html(path)
    print(rep)
    print(f"results: {out['csv']}")
    print(f"plot:    {out['plot']}")
    print(f"table:   {out['markdown']}")
    print(f"report:  {path}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
