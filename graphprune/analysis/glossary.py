"""What every figure of a connectivity report means, and where it comes from.

One list for the HTML page (column tooltips and the glossary), the markdown and the JSON (``columns`` and
``summary_items``), so the three never disagree.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "block_columns", "summary_items", "REFERENCES"]

#: Version of the ``graphprune.report`` / ``graphprune.comparison`` JSON documents (bumped on incompatible changes).
SCHEMA_VERSION = 1

REFERENCES = {
    "vk": ("A. Vysogorets, J. Kempe. Connectivity Matters: Neural Network Pruning Through the Lens of Effective "
           "Sparsity. JMLR 24, 2023.", "https://arxiv.org/abs/2107.02306"),
    "synflow": ("H. Tanaka, D. Kunin, D. Yamins, S. Ganguli. Pruning neural networks without any data by "
                "iteratively conserving synaptic flow. NeurIPS 2020.", "https://doi.org/10.48550/arXiv.2006.05467"),
    "fiedler": ("M. Fiedler. Algebraic connectivity of graphs. Czechoslovak Math. J. 23(2), 1973.",
                "https://doi.org/10.21136/CMJ.1973.101168"),
    "ramanujan": ("D. Hoang, S. Liu, R. Marculescu, Z. Wang. Revisiting Pruning at Initialization through the "
                  "Lens of Ramanujan Graph. ICLR 2023; A. Lubotzky, R. Phillips, P. Sarnak. Ramanujan graphs. "
                  "Combinatorica 8, 1988.", "https://doi.org/10.1007/BF02126799"),
    "weighted": ("The weighted spectral gap of Hoang et al. (NeurIPS 2023), extending the Ramanujan view of "
                 "Hoang et al. (ICLR 2023) to the magnitudes |W|.", ""),
    "st": ("D. A. Spielman, S.-H. Teng. Spectral Sparsification of Graphs. SIAM J. Comput. 40(4), 2011.",
           "https://doi.org/10.1137/08074489X"),
    "tarjan": ("R. E. Tarjan. Depth-first search and linear graph algorithms. SIAM J. Comput. 1(2), 1972.",
               "https://doi.org/10.1137/0201010"),
    "gp": ("graphprune: counted on the multipartite graph (one node per neuron or channel, one edge per weight).",
           ""),
}


def _item(key, label, meaning, ref, fmt="num"):
    text, url = REFERENCES[ref]
    return dict(key=key, label=label, meaning=meaning, reference=text, url=url, format=fmt)


def block_columns() -> list[dict]:
    """The per-block table's columns in page order: ``key`` (frame column), ``label`` (header), ``meaning``
    (one sentence), ``reference``, ``url`` and ``format``."""
    return [
        _item("block", "block", "The weight's module path in the model, its layer type and shape "
              "(input → output channels, kernel).", "gp", "text"),
        _item("kept", "kept", "Weights kept by the masks, of all weights in the block.", "gp", "int"),
        _item("density", "density", "Fraction of the block's weights kept (1 = dense).", "gp", "pct"),
        _item("effective_density", "effective density", "Fraction of the block's weights that are kept and lie "
              "on some input-to-output path; the rest cannot affect the output.", "vk", "pct"),
        _item("dead_inputs", "dead in", "Source nodes (input neurons or channels) with no kept edge in this "
              "block.", "gp", "int"),
        _item("dead_outputs", "dead out", "Destination nodes with no kept incoming edge in this block: neurons "
              "that only pass their bias on.", "synflow", "int"),
        _item("algebraic_connectivity", "λ₂", "Algebraic connectivity: the second smallest eigenvalue of the "
              "block's weighted Laplacian; 0 when the kept block is disconnected, larger is better connected.",
              "fiedler"),
        _item("spectral_gap", "spectral gap", "σ₁ − σ₂ of the 0/1 biadjacency: how fast signal mixes through "
              "the block (expansion).", "ramanujan"),
        _item("ramanujan_gap", "Ramanujan gap", "√(d_out − 1) + √(d_in − 1) − σ₂ with the average degrees of "
              "both sides: positive means the block is as good an expander as a Ramanujan graph. Undefined "
              "when an average degree is below 3.", "ramanujan"),
        _item("weighted_spectral_gap", "weighted gap", "σ₁ − σ₂ of |W| restricted to the kept weights.",
              "weighted"),
        _item("kappa", "κ", "Relative condition number λmax/λmin of the kept block's Laplacian against the "
              "dense one's: 1 is a perfect spectral copy up to scale; ∞ when pruning disconnects the block.", "st"),
        _item("epsilon", "ε", "(κ − 1)/(κ + 1): the best-scaled sparse block is a (1 ± ε) spectral "
              "approximation of the dense block.", "st"),
        _item("warnings", "warnings", "Layer collapse (no effective edge), ineffective kept edges, dead "
              "neurons.", "vk", "text"),
    ]


def summary_items() -> list[dict]:
    """The summary figures at the top of a report, in page order (same keys as :func:`block_columns`)."""
    return [
        _item("density", "density", "Fraction of prunable weights kept.", "gp", "pct"),
        _item("effective_density", "effective density", "Fraction of weights kept and on an input-output path.",
              "vk", "pct"),
        _item("effective_sparsity", "effective sparsity", "1 − effective density: what pruning really removed, "
              "counting weights that were cut off.", "vk", "pct"),
        _item("log10_paths", "log₁₀ paths", "Number of input-to-output paths through kept weights (log10); −∞ "
              "when input and output are disconnected.", "vk", "num"),
        _item("log10_synflow", "log₁₀ SynFlow", "Sum over input-output paths of the product of |w| (the SynFlow "
              "objective, log10).", "synflow", "num"),
        _item("dead_neurons", "dead neurons", "Hidden neurons or channels on no input-output path.", "synflow",
              "int"),
        _item("layer_collapse", "layer collapse", "A whole layer (or the input-output flow) is cut by pruning: "
              "the network can no longer learn.", "synflow", "bool"),
        _item("components", "components", "Connected components of the kept graph (an isolated node counts as "
              "one).", "gp", "int"),
        _item("isolated", "isolated", "Nodes with no kept edge at all.", "gp", "int"),
        _item("sinks", "sinks", "Hidden nodes that receive but send nothing.", "gp", "int"),
        _item("sources", "sources", "Hidden nodes that send but receive nothing (their bias only).", "gp", "int"),
        _item("articulation_points", "cut vertices", "Nodes whose removal disconnects the kept graph (counted "
              "up to max_cut_edges).", "tarjan", "int"),
        _item("bridges", "bridges", "Single edges whose removal disconnects the kept graph.", "tarjan", "int"),
    ]
