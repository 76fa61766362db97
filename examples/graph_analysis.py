"""nx-style graph analysis of a network: export resnet18, prune it, and study it with networkx, PyG, graph-tool,
scipy and pandas.

    .venv/bin/python examples/graph_analysis.py
"""

import networkx as nx
import numpy as np
import scipy.sparse.csgraph as csgraph
import torch
import torchvision

import graphprune


def main():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    G = graphprune.from_model(model, torch.randn(1, 3, 64, 64))
    H = G.with_masks(graphprune.sparsify(G, "spectral", sparsity=0.99, seed=0))
    print(H)

    # pandas: per-layer statistics straight from the edge list
    edges = H.edges_frame()
    print(edges.groupby("block").weight.agg(["count", "mean"]).head())

    # scipy: weakly connected components of the pruned channel graph
    n, labels = csgraph.connected_components(H.to_scipy(), directed=False)
    print(f"scipy: {n} components; largest has {np.bincount(labels).max()} of {H.num_nodes} nodes")

    # networkx: one residual stage, laid out by layer (node attribute 'subset')
    nxg = H.to_networkx(multigraph=False)
    stage = [v for v, d in nxg.nodes(data=True) if d["partition"].startswith(("layer1", "conv1"))]
    sub = nxg.subgraph(stage)
    pos = nx.multipartite_layout(sub)
    print(f"networkx: layer1 subgraph {sub.number_of_nodes()} nodes, {sub.number_of_edges()} edges, "
          f"{len(pos)} positions; acyclic {nx.is_directed_acyclic_graph(sub)}, depth "
          f"{nx.dag_longest_path_length(sub, weight=None)} edges")

    # torch_geometric: heterogeneous view, one node type per layer
    data = H.to_pyg(hetero=True)
    print(f"PyG: {len(data.node_types)} node types, {len(data.edge_types)} edge types")

    # graph-tool (Debian's python3-graph-tool): PageRank on the weighted channel graph
    try:
        from graph_tool.centrality import pagerank

        g = H.to_graph_tool()
        pr = pagerank(g, weight=g.edge_properties["weight"])
        top = np.argsort(-pr.a)[:3]
        names = H.nodes_frame().set_index("node").loc[top, ["partition", "index"]]
        print("graph-tool: top PageRank channels\n", names)
    except graphprune.GraphPruneError as exc:  # graph-tool missing: the error says how to install it
        print(exc)

    # graphprune's own analysers
    rep = graphprune.report(H, spectral=False)
    print(rep)
    print(rep.frame[["block", "density", "effective_density", "warnings"]].tail())


if __name__ == "__main__":
    main()
