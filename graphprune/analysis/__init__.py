"""Analysers: plain functions ``metric(G, *, masks=None, ...)``, one module per family, and the report."""

from .global_ import (
    articulation_points,
    bridges,
    components,
    count_paths,
    effective_mask,
    effective_sparsity,
    layer_collapse,
    reachability,
)
from .local import degree_table, node_status, removable_edges
from .report import Comparison, ConnectivityReport, compare, report
from .spectral import (
    algebraic_connectivity,
    block_spectral_similarity,
    block_spectrum_metrics,
    spectral_similarity,
)

__all__ = ["report", "compare", "ConnectivityReport", "Comparison", "node_status", "degree_table", "removable_edges",
           "reachability", "effective_mask", "effective_sparsity", "layer_collapse", "count_paths", "components",
           "articulation_points", "bridges", "spectral_similarity", "block_spectral_similarity",
           "algebraic_connectivity", "block_spectrum_metrics"]
