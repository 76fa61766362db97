"""Structured pruning: remove whole channels of resnet18 by node leverage and get a smaller, faster model.

The graph's coupled groups (:func:`graphprune.node_groups`) say which channels go together (a residual add ties
every block that writes into it); :func:`graphprune.select_nodes` removes the groups of lowest leverage in each
layer; :func:`graphprune.shrink` rebuilds the convolutions, batch norms and the classifier smaller, and checks the
result on the example inputs. Nothing is downloaded (random initialisation).

    .venv/bin/python examples/structured_pruning.py
"""

import copy
import statistics
import time

import torch
import torchvision

import graphprune


def median_ms(model, x, runs=3):
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    dense = copy.deepcopy(model)

    G = graphprune.from_model(model, x)
    groups = graphprune.node_groups(G)
    kinds = {}
    for g in groups:
        if g.prunable:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
    print(f"{len(groups)} groups, prunable: {kinds}")

    keep = graphprune.select_nodes(G, 0.3, criterion="leverage", groups=groups)  # 30% of every layer's groups
    graphprune.shrink(model, G, keep, example_inputs=x)

    params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (dense, model)]
    print(f"parameters: {params[0]:.2f} M -> {params[1]:.2f} M")
    print(f"layer1.0.conv1: {dense.layer1[0].conv1} -> {model.layer1[0].conv1}")
    print(f"batch-1 latency: {median_ms(dense, x):.1f} ms -> {median_ms(model, x):.1f} ms (this machine, now)")


if __name__ == "__main__":
    main()
