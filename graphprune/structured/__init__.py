"""Structured pruning: remove whole neurons, channels and attention heads, and rebuild the layers smaller.

Data flows as elsewhere in graphprune: the graph (:func:`graphprune.from_model`) -> :func:`node_groups` (what must
go together) -> a node score and a selection (:func:`select_groups`) -> node masks -> :func:`shrink` (a smaller
model whose outputs equal the original's with the removed nodes masked).
"""

from .groups import GROUP_KINDS, NodeGroup, node_groups
from .select import (
    DEFAULT_KINDS,
    NODE_CRITERIA,
    SELECT_ALLOCATIONS,
    amount_for,
    kept_weights,
    node_scores,
    register_node_criterion,
    select_nodes,
)
from .shrink import HF_CONFIG_MODES, ShrinkError, node_masks_from_groups, removed_groups, shrink
from .summary import ShrinkSummary, count_macs, edge_masks, shrink_summary

__all__ = ["NodeGroup", "node_groups", "GROUP_KINDS", "shrink", "ShrinkError", "node_masks_from_groups",
           "removed_groups", "HF_CONFIG_MODES", "node_scores", "select_nodes", "register_node_criterion",
           "NODE_CRITERIA", "DEFAULT_KINDS", "SELECT_ALLOCATIONS", "kept_weights", "amount_for", "shrink_summary",
           "ShrinkSummary", "count_macs", "edge_masks"]
