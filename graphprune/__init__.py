"""graphprune: treat a neural network as a multipartite graph and prune it with graph theory.

Data flows one way: model -> :func:`from_model` -> :class:`MultipartiteGraph` -> :func:`sparsify` -> masks ->
analysis / :func:`apply_masks` -> model.
"""

from __future__ import annotations

from . import errors
from ._version import __version__ as __version__  # the version lives in a leaf module
from .analysis import ConnectivityReport, compare, report, spectral_similarity
from .apply import apply_masks, load_masks, make_permanent, save_masks
from .checkpoint import prune_checkpoint
from .errors import GraphPruneError
from .export import from_model, register_adapter
from .graph import Block, MultipartiteGraph, Partition
from .graph_resistance import effective_resistance
from .masks import PackedMasks, load_masks_safetensors, mask_table, save_masks_safetensors
from .prune import prune
from .sparsify import Sparsifier, available_sparsifiers, check_sparsifier, get_sparsifier, register, sparsify
from .structured import node_groups, select_nodes, shrink

__all__ = [
    "from_model", "register_adapter", "MultipartiteGraph", "Partition", "Block", "sparsify", "Sparsifier",
    "register", "get_sparsifier", "available_sparsifiers", "apply_masks", "make_permanent", "save_masks",
    "load_masks", "GraphPruneError", "errors", "effective_resistance", "spectral_similarity", "check_sparsifier",
    "report", "compare", "ConnectivityReport",
    "prune", "prune_checkpoint", "PackedMasks", "save_masks_safetensors", "load_masks_safetensors", "mask_table",
    "node_groups", "select_nodes", "shrink",
]
