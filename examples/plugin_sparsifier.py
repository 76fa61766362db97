"""A third-party sparsifier in a few lines, written against graphprune's plug-in API.

``NeuronBalancedMagnitude`` keeps, for every output neuron (row of the weight), its largest ``|w|``: each neuron
keeps the same share of its inputs, so no neuron is cut off. It implements one method, ``compute_mask``; the base
class handles argument checks, density allocation, existing masks and seeding.

To ship it as a plug-in, declare an entry point in your package's pyproject.toml::

    [project.entry-points."graphprune.sparsifiers"]
    neuron-magnitude = "plugin_sparsifier:NeuronBalancedMagnitude"

and it becomes available as ``graphprune.sparsify(G, "neuron-magnitude", sparsity=0.9)``. Check it with
``graphprune.check_sparsifier(NeuronBalancedMagnitude)``.
"""

import numpy as np
import torch

from graphprune.sparsify import BlockContext, Sparsifier


class NeuronBalancedMagnitude(Sparsifier):
    name = "neuron-magnitude"

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        _, dst = ctx.block.edge_index()                    # output node of every edge, parameter order
        score = ctx.weight.abs().reshape(-1).numpy().copy()
        score[~ctx.available.reshape(-1).numpy()] = -np.inf
        n_out = ctx.block.n_dst
        per_row = np.full(n_out, k // n_out) + (np.arange(n_out) < k % n_out)   # quotas summing to k
        # rank edges within their output node by |w| (descending), keep the first per_row[node]
        order = np.lexsort((-score, dst))
        rank = np.empty_like(order)
        starts = np.searchsorted(dst[order], dst[order])
        rank[order] = np.arange(order.size) - starts
        keep = (rank < per_row[dst]) & np.isfinite(score)
        if keep.sum() < k:  # rows with too few available edges: top up globally by |w|
            extra = np.argsort(-np.where(keep, -np.inf, score), kind="stable")[: k - keep.sum()]
            keep[extra] = True
        return torch.from_numpy(keep).reshape(ctx.available.shape)


if __name__ == "__main__":
    import graphprune

    graphprune.check_sparsifier(NeuronBalancedMagnitude)
    net = torch.nn.Sequential(torch.nn.Linear(20, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))
    G = graphprune.from_model(net, torch.randn(1, 20))
    masks = graphprune.sparsify(G, NeuronBalancedMagnitude, sparsity=0.8, seed=0)
    print({k: m.sum(1).tolist() for k, m in masks.items()})
