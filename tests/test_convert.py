import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import needs_graph_tool
from models import build

import graphprune


@pytest.fixture(scope="module")
def masked():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    return G.with_masks(graphprune.sparsify(G, "random", sparsity=0.97, seed=0))


def _dense(src, dst, w, n):
    A = np.zeros((n, n))
    np.add.at(A, (src, dst), w)
    return A


def test_networkx_counts_weights_and_layout(masked):
    H = masked.to_networkx()
    assert isinstance(H, nx.MultiDiGraph)
    assert H.number_of_nodes() == masked.num_nodes
    assert H.number_of_edges() == masked.num_edges  # parallel conv edges kept
    A = nx.to_scipy_sparse_array(H, nodelist=range(masked.num_nodes), weight="weight").toarray()
    assert np.allclose(A, masked.to_scipy().toarray())
    assert {d["subset"] for _, d in H.nodes(data=True)} == set(range(len(masked.partitions)))
    pos = nx.multipartite_layout(H)
    assert len(pos) == masked.num_nodes
    # every weight edge points at the parameter element it stands for
    for _, _, d in list(H.edges(data=True))[:200]:
        if d["param"] is not None:
            p = masked.blocks_of(d["param"])[0].weight.reshape(-1)
            assert d["weight"] == pytest.approx(abs(float(p[d["param_index"]])))


def test_networkx_simple_digraph_sums_parallel_edges(masked):
    H = masked.to_networkx(multigraph=False)
    assert H.number_of_edges() == masked.to_scipy().nnz


def test_pyg_data_and_hetero(masked):
    pytest.importorskip("torch_geometric")
    data = masked.to_pyg()
    assert data.num_nodes == masked.num_nodes and data.edge_index.shape == (2, masked.num_edges)
    ei = data.edge_index.numpy()
    A = _dense(ei[0], ei[1], data.edge_weight.numpy(), masked.num_nodes)
    assert np.allclose(A, masked.to_scipy().toarray())
    het = masked.to_pyg(hetero=True)
    assert sum(het[t].num_nodes for t in het.node_types) == masked.num_nodes
    assert sum(het[t].edge_index.shape[1] for t in het.edge_types) == masked.num_edges
    t = ("input", "stem", "stem")
    assert het[t].edge_index.shape[1] == int(masked.block_mask("stem").sum())


@needs_graph_tool
def test_graph_tool_agrees_with_networkx(masked):
    from graph_tool import topology

    g = masked.to_graph_tool()
    H = masked.to_networkx()
    assert g.num_vertices() == H.number_of_nodes() and g.num_edges() == H.number_of_edges()
    # weakly connected components: same partition of nodes
    comp, _ = topology.label_components(g, directed=False)
    labels = np.asarray(comp.a)
    nx_comps = list(nx.weakly_connected_components(H))
    assert len(set(labels.tolist())) == len(nx_comps)
    for c in nx_comps:
        assert len({labels[v] for v in c}) == 1
    # degrees (parallel edges counted) and weights
    assert np.array_equal(g.get_out_degrees(g.get_vertices()), [H.out_degree(v) for v in range(g.num_vertices())])
    assert np.array_equal(g.get_in_degrees(g.get_vertices()), [H.in_degree(v) for v in range(g.num_vertices())])
    e = g.get_edges([g.edge_properties["weight"]])
    A = _dense(e[:, 0].astype(int), e[:, 1].astype(int), e[:, 2], masked.num_nodes)
    assert np.allclose(A, masked.to_scipy().toarray())


def test_scipy_and_frames_round_trip(masked):
    A = masked.to_scipy()
    assert sp.issparse(A) and A.shape == (masked.num_nodes,) * 2
    U = masked.to_scipy(directed=False)
    assert (abs(U - U.T)).max() == 0
    df = masked.edges_frame()
    assert len(df) == masked.num_edges
    assert np.allclose(_dense(df.src.to_numpy(), df.dst.to_numpy(), df.weight.to_numpy(), masked.num_nodes),
                       A.toarray())
    kept = df[df.param == "fc.weight"]
    assert len(kept) == int(masked.param_mask("fc.weight").sum())
    nodes = masked.nodes_frame()
    assert len(nodes) == masked.num_nodes
    assert nodes.groupby("partition", sort=False).size().tolist() == [p.size for p in masked.partitions]
    assert (nodes.out_degree.to_numpy() == df.groupby("src").size().reindex(range(masked.num_nodes),
                                                                            fill_value=0).to_numpy()).all()


def test_missing_backend_message(monkeypatch):
    import sys

    from graphprune.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "graph_tool", None)  # makes the import fail like a missing package
    G = graphprune.from_model(torch.nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(MissingDependencyError, match="apt-get install python3-graph-tool"):
        G.to_graph_tool()
