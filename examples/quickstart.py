"""Quickstart: export a small CNN to a multipartite graph, prune it, write the masks back, print a summary.

Run with ``make demo`` (or ``.venv/bin/python examples/quickstart.py``).
"""

import torch
from torch import nn

import graphprune


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def main():
    torch.manual_seed(0)
    model = small_cnn().eval()
    x = torch.randn(4, 1, 28, 28)

    G = graphprune.from_model(model, x)              # model -> explicit multipartite graph
    print(G.summary(), "\n")

    methods = [m for m in ("spectral", "random", "magnitude") if m in graphprune.available_sparsifiers()]
    for method in methods:
        masks = graphprune.sparsify(G, method, sparsity=0.9, seed=0)   # graph -> masks
        H = G.with_masks(masks)
        degrees = H.degrees("in", include_identity=False)
        fc_in = degrees[H.node_offset("9"): H.node_offset("9") + 64]
        print(f"{method:>10}: density {H.density():.4f}, kept edges {H.num_edges}, "
              f"fc1 neurons with no input: {(fc_in == 0).sum()}")

    masks = graphprune.sparsify(G, methods[0], sparsity=0.9, seed=0)
    graphprune.apply_masks(model, G, masks)          # masks -> model (torch.nn.utils.prune)
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    print(f"\nwrote '{methods[0]}' masks into the model: {zeros}/{total} weights are zero "
          f"({zeros / total:.1%}); output shape {tuple(model(x).shape)}")
    H = G.to_networkx()
    print(f"networkx view: {H.number_of_nodes()} nodes, {H.number_of_edges()} edges (dense graph)")


if __name__ == "__main__":
    main()
