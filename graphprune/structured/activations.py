"""Data-aware node scores: every criterion on the graph whose edge weights are Wanda's scores.

With calibration data, the weight of edge ``(i, j)`` of a block becomes ``|w_ij| * ||X_j||_2``: the weight times
the norm of the input column it multiplies over the calibration data (Wanda's per-weight score; Sun et al., ICLR
2024, doi:10.48550/arXiv.2306.11695). Any node criterion then runs on that graph unchanged:

- ``"l2"`` on it scores a hidden neuron ``j`` by ``sum_i w_ij^2 ||X_j||^2`` over its outgoing weights (plus its
  incoming row, scaled by its inputs' norms): the squared output error of removing it when the input's Gram matrix
  is taken diagonal, the structured form of the optimal-brain-damage saliency (LeCun et al., NIPS 1989) that
  activation-aware structured pruners of LLMs build on (An et al., "Fluctuation-based Adaptive Structured Pruning
  for Large Language Models", AAAI 2024, doi:10.1609/aaai.v38i10.28960);
- ``"leverage"`` on it is the node leverage of the activation-weighted graph: the effective resistances of the
  edges as the data sees them.

The statistics are those of the dense model (one forward pass per stage of :mod:`graphprune.calibrate`, nothing
written into the model): structured selection removes all its groups at once. A block whose input cannot be
gathered (a grouped convolution, a module the hooks do not see) keeps ``|w|`` and is named in a warning.
"""

from __future__ import annotations

import dataclasses
import warnings

from ..calibrate import StageRunner, check_batches, check_model, column_scale, from_matrix, stages, to_matrix
from ..errors import GraphPruneError
from ..graph import MultipartiteGraph

__all__ = ["activation_graph"]


def activation_graph(G: MultipartiteGraph, model, calibration, *, owner: str = "node_scores") -> MultipartiteGraph:
    """``G`` with every weight block's edge weights replaced by ``|w_ij| * ||X_j||_2`` (see the module docstring).

    Parameters
    ----------
    G : MultipartiteGraph
        Exported from ``model``.
    model : torch.nn.Module
        The model ``G`` was exported from; run in eval mode under ``torch.no_grad`` and left unchanged.
    calibration : tensor, dict of tensors or iterable of batches
        Model inputs (as :func:`graphprune.prune` takes them).
    owner : str
        The caller's name, for error messages.

    Returns
    -------
    MultipartiteGraph
        A new graph with the same partitions, blocks and masks; weight blocks hold new float64 tensors (``G`` and
        the model are not modified).

    Raises
    ------
    ParameterError
        ``model`` is not the one ``G`` was exported from, or the calibration data does not fit it.
    """
    check_model(model, G, owner=owner)
    batches = check_batches(calibration, owner=owner, param="calibration")
    units = [b for b in G.weight_blocks if b.layout != "conv_transpose"]
    runner = StageRunner(model, batches, owner=owner)
    runner.check(units)
    stats, left = {}, []
    for stage in stages(G, units):
        try:
            stats.update(runner.gather(stage, gram=False))
        except GraphPruneError:  # a stage the hooks cannot follow keeps |w|: its blocks are named below
            left.extend(b.name for b in stage)
    left.extend(b.name for b in G.weight_blocks if b.layout == "conv_transpose")
    if left:
        warnings.warn(f"{owner}: no calibration statistics for {len(left)} block(s) ({', '.join(left[:4])}"
                      f"{', ...' if len(left) > 4 else ''}); their edges keep the weight magnitude |w|.",
                      RuntimeWarning, stacklevel=3)
    blocks = []
    for b in G.blocks:
        if b.is_weight and b.name in stats:
            w = b.weight.detach().to("cpu").double()
            scaled = from_matrix(b, to_matrix(b, w).abs() * column_scale(b, stats[b.name].norms))
            b = dataclasses.replace(b, weight=scaled)  # a new Block: its grid (and edge cache) is its own
        blocks.append(b)
    H = MultipartiteGraph(G.partitions, blocks, masks=G.masks if G.is_masked else None,
                          param_shapes=G.param_shapes)
    H.left_out = dict(G.left_out)
    return H
