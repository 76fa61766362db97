"""Analysers: plain functions ``metric(G, *, masks=None, ...)``, one module per family, and the report.

Modules, in the order data flows through them (each imports only those before it):

- :mod:`.reasons` (structured reasons), :mod:`.glossary` (what every figure means);
- :mod:`.local` (degrees, sinks, sources), :mod:`.traversal` (the forward and backward sweeps over the blocks),
  :mod:`.global_` (effective mask, paths, components, collapse), :mod:`.spectral` (Laplacian spectra);
- :mod:`.partition_graph` (the layered picture as data, ``layer_label``);
- :mod:`.render` (HTML, markdown, figures, the network picture: reads a report, never imports it);
- :mod:`.report` (``report``, ``compare``: builds the data, hands it to :mod:`.render` for pages).
"""

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
from .partition_graph import layer_label
from .reasons import Reason
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
           "algebraic_connectivity", "block_spectrum_metrics", "layer_label", "Reason"]
